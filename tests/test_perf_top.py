"""sw/perf/top.py, the kernel's cycle model: its constants are the hardware's and its DMA
bursts follow the AXI rules (tests/test_sim_top.py checks its cycles against the RTL)."""

from hw.config import preset
from hw.top import accelerator
from hw.top.axi import MAX_BURST
from sw.compiler.isa import Command, Op
from sw.perf import top


def test_constants_are_the_hardware_ones():
    assert top.MAX_BURST == MAX_BURST
    assert top.PRODUCTS == accelerator._PRODUCTS + accelerator._MUL_LATENCY


def test_bursts_stop_at_16_beats_and_at_4k_pages():
    assert top.bursts(0, 40) == [16, 16, 8]
    assert top.bursts(4088, 20) == [2, 16, 2]  # 4088 + 8 bytes reaches the page end
    assert top.bursts(100, 0) == []
    # a consumer that is never busy takes one beat per cycle: the plain read
    assert top._consume(4088, 20, lambda i: 0) == top.read_cycles(4088, 20)
    assert top.read_cycles(0, 16) == 1 + top.READ_GAP + 16


def test_linear_cycles_grow_with_every_dimension():
    cfg = preset("tiny")

    def lin(**kw):
        args = {"a": 0, "a_stride": 64, "tokens": 8, "k": 64, "rows": 8, "n": 2, "m": 4,
                "w_off": 0, "rq_off": 4096, "out": 2048, "out_stride": 8, "out_bits": 8}
        return top.command_cycles(Command(Op.LINEAR, args | kw), cfg)

    base = lin()
    assert lin(tokens=9) > base and lin(rows=9) > base and lin(k=68) > base
    assert lin(n=1) < base < lin(n=4, m=4)


def test_busy_cycles_by_hand_and_never_above_the_kernel():
    """The units' busy time (the ceiling the bench reports) counted by hand on the tiny
    preset (R = C = M = P = 4), and no more than the kernel model's cycles for the same
    Program."""
    cfg = preset("tiny")
    cmds = [
        Command(Op.LOAD, {"dst": 0, "src": 0, "bytes": 100}),  # 25 words
        Command(Op.LINEAR, {"a": 0, "a_stride": 16, "tokens": 5, "k": 16, "rows": 8, "n": 2,
                            "m": 4, "w_off": 0, "rq_off": 4096, "out": 2048,
                            "out_stride": 8, "out_bits": 8}),  # 4 groups x 2, 2 x 2 tiles
        Command(Op.QK_SOFTMAX, {"q": 0, "k": 256, "stride": 8, "tokens": 6, "d": 8,
                                "mask": 512, "mult": 1 << 14, "shift": 10, "p": 1024,
                                "p_stride": 6}),  # 2 groups x 4 steps, 2 x 2 tiles
        Command(Op.PV, {"p": 1024, "p_stride": 6, "v": 256, "stride": 8, "tokens": 6, "d": 5,
                        "rq_off": 4096, "out": 3072, "out_stride": 5}),  # 2 x 4, 2 x 2 tiles
        Command(Op.ADD_LAYERNORM, {"a": 0, "b": 2048, "dst": 3072, "tokens": 3, "hidden": 10,
                                   "m_a": 1 << 10, "m_b": 1 << 10, "shift": 10, "a_bits": 8,
                                   "b_bits": 8, "in_bits": 16, "params_off": 0,
                                   "eps_int": 1, "sqrt_frac": 0}),  # 3 rows of 3 beats
        Command(Op.STORE, {"dst": 0, "src": 3072, "bytes": 30}),  # 8 words
        Command(Op.END, {}),
    ]
    busy = top.busy_cycles(cmds, cfg)
    assert busy == {"array": 32 + 32 + 32, "vector": 9, "io": 25 + 8, "total": 138}
    costs = top.command_costs(cmds, cfg)
    assert sum(costs[1:4]) > busy["array"] and costs[4] > busy["vector"]
    assert top.program_cycles(cmds, cfg) > busy["total"]
