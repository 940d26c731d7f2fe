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


def test_slower_device_memory_delays_each_burst_s_first_beat():
    """``gap``: each burst's first beat ``gap - 1`` cycles after its AR. A lone burst pays
    it whole; back-to-back bursts hide it behind the beats before, up to the reader's
    outstanding bursts (ARs 2 cycles apart); a config's mem_read_delay adds to READ_GAP."""
    gap = top.READ_GAP + 100
    assert top.read_cycles(0, 16, gap=gap) == top.read_cycles(0, 16) + 100
    # 4 bursts of 16: the 2nd to 4th ARs went out 2, 4, 6 cycles after the first, their
    # beats follow the first burst's back to back
    assert top.read_cycles(0, 64, gap=gap) == top.read_cycles(0, 64) + 100
    # the 5th burst's AR waits for the cycle after the 1st burst's last beat (4 outstanding),
    # then pays the whole latency again: 100 cycles later it is not hidden any more
    ar5 = 2 + (gap - 1) + 16
    assert top.read_cycles(0, 80, gap=gap) == ar5 + (gap - 1) + 16
    assert top.read_cycles(0, 80) == top.read_cycles(0, 64) + 16  # hidden at READ_GAP
    cfg = preset("u200")
    assert top.read_gap(cfg) == top.READ_GAP
    slow = cfg.replace(mem_read_delay=100)
    assert top.read_gap(slow) == gap
    assert top.header_cycles(slow) == top.HEADER + 100
    assert top.fetch_cycles(5, slow) == top.fetch_cycles(5, cfg) + 100


def test_linear_cycles_grow_with_every_dimension():
    cfg = preset("tiny")

    def lin(**kw):
        args = {"a": 0, "a_stride": 64, "tokens": 8, "k": 64, "rows": 8, "n": 2, "m": 4,
                "w_off": 0, "rq_off": 4096, "out": 2048, "out_stride": 8, "out_bits": 8}
        return top.command_cycles(Command(Op.LINEAR, args | kw), cfg)

    base = lin()
    assert lin(tokens=9) > base and lin(rows=9) > base and lin(k=68) > base
    assert lin(n=1) < base < lin(n=4, m=4)


def _program(k: int = 16) -> list[Command]:
    """LOAD, LINEAR (``k`` channels), QK_SOFTMAX, a PV of its probabilities, ADD_LAYERNORM,
    STORE, END on the tiny preset (R = C = M = P = 4)."""
    return [
        Command(Op.LOAD, {"dst": 0, "src": 0, "bytes": 100}),  # 25 words
        Command(Op.LINEAR, {"a": 0, "a_stride": k, "tokens": 5, "k": k, "rows": 8, "n": 2,
                            "m": 4, "w_off": 0, "rq_off": 4096, "out": 2048,
                            "out_stride": 8, "out_bits": 8}),  # k/4 groups x 2, 2 x 2 tiles
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


def test_busy_cycles_by_hand_and_never_above_the_kernel():
    """The units' busy time (the ceiling the bench reports) counted by hand on the tiny
    preset (R = C = M = P = 4), and no more than the kernel model's cycles for the same
    Program."""
    cfg = preset("tiny")
    cmds = _program()
    busy = top.busy_cycles(cmds, cfg)
    assert busy == {"array": 32 + 32 + 32, "vector": 9, "io": 25 + 8, "total": 138,
                    "array_by_op": {"LINEAR": 32, "QK_SOFTMAX": 32, "PV": 32}}
    costs = top.command_costs(cmds, cfg)
    assert sum(costs[1:4]) > busy["array"] and costs[4] > busy["vector"]
    assert top.program_cycles(cmds, cfg) > busy["total"]


def test_the_timeline_adds_up_and_names_what_each_command_waits_for():
    """``command_timeline`` (``nmaccel run --profile``): each command starts where the one
    before ended (the first after the header), the last ends at the Program's cycles, the
    units' shares are the by-hand counts above, and CHECK waits where the kernel's rules say:
    a PV for the softmax rows writing the probabilities it reads, and a QK_SOFTMAX for a
    LINEAR's results still going out (a QK_SOFTMAX never starts beside them), which with 16
    channels are out before it is fetched and with 64 are not (its last tile's 32 steps)."""
    cfg = preset("tiny")
    for k, qk_waits in ((16, False), (64, True)):
        cmds = _program(k)
        rows = top.command_timeline(cmds, cfg)
        assert [r["op"] for r in rows] == [c.op.name for c in cmds]
        assert [r["cycles"] for r in rows] == top.command_costs(cmds, cfg)
        assert rows[0]["start"] == top.header_cycles(cfg)
        assert all(b["start"] == a["start"] + a["cycles"] for a, b in zip(rows, rows[1:]))
        assert rows[-1]["start"] + rows[-1]["cycles"] == top.program_cycles(cmds, cfg)
        assert [(r["unit"], r["busy"]) for r in rows] == [
            ("io", 25), ("array", k // 4 * 2 * 4), ("array", 32), ("array", 32),
            ("vector", 9), ("io", 8), (None, 0)]
        waits = {r["op"]: r["waited_for"] for r in rows if r["wait"]}
        assert waits == {"PV": "softmax rows", **({"QK_SOFTMAX": "results"} if qk_waits
                                                  else {})}, rows
        for i, r in enumerate(rows[:-1]):  # (END: its fetch but the last cycle, no CHECK)
            assert top.fetch_cycles(i, cfg) + r["wait"] <= r["cycles"]


def test_a_pv_beside_the_softmax_rows_waits_only_for_the_scores():
    """A QK_SOFTMAX of 64 channels (64-step tiles: still running when the PV is fetched): a
    PV reading its probabilities waits for its softmax rows; a PV reading other bytes starts
    beside them once the QK_SOFTMAX's scores are all written, sooner."""
    cfg = preset("tiny")
    cmds = _program()
    qk, pv = cmds[2].args, cmds[3].args
    cmds[2] = Command(Op.QK_SOFTMAX, qk | {"d": 64, "stride": 64})
    waits = {}
    for p in (qk["p"], 1536):  # the rows' bytes, others
        cmds[3] = Command(Op.PV, pv | {"p": p})
        row = top.command_timeline(cmds, cfg)[3]
        waits[row["waited_for"]] = row["wait"]
    assert set(waits) == {"softmax rows", "scores"}
    assert 0 < waits["scores"] < waits["softmax rows"]


def test_busy_cycles_counts_the_drain_of_short_tiles():
    """A tile of fewer steps than the array's C columns still takes C cycles: its sums wait
    for the C output beats of the tile before (tiny: C = 4). Counted by hand, and no more
    than the kernel model's cycles."""
    cfg = preset("tiny")

    def linear(k: int, n: int) -> Command:  # 2 row blocks x 2 token blocks
        return Command(Op.LINEAR, {"a": 0, "a_stride": 16, "tokens": 5, "k": k, "rows": 8,
                                   "n": n, "m": 4, "w_off": 0, "rq_off": 4096, "out": 2048,
                                   "out_stride": 8, "out_bits": 8})

    short, long = linear(4, 2), linear(16, 2)  # 1 group x 2 = 2 steps; 4 x 2 = 8 steps
    end = Command(Op.END, {})
    assert top.busy_cycles([short, end], cfg)["array"] == 2 + 3 * 4
    assert top.busy_cycles([short, long, end], cfg)["array"] == 2 + 3 * 4 + 4 * 8
    assert top.busy_cycles([long, short, end], cfg)["array"] == 4 * 8 + 4 * 4
    # by opcode: each tile's share from the tile before's last output beat to its own (the
    # first tile's: its steps)
    qk = Command(Op.QK_SOFTMAX, {"q": 0, "k": 256, "stride": 8, "tokens": 6, "d": 4,
                                 "mask": 512, "mult": 1 << 14, "shift": 10, "p": 1024,
                                 "p_stride": 6})  # 1 group x 4 steps, 2 x 2 tiles
    by_op = top.busy_cycles([short, qk, long, end], cfg)["array_by_op"]
    assert by_op == {"LINEAR": 2 + 3 * 4 + 4 * 8, "QK_SOFTMAX": 4 * 4}
    assert sum(by_op.values()) == top.busy_cycles([short, qk, long, end], cfg)["array"]
    for cmds in ([short, end], [long, short, end]):
        assert sum(top.command_costs(cmds, cfg)) > top.busy_cycles(cmds, cfg)["total"]


def test_feed_steps_without_watermarks_is_the_back_to_back_formula():
    # the first step FEED_LATENCY cycles after the feeder's first, or at the capture
    assert top.feed_steps(10, 64, 4, 0) == (13, 76)
    assert top.feed_steps(10, 64, 4, 40) == (40, 103)
    # watermarks that are always met change nothing
    early = tuple(range(-100, -84))
    assert top.feed_steps(10, 64, 4, 40, early, early) == (40, 103)


def test_feed_steps_follow_the_watermarks_by_hand():
    """One beat per cycle through a 3-cycle feed: a beat read in cycle t (not before the
    cycle after its entry was written) is stepped in t + 3 at the earliest; the FIFOs hold
    4 beats, so a stall never costs more than the entry it waits for."""
    # activation group g written in cycle 100 + 8 g, 2 steps a group: the engine follows
    # the staging, the last group's 2 steps at 100 + 8 * 7 + 1 + 3 and the one after
    a_ready = tuple(100 + 8 * g for g in range(8))
    assert top.feed_steps(0, 16, 2, 0, a_ready, None) == (104, 160 + 1)
    # weight entry e (4 steps) written in cycle 50 + e: the first step at 54, then one a
    # cycle (entries come faster than 4 steps take them)
    w_ready = tuple(50 + e for e in range(4))
    assert top.feed_steps(0, 16, 2, 0, None, w_ready) == (54, 69)
    # both: the later of the two per step
    first, last = top.feed_steps(0, 16, 2, 0, a_ready, w_ready)
    assert (first, last) == (104, 161)


def test_wide_staging_lands_the_last_bank_in_entry_order():
    cycles, landed = top.wide_staging(8, 4, 10, 1, 2)
    assert cycles == top.wide_staging_cycles(8, 4, 10, 1, 2)
    assert len(landed) == 10 and list(landed) == sorted(set(landed))
    assert landed[-1] < cycles
    # two blocks: the first block's entries only, no later than with one block
    assert top.wide_staging(8, 4, 10, 2, 2)[1] == landed
