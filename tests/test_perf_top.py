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
