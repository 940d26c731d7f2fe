"""The Accelerator kernel (hw/top) on the RTL through cocotbext-axi, against the ref backend.

Every run compares the whole device memory after the run, the status and the stopping
command's index of the ``rtl`` backend with the ``ref`` backend's, on the same Program.
"""

import json

import numpy as np
import pytest

from hw.config import preset
from sw.compiler.isa import (
    RQ_RECORD,
    Command,
    Op,
    Program,
    Status,
    config_fingerprint,
    pack_requant,
)
from sw.driver.device import DeviceError, DeviceTimeout, open_device

pytestmark = pytest.mark.sim

# a small kernel: 16 KiB scratchpad, activation banks of 64 words (Icarus builds it fast)
CFG = preset("tiny").replace(spm_kib=16, max_k=256, act_buffer_depth=64)
SEED = 7
OUT = 512


def _program(cmds, config=CFG, count=None):
    data = bytearray(Program(tuple(cmds), config_fingerprint(config)).to_bytes())
    if count is not None:
        data[8:12] = count.to_bytes(4, "little")
    return bytes(data)


def _run(kind, program, inp, config=CFG, params=bytes(range(64)), out=OUT, banks=(),
         **kwargs):
    """Run on a fresh device (an ``out``-byte output buffer; ``banks``: the bytes of the
    weight banks params1, ...); returns (memory, status, command, output buffer, cycles or
    None when the device stopped with a fault)."""
    dev = open_device(kind, config, **kwargs)
    bufs = {k: dev.allocate(n, k) for k, n in (("program", len(program)),
                                               ("params", len(params)),
                                               ("input", len(inp)), ("output", out))}
    for name, data in zip(("params1", "params2", "params3"), banks, strict=False):
        bufs[name] = dev.allocate(len(data), name)
        dev.write(bufs[name], data)
    dev.write(bufs["program"], program)
    dev.write(bufs["params"], params)
    dev.write(bufs["input"], inp)
    dev.write(bufs["output"], b"\xa5" * out)
    try:
        res = dev.wait(dev.run(**bufs), timeout=60)
        status, command, cycles = res.status, res.command, res.cycles
    except DeviceTimeout:
        raise
    except DeviceError as e:
        status, command, cycles = e.status, e.command, None
    return bytes(dev.memory), status, command, bufs["output"], cycles


def _random_dma_program(rng, inp_size, config=CFG, longest=120):
    cmds = []
    for _ in range(6):
        n = int(rng.integers(1, longest))
        src = 4 * int(rng.integers(0, (inp_size - n) // 4 + 1))
        dst = 4 * int(rng.integers(0, (config.spm_bytes - n) // 4))
        cmds.append(Command(Op.LOAD, {"dst": dst, "src": src, "bytes": n}))
        out = 4 * int(rng.integers(0, (OUT - n) // 4 + 1))
        cmds.append(Command(Op.STORE, {"dst": out, "src": dst, "bytes": n}))
    return cmds + [Command(Op.END, {})]


def _run_traced(kind, program, inp, config, params=bytes(64), out=OUT, prerun=None):
    """Run on a fresh device (the ``rtl`` one with the bench's trace, and first on these
    ``prerun`` bytes at these params offsets, :class:`sw.driver.rtl.RtlDevice`); returns
    (memory, status, command, the RunResult or None when the device stopped with a fault)."""
    dev = open_device(kind, config, **({"trace": True} if kind == "rtl" else {}))
    bufs = {b: dev.allocate(size, b) for b, size in (
        ("program", len(program)), ("params", len(params)), ("input", len(inp)),
        ("output", out))}
    if prerun:
        dev.prerun = {bufs["params"].addr + off: data for off, data in prerun.items()}
    for b, data in (("program", program), ("params", params), ("input", inp)):
        dev.write(bufs[b], data)
    try:
        res = dev.wait(dev.run(**bufs), timeout=120)
        return bytes(dev.memory), res.status, res.command, res
    except DeviceError as e:
        return bytes(dev.memory), e.status, e.command, None


def _check_beside(out, cmds, cfg, fault, end, beside_fn):
    """The two runs of a "beside" test (commands: LOAD, the first, the one beside it, the
    ones that wait, [with ``fault``: one beside, a bad one,] STORE, END): equal memory,
    status and command; with ``fault`` the bad one stops both. Else the kernel model: the
    work of the command before still runs (KernelState's ``end`` after the CHECK) from the
    third command to STORE, only the third starts beside it (``beside_fn``), and the trace."""
    from sw.perf.top import KernelState, command_cycles, fetch_cycles

    assert out["rtl"][:3] == out["ref"][:3]
    if fault:
        assert out["rtl"][1] == Status.BAD_SHAPE and out["rtl"][2] == len(cmds) - 3
        return
    state, costs, running, beside = KernelState(), [], [], []
    for i, cmd in enumerate(cmds):
        running.append(getattr(state, end) > state.now + fetch_cycles(i, cfg) - 1)
        beside.append(beside_fn(cmd, state))
        costs.append(command_cycles(cmd, cfg, i, state))
    assert running == [False, False] + [True] * (len(cmds) - 3) + [False]
    assert [i for i in range(2, len(cmds) - 1) if beside[i]] == [2]
    _check_trace(out["rtl"][3], cmds, costs)


def _pv_params(rng, rows: int) -> bytes:
    """4 KiB of random params with ``rows`` requantizer records (bias, multiplier, shift 22)
    at byte 2048: a PV's. The bits of the records' second words that hold neither the
    multiplier nor the shift are random: every backend ignores them alike."""
    params = bytearray(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    rq = np.frombuffer(pack_requant(rng.integers(-1000, 1000, rows),
                                    rng.integers(1 << 8, 1 << 12, rows), [22] * rows),
                       "<u4").reshape(rows, 2).copy()
    rq[:, 1] |= rng.integers(0, 1 << 32, rows, dtype=np.uint32) & 0xFFC0_8000
    params[2048:2048 + rq.nbytes] = rq.tobytes()
    return bytes(params)


def _check_trace(res, commands, costs):
    """The RTL's cycle counter when each command was fetched (the bench's trace) and at the
    end equals the kernel model's ``costs``, command by command."""
    from sw.perf.top import HEADER

    assert res.cycles == HEADER + sum(costs)
    fetched = {i: c for i, c in json.loads(res.detail)["trace"] if i < len(commands)}
    want = HEADER
    for i, (cmd, cyc) in enumerate(zip(commands, costs, strict=True)):
        assert fetched[i] == want, (i, cmd.op.name)
        want += cyc


@pytest.mark.parametrize("stall", [False, True])
def test_random_dma_programs_match_the_ref_backend(stall):
    rng = np.random.default_rng(SEED + stall)
    inp = rng.integers(0, 256, 4099, dtype=np.uint8).tobytes()
    program = _program(_random_dma_program(rng, len(inp)))
    ref = _run("ref", program, inp)
    rtl = _run("rtl", program, inp, stall=stall, seed=SEED)
    assert rtl[1:3] == ref[1:3] == (Status.OK, 12)
    assert rtl[0] == ref[0]


@pytest.mark.parametrize("port, lanes, M, rows, stall", [
    (8, 2, 4, 8, False),  # a beat of 2 words in a 2-word write port
    (16, 4, 8, 8, True),
    (32, 8, 8, 16, False),  # 8-word beats fill the 8-word port
])
def test_loads_through_the_weight_port_match_the_ref_backend(port, lanes, M, rows, stall):
    """With a weight port wider than a word whose beat fits the scratchpad's write port,
    LOAD reads whole beats through it (the first one shifted to the destination, partial
    first and last beats, up to 300 bytes): bit-exact, and cycle-exact without stalls."""
    from sw.perf.top import program_cycles

    cfg = CFG.replace(name=f"load-w{port}s{lanes}", m=M, n_max=M, pe_rows=rows,
                      weight_port_bytes=port, spm_lanes=lanes)
    assert cfg.wide_load
    rng = np.random.default_rng(SEED + port + lanes)
    inp = rng.integers(0, 256, 4099, dtype=np.uint8).tobytes()
    cmds = _random_dma_program(rng, len(inp), cfg, longest=300)
    program = _program(cmds, cfg)
    ref = _run("ref", program, inp, config=cfg)
    rtl = _run("rtl", program, inp, config=cfg, stall=stall, seed=SEED)
    assert rtl[1:3] == ref[1:3] == (Status.OK, 12)
    assert rtl[0] == ref[0]
    if not stall:
        assert rtl[4] == program_cycles(cmds, cfg)


def _dma(dst, src, n, op=Op.LOAD):
    return Command(op, {"dst": dst, "src": src, "bytes": n})


def _add_ln(**fields):
    """An ADD_LAYERNORM of 2 x 2 int8 elements (32 bytes of records), ``fields`` changed."""
    return Command(Op.ADD_LAYERNORM, {
        "a": 0, "b": 64, "dst": 128, "tokens": 2, "hidden": 2, "m_a": 1, "m_b": 1, "shift": 0,
        "a_bits": 8, "b_bits": 8, "in_bits": 16, "params_off": 0, "eps_int": 1,
        "sqrt_frac": 0, **fields})


FAULTS = {
    # name: (commands, header count override, config of the Program)
    "unknown opcode": ([_dma(0, 0, 8)], None, None),
    "load past the input buffer": ([_dma(0, 200, 60)], None, None),
    "store past the output buffer": ([_dma(0, 0, 64), _dma(OUT - 8, 0, 16, Op.STORE)], None,
                                     None),
    "load past the scratchpad": ([_dma(CFG.spm_bytes - 8, 0, 16)], None, None),
    "misaligned": ([_dma(2, 0, 16)], None, None),
    "zero bytes": ([_dma(0, 0, 0)], None, None),
    "another config": ([_dma(0, 0, 8)], None, CFG.replace(spm_kib=32)),
    "count past the buffer": ([_dma(0, 0, 8)], 1000, None),
    "no end": ([_dma(0, 0, 8), _dma(0, 0, 8, Op.STORE)], None, None),
    "GELU table past params": ([Command(Op.GELU, {"src": 0, "dst": 64, "tokens": 2, "width": 8,
                                                  "table_off": 16})], None, None),
    "GELU past the scratchpad": ([Command(Op.GELU, {"src": 0, "dst": CFG.spm_bytes - 8,
                                                    "tokens": 2, "width": 8,
                                                    "table_off": 0})], None, None),
    "ADD with 12-bit operands": ([Command(Op.ADD, {
        "a": 0, "b": 64, "out": 128, "tokens": 2, "width": 8, "m_a": 1, "m_b": 1, "shift": 0,
        "a_bits": 12, "b_bits": 8, "out_bits": 8})], None, None),
    "ADD with an int16 operand on an odd byte": ([Command(Op.ADD, {
        "a": 0, "b": 65, "out": 128, "tokens": 2, "width": 8, "m_a": 1, "m_b": 1, "shift": 0,
        "a_bits": 8, "b_bits": 16, "out_bits": 8})], None, None),
    "LAYERNORM of int16 on an odd byte": ([Command(Op.LAYERNORM, {
        "src": 3, "dst": 64, "tokens": 1, "hidden": 4, "in_bits": 16, "params_off": 0,
        "eps_int": 1, "sqrt_frac": 0})], None, None),
    "LINEAR int16 rows at an odd stride": ([Command(Op.LINEAR, {
        "a": 0, "a_stride": 8, "tokens": 2, "k": 8, "rows": 4, "n": 2, "m": 4, "w_off": 0,
        "rq_off": 0, "out": 64, "out_stride": 9, "out_bits": 16})], None, None),
    "LINEAR's GELU table past params": ([Command(Op.LINEAR, {
        "a": 0, "a_stride": 8, "tokens": 2, "k": 8, "rows": 2, "n": 2, "m": 4, "w_off": 0,
        "rq_off": 16, "out": 64, "out_stride": 2, "out_bits": 8, "gelu": 1,
        "table_off": 0})], None, None),
    "LINEAR through GELU with int16 results": ([Command(Op.LINEAR, {
        "a": 0, "a_stride": 8, "tokens": 2, "k": 8, "rows": 2, "n": 2, "m": 4, "w_off": 0,
        "rq_off": 16, "out": 64, "out_stride": 4, "out_bits": 16, "gelu": 1,
        "table_off": 0})], None, None),
    "LINEAR with gelu = 2": ([Command(Op.LINEAR, {
        "a": 0, "a_stride": 8, "tokens": 2, "k": 8, "rows": 2, "n": 2, "m": 4, "w_off": 0,
        "rq_off": 16, "out": 64, "out_stride": 2, "out_bits": 8, "gelu": 2,
        "table_off": 0})], None, None),
    "LAYERNORM wider than max_hidden": ([Command(Op.LAYERNORM, {
        "src": 0, "dst": 64, "tokens": 1, "hidden": CFG.max_hidden + 1, "in_bits": 8,
        "params_off": 0, "eps_int": 1, "sqrt_frac": 8})], None, None),
    "LAYERNORM with the wrong sqrt_frac": ([Command(Op.LAYERNORM, {
        "src": 0, "dst": 64, "tokens": 1, "hidden": 4, "in_bits": 16, "params_off": 0,
        "eps_int": 1, "sqrt_frac": 8})], None, None),
    "ADD_LAYERNORM with the wrong sqrt_frac": ([_add_ln(sqrt_frac=8)], None, None),
    "ADD_LAYERNORM with an int16 operand on an odd byte": ([_add_ln(b=65, b_bits=16)], None,
                                                           None),
    "ADD_LAYERNORM's records past params": ([_add_ln(params_off=48)], None, None),
    "ADD_LAYERNORM past the scratchpad": ([_add_ln(dst=CFG.spm_bytes - 2)], None, None),
    "ADD_LAYERNORM wider than max_hidden": ([_add_ln(hidden=CFG.max_hidden + 1)], None, None),
    "ADD_LAYERNORM's records off the word": ([_add_ln(params_off=2)], None, None),
    "LAYERNORM's records off the word": ([Command(Op.LAYERNORM, {
        "src": 0, "dst": 64, "tokens": 1, "hidden": 2, "in_bits": 16, "params_off": 2,
        "eps_int": 1, "sqrt_frac": 0})], None, None),
    "GELU's table off the word": ([Command(Op.GELU, {"src": 0, "dst": 64, "tokens": 2,
                                                     "width": 8, "table_off": 2})], None, None),
    # an engine command whose output overlaps its own input
    "LINEAR writing over its activations": ([Command(Op.LINEAR, {
        "a": 0, "a_stride": 8, "tokens": 2, "k": 8, "rows": 2, "n": 2, "m": 4, "w_off": 0,
        "rq_off": 16, "out": 8, "out_stride": 2, "out_bits": 8})], None, None),
    "QK_SOFTMAX writing over its queries": ([Command(Op.QK_SOFTMAX, {
        "q": 0, "k": 64, "stride": 8, "tokens": 2, "d": 8, "mask": 200, "mult": 3000,
        "shift": 20, "p": 4, "p_stride": 2})], None, None),
    "QK_SOFTMAX writing over its key mask": ([Command(Op.QK_SOFTMAX, {
        "q": 0, "k": 64, "stride": 8, "tokens": 2, "d": 8, "mask": 201, "mult": 3000,
        "shift": 20, "p": 200, "p_stride": 2})], None, None),
    "PV writing over its V": ([Command(Op.PV, {
        "p": 0, "p_stride": 2, "v": 64, "stride": 8, "tokens": 2, "d": 4, "rq_off": 0,
        "out": 66, "out_stride": 4})], None, None),
}


@pytest.mark.parametrize("port, lanes", [(16, 4), (8, 2), (64, 16)])
@pytest.mark.parametrize("stall", [False, True])
def test_long_stores_go_through_the_weight_port_in_page_split_bursts(port, lanes, stall):
    """With ``wide_store`` STORE writes whole beats through the weight port, the bytes outside
    the STORE strobed off: several KiB from a destination off the beat (bursts of up to 256
    beats: split at 4 KiB pages with 16-byte beats, at 2 KiB with 8-byte ones; the Alveo
    presets' 64-byte beats in 4 KiB bursts of 64), one that
    straddles a page, one read from the scratchpad's last bytes: bit-exact (the whole memory,
    so no byte next to a STORE moved) and cycle-exact without stalls."""
    from sw.perf.top import program_cycles

    cfg = CFG.replace(name=f"store-w{port}", m=8, n_max=8, pe_rows=max(8, port // 2),
                      weight_port_bytes=port, spm_lanes=lanes)
    assert cfg.wide_store and cfg.weight_port_burst == min(256, 4096 // port)
    rng = np.random.default_rng(SEED + port)
    inp = rng.integers(0, 256, 9001, dtype=np.uint8).tobytes()
    spm = cfg.spm_bytes
    cmds = [Command(Op.LOAD, {"dst": 0, "src": 0, "bytes": 9001}),
            Command(Op.LOAD, {"dst": spm - 700, "src": 12, "bytes": 700}),
            Command(Op.STORE, {"dst": 36, "src": 8, "bytes": 8993}),  # 3 pages
            Command(Op.STORE, {"dst": 3 * 4096 - 4, "src": 4, "bytes": 71}),  # across a page
            Command(Op.STORE, {"dst": 9216 + 8, "src": spm - 700, "bytes": 697}),
            Command(Op.END, {})]
    program = _program(cmds, cfg)
    out = 9216 * 2
    ref = _run("ref", program, inp, config=cfg, out=out)
    rtl = _run("rtl", program, inp, config=cfg, out=out, stall=stall, seed=SEED)
    assert rtl[1:3] == ref[1:3] == (Status.OK, 5)
    assert rtl[0] == ref[0]
    if not stall:
        assert rtl[4] == program_cycles(cmds, cfg)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_faults_stop_the_kernel_like_the_ref_backend(fault):
    cmds, count, config = FAULTS[fault]
    program = bytearray(_program(cmds + [Command(Op.END, {})], config or CFG, count))
    if fault == "unknown opcode":
        program[16:20] = (77).to_bytes(4, "little")
    if fault == "no end":  # the END slot becomes one more STORE
        at = 16 + len(cmds) * 64
        program[at:at + 16] = np.array([int(Op.STORE), 0, 0, 8], "<u4").tobytes()
    inp = bytes(range(256))
    ref = _run("ref", bytes(program), inp)
    rtl = _run("rtl", bytes(program), inp)
    assert ref[1] != Status.OK
    assert rtl[1:3] == ref[1:3]
    out = rtl[3]
    assert rtl[0][:out.addr] == ref[0][:out.addr]  # nothing written outside the output
    assert rtl[0][out.addr + out.size:] == ref[0][out.addr + out.size:]
    assert rtl[0] == ref[0]


def test_the_weight_port_checks_its_padded_range_and_alignment_like_the_ref_backend():
    """A LINEAR of 2 rows on an 8-byte weight port (M = 4: an 8-row granule): its weights
    take 40 bytes in the port's layout (10 without the padding rows), so at w_off 24 they end
    at the 64-byte params buffer's end and run, at 32 they do not fit (though 10 bytes
    would), and at 4 they are off the beat."""
    cfg = CFG.replace(name="wport", pe_rows=8, weight_port_bytes=8)
    rq = pack_requant([0] * 2, [1024] * 2, [12] * 2).ljust(24, b"\0")  # 2 rows' records
    index = 0 | 1 << 2 | 2 << 4 | 3 << 6  # 4 slots of 2:4: positions 0, 1 and 2, 3
    params = rq + bytes(range(1, 33)) + bytes([index] * 8)  # rq, 8 rows' values and indices
    assert len(params) == 64
    want = {24: Status.OK, 32: Status.OUT_OF_BUFFER, 4: Status.BAD_SHAPE}
    for w_off, status in want.items():
        lin = Command(Op.LINEAR, {"a": 0, "a_stride": 8, "tokens": 1, "k": 8, "rows": 2,
                                  "n": 2, "m": 4, "w_off": w_off, "rq_off": 0, "out": 64,
                                  "out_stride": 2, "out_bits": 8})
        program = _program([_dma(0, 0, 8), lin, _dma(0, 64, 4, Op.STORE),
                            Command(Op.END, {})], cfg)
        ref = _run("ref", program, bytes(range(256)), config=cfg, params=params)
        rtl = _run("rtl", program, bytes(range(256)), config=cfg, params=params)
        assert ref[1:3] == rtl[1:3] == (status, 3 if status == Status.OK else 1), w_off
        assert rtl[0] == ref[0]


def test_layernorm_records_off_the_wide_weight_port_s_beat_are_refused():
    """With a 16-byte weight port the LayerNorm records come through it: ``params_off`` 48
    is a beat and runs, 40 (a multiple of 4 bytes, not of 16) stops the kernel with
    BAD_SHAPE, like the ref backend."""
    cfg = CFG.replace(name="wport16", m=8, n_max=8, pe_rows=8, weight_port_bytes=16)
    params = bytes(range(128))
    for off, status in ((48, Status.OK), (40, Status.BAD_SHAPE)):
        cmds = [Command(Op.LAYERNORM, {"src": 0, "dst": 64, "tokens": 2, "hidden": 4,
                                       "in_bits": 16, "params_off": off, "eps_int": 1,
                                       "sqrt_frac": 0}), Command(Op.END, {})]
        ref = _run("ref", _program(cmds, cfg), bytes(range(256)), config=cfg, params=params)
        rtl = _run("rtl", _program(cmds, cfg), bytes(range(256)), config=cfg, params=params)
        assert rtl[1:3] == ref[1:3] == (status, 1 if status == Status.OK else 0), off
        assert rtl[0] == ref[0]


def test_an_int8_layernorm_is_refused_where_the_config_builds_none():
    """``layernorm_int8 = False`` (the ecp5 preset) leaves the int8-input LayerNorm out: a
    command that needs it stops the kernel with BAD_SHAPE, like the ref backend."""
    from sw.ref.layernorm import SQRT_FRAC

    cmds = [Command(Op.LAYERNORM, {"src": 0, "dst": 64, "tokens": 2, "hidden": 4, "in_bits": 8,
                                   "params_off": 0, "eps_int": 1, "sqrt_frac": SQRT_FRAC}),
            Command(Op.END, {})]
    inp = bytes(range(256))
    assert _run("ref", _program(cmds), inp)[1] == Status.OK  # fine where it is built
    cfg = CFG.replace(layernorm_int8=False)
    ref = _run("ref", _program(cmds, cfg), inp, config=cfg)
    rtl = _run("rtl", _program(cmds, cfg), inp, config=cfg)
    assert rtl[1:3] == ref[1:3] == (Status.BAD_SHAPE, 0)
    assert rtl[0] == ref[0]


def test_a_reset_mid_run_recovers_and_the_rerun_is_correct():
    rng = np.random.default_rng(SEED)
    inp = rng.integers(0, 256, 4099, dtype=np.uint8).tobytes()
    program = _program(_random_dma_program(rng, len(inp)))
    ref = _run("ref", program, inp)
    rtl = _run("rtl", program, inp, reset_at=40)
    assert rtl[1:3] == ref[1:3] and rtl[0] == ref[0]


# a Program that touches each buffer (on CFG), and on a config whose LOAD and STORE go through
# the weight port; per case: the bytes of a run buffer the memory refuses, the command that
# meets them first (-1: the header)
_BUS_CMDS = [_dma(0, 0, 64), _dma(0, 0, 64, Op.STORE),
             Command(Op.LINEAR, {"a": 0, "a_stride": 8, "tokens": 2, "k": 8, "rows": 4, "n": 2,
                                 "m": 4, "w_off": 0, "rq_off": 2048, "out": 128,
                                 "out_stride": 4, "out_bits": 8, "gelu": 0, "table_off": 0}),
             _dma(64, 128, 8, Op.STORE), _dma(256, 128, 32), _dma(96, 256, 32, Op.STORE)]
_BUS_WIDE = CFG.replace(name="store-w16", m=8, n_max=8, pe_rows=8, weight_port_bytes=16,
                        spm_lanes=4)
_BUS_WIDE_CMDS = [_dma(0, 4, 300), _dma(8, 0, 300, Op.STORE), _dma(0, 400, 16)]
BUS_ERRORS = {
    "header": (CFG, {"program": (0, 4)}, -1),
    "a command's word": (CFG, {"program": (16 + 3 * 64 + 8, 16 + 3 * 64 + 12)}, 3),
    "LINEAR weights": (CFG, {"params": (8, 12)}, 2),
    "LINEAR records": (CFG, {"params": (2048 + 3 * RQ_RECORD, 2048 + 3 * RQ_RECORD + 4)}, 2),
    "LOAD": (CFG, {"input": (140, 144)}, 4),
    "STORE": (CFG, {"output": (100, 104)}, 5),
    "LOAD through the weight port": (_BUS_WIDE, {"input": (400, 404)}, 2),
    "STORE through the weight port": (_BUS_WIDE, {"output": (200, 204)}, 1),
}


@pytest.mark.parametrize("case", list(BUS_ERRORS))
def test_a_bus_error_stops_the_kernel_at_the_command_that_met_it(case):
    """Device memory answers some words with SLVERR: the kernel stops with BUS_ERROR at the
    first command that read or wrote them (the header's read: no command) and does not hang;
    every command before it did its work (the output buffer as the ref backend leaves it after
    those commands), and a refused word keeps its bytes."""
    from sw.nm import nm_mask, pack

    config, bad, stop = BUS_ERRORS[case]
    cmds = _BUS_CMDS if config is CFG else _BUS_WIDE_CMDS
    rng = np.random.default_rng(SEED)
    inp = rng.integers(0, 256, 4099, dtype=np.uint8).tobytes()
    params = bytearray(_pv_params(rng, 4))  # with 2:4 weights at 0 (4 x 8: 20 bytes)
    w = rng.integers(-128, 128, (4, 8))
    pk = pack(w * nm_mask(w, 2, 4), 2, 4)
    blob = np.concatenate([pk.values.astype(np.int8).view(np.uint8).ravel(), pk.indices.ravel()])
    params[:blob.size] = blob.tobytes()
    params = bytes(params)
    full = _program(cmds + [Command(Op.END, {})], config)
    assert _run("ref", full, inp, config, params)[1:3] == (Status.OK, len(cmds))
    before = _run("ref", _program(cmds[:max(stop, 0)] + [Command(Op.END, {})], config), inp,
                  config, params)
    rtl = _run("rtl", full, inp, config, params, bus_error=bad)
    assert rtl[1:3] == (Status.BUS_ERROR, stop)
    out = rtl[3]
    end = out.addr + out.size
    got, want = bytearray(rtl[0][out.addr:end]), bytearray(before[0][out.addr:end])
    if "output" in bad:  # the failing STORE's refused word kept its bytes; the rest of its
        lo, hi = bad["output"]  # destination is not compared
        assert got[lo:hi] == b"\xa5" * (hi - lo)
        dst = cmds[stop].args
        got[dst["dst"]:dst["dst"] + dst["bytes"]] = want[dst["dst"]:dst["dst"] + dst["bytes"]]
    assert got == want


@pytest.mark.parametrize("port", [0, 16, 32, 64])
def test_commands_straddling_a_page_of_the_program_are_fetched_in_two_bursts(port):
    """Commands 63 and 127 of a Program straddle 4 KiB pages (16-byte header, 64-byte
    commands): their fetch takes a second read burst, whose address goes out while the first
    one's words stream (the reader keeps up to OUTSTANDING bursts in flight), so it costs no
    extra cycle. With a weight port of 16 bytes or more the commands come through it, the
    beats that hold each (4 of 16 bytes, 3 of 32 or 2 of 64, from 16 bytes into the first).
    130 short DMA commands, checked command by command against sw/perf/top.py through the
    bench's trace."""
    from sw.compiler.isa import CMD_WORDS, HEADER_WORDS
    from sw.perf.top import HEADER, Read, command_cycles, fetch_cycles

    cfg = CFG if not port else CFG.replace(name=f"fetch-w{port}", m=8, n_max=8, pe_rows=32,
                                           weight_port_bytes=port)
    assert cfg.wide_fetch == bool(port)
    at = 4 * (HEADER_WORDS + 63 * CMD_WORDS)
    if port:  # the beats from the one holding the command's first byte
        assert len(Read(at - at % port, -(-(at % port + 64) // port), port).sizes) == 2
        assert fetch_cycles(0, cfg) < fetch_cycles(0)
    else:
        assert len(Read(at, CMD_WORDS).sizes) == 2
        assert fetch_cycles(63) == fetch_cycles(62) == fetch_cycles(0)
    cmds = []
    for i in range(65):
        cmds += [_dma(4 * i, 4 * i, 8), _dma(4 * i, 4 * i, 8, Op.STORE)]
    commands = cmds + [Command(Op.END, {})]
    program = _program(commands, cfg)
    inp = bytes(range(256)) * 2
    res = {}
    for kind in ("ref", "rtl"):
        dev = open_device(kind, cfg, **({"trace": True} if kind == "rtl" else {}))
        bufs = {k: dev.allocate(n, k) for k, n in (("program", len(program)), ("params", 64),
                                                   ("input", len(inp)), ("output", OUT))}
        dev.write(bufs["program"], program)
        dev.write(bufs["input"], inp)
        res[kind] = dev.wait(dev.run(**bufs), timeout=60)
        assert res[kind].status == Status.OK and res[kind].command == 130
    assert res["rtl"].cycles == res["ref"].cycles
    fetched = {i: c for i, c in json.loads(res["rtl"].detail)["trace"] if i <= 130}
    want = HEADER
    for i, cmd in enumerate(commands):
        assert fetched[i] == want, (i, cmd.op.name)
        want += command_cycles(cmd, cfg, i)
    assert want == res["rtl"].cycles


def test_the_rtl_device_reports_progress_while_it_simulates():
    """The bench samples the kernel's cycle counter and command index every
    ``progress_every`` cycles; the device hands them to ``progress`` (the CLI's bar)."""
    rng = np.random.default_rng(SEED)
    inp = rng.integers(0, 256, 4099, dtype=np.uint8).tobytes()
    program = _program(_random_dma_program(rng, len(inp)))
    samples = []
    dev = open_device("rtl", CFG, progress=lambda c, i: samples.append((c, i)),
                      progress_every=50)
    bufs = {k: dev.allocate(n, k) for k, n in (("program", len(program)), ("params", 64),
                                               ("input", len(inp)), ("output", OUT))}
    dev.write(bufs["program"], program)
    dev.write(bufs["input"], inp)
    res = dev.wait(dev.run(**bufs), timeout=60)
    assert res.status == Status.OK
    assert samples, "no progress reported"
    cycles, commands = zip(*samples)
    assert list(cycles) == sorted(set(cycles)) and 0 < cycles[-1] <= res.cycles
    assert list(commands) == sorted(commands) and commands[-1] <= res.command


def test_the_driver_times_out_instead_of_hanging():
    program = _program([_dma(0, 0, 4096), Command(Op.END, {})])
    with pytest.raises(DeviceTimeout, match="no ap_done within 100 cycles"):
        _run("rtl", program, bytes(4096), max_cycles=100)


def _vector_program(rng, odd=False, max_width=22, config=CFG):
    """LOAD random bytes, then GELU, ADD (random widths), LAYERNORM (int8 and int16 input),
    ADD_LAYERNORM (the ADD's operands and sum width) with parameters from the sw/ref builders,
    then STORE every result; random shapes. ``odd``: every operand starts mid-word (int16
    ones on an even byte)."""
    from sw.compiler.encoder import _ln_blob
    from sw.ref.gelu import gelu_params
    from sw.ref.layernorm import layernorm_params
    from sw.ref.quant import add_params

    T, W = int(rng.integers(1, 5)), int(rng.integers(1, max_width + 1))
    params = bytearray(2048)
    params[0:256] = gelu_params(rng.uniform(0.01, 0.1), rng.uniform(0.01, 0.1)) \
        .table.astype(np.int8).tobytes()
    lns = {}
    for bits, off in ((16, 512), (8, 1024)):
        lp = layernorm_params(rng.uniform(0.005, 0.05), rng.normal(1, 0.3, W),
                              rng.normal(0, 0.2, W), rng.uniform(0.02, 0.1), 1e-5, in_bits=bits)
        params[off:off + W * 16] = _ln_blob(lp).tobytes()
        lns[bits] = (off, lp)
    ab, bb, ob = (int(rng.choice([8, 16])) for _ in range(3))
    ap = add_params(*rng.uniform(0.01, 0.1, 3), a_bits=ab, b_bits=bb, out_bits=ob)
    region = T * W * 2  # bytes of the largest operand, rounded to words below
    r = -(-region // 4) * 4 + 4 * odd
    a, b, g, s, l16, l8, f = (i * r for i in range(7))
    if odd:
        a, b, g, s, l16, l8, f = (a + 2, b + (1 if bb == 8 else 2), g + 3,
                                  s + (1 if ob == 8 else 2), l16 + 1, l8 + 3, f + 1)
    cmds = [Command(Op.LOAD, {"dst": 0, "src": 0, "bytes": 2 * r}),
            Command(Op.GELU, {"src": a, "dst": g, "tokens": T, "width": W, "table_off": 0}),
            Command(Op.ADD, {"a": a, "b": b, "out": s, "tokens": T, "width": W, "m_a": ap.m_a,
                             "m_b": ap.m_b, "shift": ap.shift, "a_bits": ab, "b_bits": bb,
                             "out_bits": ob})]
    for bits, dst in ((16, l16), (8, l8)):
        off, lp = lns[bits]
        cmds.append(Command(Op.LAYERNORM, {"src": a, "dst": dst, "tokens": T, "hidden": W,
                                           "in_bits": bits, "params_off": off,
                                           "eps_int": lp.eps_int, "sqrt_frac": lp.sqrt_frac}))
    off, lp = lns[ob]  # the sums of the ADD above, normalized without being stored
    cmds.append(Command(Op.ADD_LAYERNORM, {
        "a": a, "b": b, "dst": f, "tokens": T, "hidden": W, "m_a": ap.m_a, "m_b": ap.m_b,
        "shift": ap.shift, "a_bits": ab, "b_bits": bb, "in_bits": ob, "params_off": off,
        "eps_int": lp.eps_int, "sqrt_frac": lp.sqrt_frac}))
    cmds += [Command(Op.STORE, {"dst": 0, "src": 2 * r, "bytes": 5 * r}), Command(Op.END, {})]
    inp = rng.integers(0, 256, 2 * r, dtype=np.uint8).tobytes()
    return _program(cmds, config=config), bytes(params), inp


@pytest.mark.parametrize("seed, stall", [(1, False), (2, True), (3, False)])
def test_vector_commands_match_the_ref_backend(seed, stall):
    _vector_commands(CFG, np.random.default_rng(seed), seed, stall)


@pytest.mark.parametrize("lanes, seed, spm", [(1, 4, 1), (3, 5, 1), (8, 6, 1),
                                              (8, 7, 2), (16, 8, 2), (5, 9, 4)])
def test_vector_commands_at_odd_offsets_match_the_ref_backend(lanes, seed, spm):
    """Operands that start mid-word and rows of up to 40 elements: the gather and scatter
    move the elements within the scratchpad ports' ``spm`` words per cycle, bit-exact and
    cycle-exact."""
    cfg = CFG.replace(name=f"vec-lanes{lanes}s{spm}", vector_lanes=lanes, spm_lanes=spm)
    _vector_commands(cfg, np.random.default_rng(seed), seed, False, odd=True, max_width=40)


@pytest.mark.parametrize("port, seed, stall, lanes, per_cycle", [
    (16, 10, False, 4, 1), (32, 11, True, 4, 2), (64, 12, False, 4, 4),
    (64, 13, False, 6, 1),  # 6 lanes: a beat's 4 records one a cycle
])
def test_layernorm_records_come_through_a_wide_weight_port(port, seed, stall, lanes,
                                                           per_cycle):
    """With a weight port of 16 bytes or more, LAYERNORM's records come through it,
    ``port / 16`` a beat: the whole beat a cycle when ``vector_lanes`` is a multiple of that,
    else one a cycle (rows up to 40 channels: partial last beats): bit-exact, and
    cycle-exact against the kernel model without stalls."""
    cfg = CFG.replace(name=f"vec-wport{port}l{lanes}", m=8, n_max=8, pe_rows=32,
                      weight_port_bytes=port, vector_lanes=lanes)
    assert cfg.wide_ln_params and cfg.ln_load_lanes == per_cycle
    _vector_commands(cfg, np.random.default_rng(seed), seed, stall, max_width=40)


def _vector_commands(cfg, rng, seed, stall, **kwargs):
    program, params, inp = _vector_program(rng, config=cfg, **kwargs)
    out = {}
    for kind in ("ref", "rtl"):
        kw = {"stall": stall, "seed": seed} if kind == "rtl" else {}
        dev = open_device(kind, cfg, **kw)
        bufs = {k: dev.allocate(n, k) for k, n in (
            ("program", len(program)), ("params", len(params)), ("input", len(inp)),
            ("output", 4 * len(inp)))}
        for k, v in (("program", program), ("params", params), ("input", inp)):
            dev.write(bufs[k], v)
        res = dev.wait(dev.run(**bufs), timeout=60)
        assert res.status == Status.OK
        out[kind] = dev.read(bufs["output"])
        _check_cycles(res.cycles, Program.from_bytes(program).commands, cfg, stall)
    assert out["rtl"] == out["ref"]


@pytest.mark.parametrize("shape", [
    # R, C, M, N:M, hidden, heads, tokens, intermediate, stall, act_buffer_depth
    (4, 4, 4, "2:4", 64, 4, 12, 128, False, 1024),
    (2, 3, 8, "2:8", 48, 3, 7, 80, True, 1024),  # 3-bit indices straddle bytes; partial tiles
    # K = 50 not a multiple of M; 64-word activation banks: the 5 token blocks run in 2
    # chunks (4 + 1) for K = 50, in one for K = 36
    (3, 2, 4, "1:4", 36, 3, 9, 50, False, 64),
    (2, 2, 16, "dense", 32, 2, 5, 64, False, 1024),
    (3, 2, 4, "2:4", 36, 3, 9, 50, True, 64),
])
def test_a_compiled_encoder_layer_runs_on_the_rtl_bit_exact(shape):
    """A random BERT layer, pruned and compiled by sw/compiler, on the RTL top (through
    cocotbext-axi) against the ref backend, with padding in the measured sequence."""
    _compiled_layer(*shape)


@pytest.mark.parametrize("shape", [
    # R, C, M, N:M, hidden, heads, tokens, intermediate, stall, act_buffer_depth, port bytes
    (4, 4, 4, "2:4", 64, 4, 12, 128, True, 1024, 4),
    # 36 and 50 rows padded to 40 and 56 (8-row granule): short last row blocks of 8
    (16, 2, 4, "1:4", 36, 3, 9, 50, False, 64, 8),
    (2, 2, 16, "dense", 32, 2, 5, 64, False, 1024, 4),
    # the u200's port and M: 64-byte beats, 16 rows' values or 32 rows' indices per beat
    (32, 2, 8, "2:8", 48, 3, 7, 80, False, 1024, 64),
    # 64-word activation banks, 32 tokens in 16 blocks: the FFN's first LINEAR (with GELU)
    # runs in 4 chunks, P.V in 2, each chunk's first row block and records fetched while the
    # chunk is staged
    (8, 2, 4, "2:4", 64, 4, 32, 128, False, 64, 8),
])
def test_a_compiled_encoder_layer_streams_weights_through_the_weight_port(shape):
    """The same with the read-only weight master (``weight_port_bytes``): LINEAR weights in
    the row-interleaved layout of sw.compiler.weight_layout, bit-exact and cycle-exact."""
    _compiled_layer(*shape)


@pytest.mark.parametrize("shape", [
    # R, C, M, N:M, hidden, heads, tokens, intermediate, stall, act_buffer_depth, port bytes,
    # softmax lanes, scratchpad lanes, weight ports
    # 2 ports of 8 rows (M = 8: a 4-row granule); the FFN's 80 rows padded to 96
    (16, 2, 8, "2:8", 48, 3, 7, 80, False, 1024, 8, 3, 1, 2),
    # 3 ports of 8 rows (R = 24 = 3 x 8: blocks counted through the reciprocal), stalls
    (24, 2, 4, "2:4", 64, 4, 12, 128, True, 1024, 8, 3, 1, 3),
    # 4 ports of 8 rows (the u280's count), dense: no index words, implicit indices per port
    (32, 2, 8, "dense", 48, 3, 7, 80, False, 1024, 8, 3, 1, 4),
    # 32-byte beats (16 rows' values or indices) and a wide scratchpad, 16 rows a port
    (32, 2, 8, "2:8", 48, 3, 7, 80, False, 1024, 32, 4, 8, 2),
    # 64-word activation banks: LINEARs in several chunks, every chunk's first block
    # through both ports while the chunk is staged, under AXI stalls
    (16, 2, 4, "2:4", 64, 4, 32, 128, True, 64, 8, 3, 1, 2),
    # the same with 4-word scratchpad ports: token, key and V rows two a cycle (aligned),
    # 4 chunks of 4 token blocks against 4 row blocks, records in their slots across chunks
    (16, 2, 4, "2:4", 64, 4, 32, 128, False, 64, 8, 3, 4, 2),
])
def test_a_compiled_encoder_layer_streams_weights_through_several_weight_ports(shape):
    """LINEAR weights striped over ``weight_ports`` masters (port p: rows [p R / P,
    (p + 1) R / P) of every row block, from its own bank at the same offset): bit-exact and
    cycle-exact (kernel model), with the banks as separate buffers."""
    _compiled_layer(*shape)


@pytest.mark.parametrize("shape", [
    # R, C, M, N:M, hidden, heads, tokens, intermediate, stall, act_buffer_depth, port bytes,
    # softmax lanes, scratchpad lanes, weight ports, device memory's extra read latency
    # the 32-bit master alone: commands, records, LayerNorm records, LOAD, weights
    (4, 4, 4, "2:4", 64, 4, 12, 128, False, 1024, 0, 3, 1, 1, 17),
    # a weight port, 64-word activation banks: chunks whose first blocks load while staged
    (8, 2, 4, "2:4", 64, 4, 32, 128, False, 64, 8, 3, 1, 1, 40),
    # 2 weight ports and 2-word scratchpad ports (as u200, smaller): staging longer than the
    # first block's records, the second block's records fetched from the first's RUN state
    (16, 16, 4, "2:4", 64, 4, 12, 96, False, 1024, 8, 3, 2, 2, 64),
])
def test_a_compiled_encoder_layer_with_slower_device_memory(shape):
    """Device memory that answers each read burst ``mem_read_delay`` cycles later than the
    benches' RAM (the top bench's ``mem_delay``): bit-exact, and cycle-exact against the
    kernel model with that latency (sw.perf.top's read gap)."""
    _compiled_layer(*shape)


@pytest.mark.parametrize("stall", [False, True])
def test_a_pv_runs_beside_the_next_head_s_softmax_rows_where_two_heads_fit(stall):
    """A scratchpad (13 KiB) that holds two heads' probabilities but not all four: the
    compiler's order step puts each PV after the next head's QK_SOFTMAX (QK 0, QK 1, PV 0,
    QK 2, PV 1, QK 3, PV 2, PV 3), the kernel runs it bit-exact and cycle-exact, and the
    kernel model has it faster than head by head (12 KiB)."""
    from sw.perf.top import program_cycles

    shape = (8, 2, 4, "2:4", 64, 4, 32, 128, stall, 64, 8)
    comp = _compiled_layer(*shape, kib=13)
    qk, pv = Op.QK_SOFTMAX, Op.PV
    att = [c.op for c in comp.program.commands if c.op in (qk, pv)]
    assert att == [qk, qk, pv, qk, pv, qk, pv, pv]
    head_by_head = _compiled_layer(*shape, kib=12, rtl=False)
    att = [c.op for c in head_by_head.program.commands if c.op in (qk, pv)]
    assert att == [qk, pv] * 4
    assert (program_cycles(comp.program.commands, comp.config)
            < program_cycles(head_by_head.program.commands, head_by_head.config))


def test_every_weight_bank_is_range_checked_like_the_ref_backend():
    """2 weight ports: a LINEAR's bank bytes must fit at w_off in params *and* in params1
    (a bank one beat short stops the kernel with OUT_OF_BUFFER before it runs)."""
    from sw.compiler.weight_layout import weight_banks
    from sw.nm import pack

    cfg = CFG.replace(name="wports2", pe_rows=16, weight_port_bytes=8, weight_ports=2)
    rng = np.random.default_rng(SEED)
    w = rng.integers(-128, 128, (10, 8))
    w[:, 2:4] = 0
    w[:, 6:8] = 0
    banks = weight_banks(pack(w, 2, 4), cfg)  # 8 of the 16 padded rows each: 40 bytes
    rq = pack_requant([0] * 10, [1024] * 10, [12] * 10)
    params = rq + banks[0].tobytes()
    w_off = len(rq)
    assert w_off % 8 == 0
    lin = Command(Op.LINEAR, {"a": 0, "a_stride": 8, "tokens": 3, "k": 8, "rows": 10,
                              "n": 2, "m": 4, "w_off": w_off, "rq_off": 0, "out": 64,
                              "out_stride": 10, "out_bits": 8})
    program = _program([_dma(0, 0, 24), lin, _dma(0, 64, 32, Op.STORE), Command(Op.END, {})],
                       cfg)
    bank1 = bytes(w_off) + banks[1].tobytes()
    for data, status in ((bank1, Status.OK), (bank1[:-8], Status.OUT_OF_BUFFER)):
        ref = _run("ref", program, bytes(range(256)), config=cfg, params=params, banks=[data])
        rtl = _run("rtl", program, bytes(range(256)), config=cfg, params=params, banks=[data])
        assert ref[1:3] == rtl[1:3] == (status, 3 if status == Status.OK else 1)
        assert rtl[0] == ref[0]
    ok = _run("ref", program, bytes(range(256)), config=cfg, params=params, banks=[bank1])
    assert ok[0][ok[3].addr: ok[3].addr + 30] != b"\xa5" * 30  # the LINEAR wrote its result


@pytest.mark.parametrize("shape", [
    # R, C, M, N:M, hidden, heads, tokens, intermediate, stall, act_buffer_depth, port bytes,
    # softmax lanes P: the score drain writes two neighbouring score-bank words of P keys a
    # cycle
    (4, 4, 4, "2:4", 64, 4, 12, 128, False, 1024, 0, 2),  # a tile's rows span 2 words
    (2, 3, 8, "2:8", 48, 3, 7, 80, True, 1024, 0, 4),  # a tile fills half a word
    (6, 2, 4, "1:4", 36, 3, 9, 50, False, 64, 0, 4),  # a tile starts mid-word: 2 or 3 words
    (3, 2, 4, "2:4", 36, 3, 9, 50, False, 64, 0, 8),  # 3-row tiles in 8-lane words
])
def test_the_score_drain_writes_the_scores_that_share_a_score_word_at_once(shape):
    """QK's scores leave the engine two neighbouring score-bank words (the ``P`` keys each
    holds; even and odd words in their own banks) per cycle, keys past the sequence skipped:
    bit-exact and cycle-exact (kernel model) whether the tile's rows span words, start
    mid-word or share one."""
    _compiled_layer(*shape)


@pytest.mark.parametrize("shape", [
    # R, C, M, N:M, hidden, heads, tokens, intermediate, stall, act_buffer_depth, port bytes,
    # softmax lanes, scratchpad lanes: a beat's results leave spm_lanes words per cycle
    (16, 2, 4, "2:4", 64, 4, 12, 128, False, 1024, 0, 4, 2),  # 4 to 8 words a beat
    (8, 3, 8, "2:8", 48, 3, 7, 80, True, 1024, 8, 4, 4),  # a beat in one or two cycles
    (6, 2, 4, "1:4", 36, 3, 9, 50, False, 64, 0, 2, 8),  # a beat always in one cycle
])
def test_the_result_write_out_moves_spm_lanes_words_a_cycle(shape):
    """LINEAR's and PV's results go out through the scratchpad's wide write port
    (``spm_lanes`` words of the banked scratchpad per cycle, at any word alignment): the
    rest of the kernel reads and writes lane 0. Bit-exact, cycle-exact."""
    _compiled_layer(*shape)


def _layer_config(R, C, M, act_depth, port=0, lanes=3, spm=1, ports=1, delay=0, kib=16):
    from hw.config import AcceleratorConfig

    name = f"enc{R}x{C}m{M}a{act_depth}w{port}p{lanes}s{spm}x{ports}k{kib}"
    return AcceleratorConfig(name=name, m=M, n_max=M, pe_rows=R, pe_cols=C, max_k=256, max_row=32,
                             softmax_lanes=lanes, vector_lanes=5, max_hidden=128, spm_kib=kib,
                             act_buffer_depth=act_depth, weight_port_bytes=port,
                             spm_lanes=spm, weight_ports=ports, mem_read_delay=delay)


def _compiled_layer(R, C, M, nm, H, heads, L, inter, stall, act_depth, port=0, lanes=3,
                    spm=1, ports=1, delay=0, *, kib=16, rtl=True):
    """Compile a random one-layer BERT for the config, then (``rtl``) run it on the RTL and
    the ref backend: bit-exact, and cycle-exact against the kernel model. The compiled
    encoder."""
    import torch
    from transformers import BertConfig, BertModel

    from sw.compiler.encoder import compile_encoder
    from sw.driver.encoder_run import run_on_device
    from sw.prune.sparsify import NMPlan, apply_masks, squash

    cfg = _layer_config(R, C, M, act_depth, port, lanes, spm, ports, delay, kib)
    torch.manual_seed(SEED)
    model = BertModel(BertConfig(hidden_size=H, num_hidden_layers=1, num_attention_heads=heads,
                                 intermediate_size=inter, vocab_size=100)).eval()
    if nm != "dense":
        apply_masks(model, NMPlan.uniform(model, nm))
        squash(model)
    g = torch.Generator().manual_seed(SEED)
    ids = torch.randint(0, 100, (5, L), generator=g)
    masks = torch.ones(5, L, dtype=torch.bool)
    masks[4, L - 2:] = False
    with torch.no_grad():
        emb = model.embeddings(input_ids=ids)
    comp = compile_encoder(model, cfg, emb[:4], masks[:4])
    if not rtl:
        return comp
    xq = np.clip(np.round(emb[4].numpy() / comp.in_scale), -128, 127).astype(np.int8)
    want, _ = run_on_device(open_device("ref", cfg), comp, xq, masks[4].numpy())
    got, res = run_on_device(open_device("rtl", cfg, stall=stall, seed=SEED, trace=True), comp,
                             xq, masks[4].numpy())
    assert res.status == Status.OK and res.command == len(comp.program) - 1
    assert np.array_equal(got, want)
    _check_cycles(res.cycles, comp.program.commands, cfg, stall)
    if not stall:  # and command by command: each fetched when the profile says
        from sw.perf.top import command_timeline

        fetched = {i: c for i, c in json.loads(res.detail)["trace"]}
        for row, label in zip(command_timeline(comp.program.commands, cfg), comp.labels,
                              strict=True):
            assert fetched[row["index"]] == row["start"], (label, row)
    return comp


def _check_cycles(cycles, commands, config, stall):
    """The kernel's cycle counter equals sw/perf/top.py's prediction; with AXI stalls it can
    only be later."""
    from sw.perf.top import program_cycles

    want = program_cycles(commands, config)
    assert cycles >= want if stall else cycles == want


@pytest.mark.parametrize("shape", [
    # R, C, M, N:M, hidden, heads, tokens, intermediate, stall, act_buffer_depth, port bytes,
    # softmax lanes, scratchpad lanes, weight ports
    # dense rows through 2 ports: each entry whole once its implicit indices are written
    (32, 2, 8, "dense", 48, 3, 7, 80, False, 1024, 32, 4, 8, 2),
    # one port, 1:4, the FFN's second LINEAR in 2 chunks of several token blocks, stalls
    (16, 2, 4, "1:4", 36, 3, 9, 50, True, 64, 8, 3, 4, 1),
    # the same without stalls: cycle-exact (some blocks' RQ comes in their records' last
    # cycle and waits one more)
    (16, 2, 4, "1:4", 36, 3, 9, 50, False, 64, 8, 3, 4, 1),
    # staging longer than the first block's records and longer than a tile, the second
    # block's records fetched from the first block's RUN state (as on u200): cycle-exact
    (16, 16, 4, "2:4", 64, 4, 12, 96, False, 1024, 8, 3, 2, 2),
])
def test_a_linear_s_first_tile_runs_while_its_chunk_is_staged(shape):
    """With wide staging and a weight port, a LINEAR chunk's first tile starts once its
    records are in, its feeder reading each activation group once the last bank wrote it
    and each weight entry once every loader wrote it whole; the next row block loads as soon
    as the first is in. Bit-exact, and cycle-exact against the kernel model (which steps
    that feed a cycle at a time, ``sw.perf.top.feed_steps``)."""
    _compiled_layer(*shape)


@pytest.mark.parametrize("shape", [
    # R, C, M, N:M, hidden, heads, tokens, intermediate, stall, act_buffer_depth, port bytes,
    # softmax lanes, scratchpad lanes, weight ports
    # one port, 16-bit index words: 32 rows' words of an entry are 24 beats, its 4 steps 4
    (32, 16, 8, "2:8", 128, 4, 12, 160, False, 1024, 8, 3, 2, 1),
    # two ports, 8-bit index words; exact, and under AXI stalls
    (16, 16, 4, "2:4", 128, 4, 12, 160, False, 1024, 8, 3, 2, 2),
    (16, 16, 4, "2:4", 128, 4, 12, 160, True, 1024, 8, 3, 2, 2),
    # dense: an entry is whole once its implicit indices are written, after all the values
    (32, 16, 4, "dense", 64, 4, 12, 96, False, 1024, 8, 3, 2, 2),
])
def test_a_linear_s_row_blocks_run_while_their_weights_and_records_come(shape):
    """With wide staging and a weight port, a LINEAR row block's tiles start once its
    weights started loading (entry by entry: its values, then its index words), the feeder
    reading each entry once every loader wrote it whole, and without waiting for the block's
    requantizer records (its results wait for them at the requantizer); the next block's
    load starts once the loaders are free. In these shapes a row block's words take longer
    than its tiles (checked below from the model's figures), so the tiles do wait for
    entries. Bit-exact, and cycle-exact against the kernel model."""
    from sw.compiler.weight_layout import block_bytes, rows_padded
    from sw.perf.top import read_cycles

    R, C, M, nm, H, heads, L, inter, stall, act_depth, port, lanes, spm, ports = shape
    cfg = _layer_config(R, C, M, act_depth, port, lanes, spm, ports)
    n = M if nm == "dense" else int(nm.split(":")[0]) * M // int(nm.split(":")[1])
    steps = -(-H // M) * n  # a tile of the hidden-sized LINEARs (one token block: L <= C)
    assert L <= C and rows_padded(H, cfg) > R  # several row blocks
    load = read_cycles(0, block_bytes(R // ports, H, n, M, cfg) // port, port,
                       cfg.weight_port_burst)
    assert load > steps + 8, (load, steps)
    _compiled_layer(*shape)


def test_requantizer_records_already_in_their_slot_are_reused_and_forgotten_at_the_next_start():
    """The engine's four records slots are filled in turn, from command to command. A PV whose
    first row block's records are already in the slot it would fill, or in the slot before
    (same params offset, same words), does not fetch them again (from the slot before they
    are copied over): the second to fifth equal PVs, one after a LINEAR that loaded the same
    into that slot, a 2-block PV; another offset fetches. Checked against the
    ref backend bit for bit and against the kernel model command by command (its
    KernelState); the PVs' results go out beside the next PV. Then the same Program runs
    after a first run on other records at that offset, without a reset: the kernel forgets
    its records when it starts, so the results and cycles are those of a fresh kernel."""
    from sw.nm import nm_mask, pack
    from sw.perf.top import HEADER, KernelState, command_costs, command_cycles

    cfg = preset("tiny").replace(name="rqcache", m=4, n_max=4, pe_rows=8, pe_cols=2,
                                 max_k=256, spm_kib=8, act_buffer_depth=64)
    rng = np.random.default_rng(11)
    rows, k, tokens = 17, 43, 5
    w = rng.integers(-128, 128, (rows, k))
    pk = pack(w * nm_mask(w, 2, 4), 2, 4)
    params = bytearray(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    blob = np.concatenate([pk.values.astype(np.int8).view(np.uint8).ravel(), pk.indices.ravel()])
    params[:blob.size] = blob.tobytes()

    def records(n):
        return pack_requant(rng.integers(-1000, 1000, n), rng.integers(1 << 8, 1 << 12, n),
                            [18] * n)

    params[2048:2048 + RQ_RECORD * rows] = records(rows)
    other = records(rows)  # what the first run finds at 2048

    def pv(out, d=8, rq_off=2048):  # 2 tokens: the records take longer than the staging
        return Command(Op.PV, {"p": 3501, "p_stride": 7, "v": 902, "stride": 17,
                               "tokens": 2, "d": d, "rq_off": rq_off, "out": out,
                               "out_stride": 17})

    cmds = [Command(Op.LOAD, {"dst": 0, "src": 0, "bytes": 2048}),
            Command(Op.QK_SOFTMAX, {"q": 5, "k": 301, "stride": 13, "tokens": tokens, "d": 11,
                                    "mask": 701, "mult": 3000, "shift": 20, "p": 3501,
                                    "p_stride": 7}),
            pv(4003),  # slot 0: fetched
            pv(4203), pv(4403), pv(4603),  # slots 1 - 3: copied from the slot before
            pv(4803),  # slot 0 holds them
            Command(Op.LINEAR, {"a": 1, "a_stride": k + 2, "tokens": tokens, "k": k,
                                "rows": rows, "n": 2, "m": 4, "w_off": 0, "rq_off": 2048,
                                "out": 3001, "out_stride": 20, "out_bits": 8}),  # slots 1 - 3
            pv(5003),  # slot 0 holds them
            pv(5203, rq_off=2048 + RQ_RECORD),  # slot 1 holds the LINEAR's first block's:
            # fetched
            pv(5403, d=16),  # slot 2 holds the LINEAR's second block's: fetched
            pv(5603, d=16),  # slot 0 holds the first block's
            Command(Op.STORE, {"dst": 0, "src": 3000, "bytes": 3000}),
            Command(Op.END, {})]
    program = _program(cmds, config=cfg)
    inp = rng.integers(0, 256, 2048, dtype=np.uint8)
    inp[701:701 + tokens] = [1, 0, 1, 1, 1]  # the key mask
    costs = command_costs(cmds, cfg)
    state, uncached = KernelState(), []  # the model without the records cache
    for i, cmd in enumerate(cmds):
        state.rq_slots = [None] * 4
        uncached.append(command_cycles(cmd, cfg, i, state))
    assert [i for i, (a, b) in enumerate(zip(costs, uncached, strict=True)) if a != b] == [
        3, 4, 5, 6, 8, 11]
    out = {kind: _run_traced("ref" if kind == "ref" else "rtl", program, inp.tobytes(), cfg,
                             bytes(params), 3000, {2048: other} if kind == "rerun" else None)
           for kind in ("ref", "rtl", "rerun")}
    assert out["ref"][1] == Status.OK
    assert out["rtl"][:3] == out["ref"][:3] and out["rerun"][:3] == out["ref"][:3]
    assert out["rerun"][3].cycles == HEADER + sum(costs)
    _check_trace(out["rtl"][3], cmds, costs)


@pytest.mark.parametrize("fault", [False, True])
def test_softmax_rows_run_beside_the_next_qk_softmax_unless_it_reads_them(fault):
    """A QK_SOFTMAX's softmax rows run on after its command (3 token blocks of 8: each block
    hands its rows over, into the pending slot while the block before's run); the next
    QK_SOFTMAX starts beside them when it
    reads none of their bytes (its scores and mask go to the other buffers); one whose query
    rows, or key mask, are the previous probabilities, and STORE, wait for them. With
    ``fault``, a bad QK_SOFTMAX (d over max_k) after one running beside stops the kernel only
    once the rows before are written: the memory equals the ref backend's. Bit for bit, and
    cycle for cycle command by command."""
    from sw.perf.top import _beside

    cfg = preset("tiny").replace(name="smbeside", m=4, n_max=4, pe_rows=3, pe_cols=8,
                                 max_k=256, spm_kib=8, act_buffer_depth=64, softmax_lanes=4)
    rng = np.random.default_rng(5)
    tokens = 24

    def qk(q, k, p, d=11, mask=701, stride=13):
        return Command(Op.QK_SOFTMAX, {"q": q, "k": k, "stride": stride, "tokens": tokens,
                                       "d": d, "mask": mask, "mult": 3000, "shift": 20,
                                       "p": p, "p_stride": 25})

    cmds = [Command(Op.LOAD, {"dst": 0, "src": 0, "bytes": 2048}),
            qk(5, 301, 3001),
            qk(101, 401, 3601),  # beside
            # its queries are the last token block's probabilities before, its key mask the
            # last row of the next ones: they wait
            qk(4001, 501, 4201, d=5, stride=5),
            qk(7, 303, 4801, mask=4776)]
    if fault:
        cmds += [qk(9, 305, 5401), qk(9, 305, 6001, d=300)]  # beside, then a bad one
    cmds += [Command(Op.STORE, {"dst": 0, "src": 3000, "bytes": 3000}), Command(Op.END, {})]
    program = _program(cmds, config=cfg)
    inp = rng.integers(0, 256, 2048, dtype=np.uint8)
    inp[701:701 + tokens] = rng.integers(0, 2, tokens)
    inp[701] = 1
    out = {kind: _run_traced(kind, program, inp.tobytes(), cfg, out=3000)
           for kind in ("ref", "rtl")}
    _check_beside(out, cmds, cfg, fault, "sm_end", _beside)


@pytest.mark.parametrize("fault", [False, True])
def test_a_pv_starts_beside_softmax_rows_once_their_scores_are_written(fault):
    """A QK_SOFTMAX's softmax rows (one lane: 24 cycles a row) run on after its command; the
    next PV starts beside them once the QK's scores are all written when it reads none of
    their bytes (its results wait for the rows' writes); one whose P is those
    probabilities, and STORE, wait for them. With ``fault``, a bad PV (d over max_k) after
    the one beside stops the kernel only once the rows are written: the memory equals the
    ref backend's. Bit for bit, and cycle for cycle command by command."""
    from sw.perf.top import KernelState, _pv_beside_sm, command_cycles, fetch_cycles

    cfg = preset("tiny").replace(name="pvsm", m=4, n_max=4, pe_rows=3, pe_cols=8,
                                 max_k=256, spm_kib=8, act_buffer_depth=64, softmax_lanes=1)
    rng = np.random.default_rng(7)
    tokens = 24
    params = _pv_params(rng, 3)

    def pv(p, out, d=3):
        return Command(Op.PV, {"p": p, "p_stride": 25, "v": 1700, "stride": 7,
                               "tokens": tokens, "d": d, "rq_off": 2048, "out": out,
                               "out_stride": 7})

    cmds = [Command(Op.LOAD, {"dst": 0, "src": 0, "bytes": 2048}),
            Command(Op.QK_SOFTMAX, {"q": 5, "k": 301, "stride": 13, "tokens": tokens,
                                    "d": 11, "mask": 701, "mult": 3000, "shift": 20,
                                    "p": 3001, "p_stride": 25}),
            pv(1000, 5001)]  # beside
    cmds += [pv(1000, 5401, d=300)] if fault else [pv(3001, 5401)]  # bad / reads the rows
    cmds += [Command(Op.STORE, {"dst": 0, "src": 3000, "bytes": 3000}), Command(Op.END, {})]
    program = _program(cmds, config=cfg)
    inp = rng.integers(0, 256, 2048, dtype=np.uint8)
    inp[701:701 + tokens] = rng.integers(0, 2, tokens)
    inp[701] = 1
    out = {kind: _run_traced(kind, program, inp.tobytes(), cfg, bytes(params), 3000)
           for kind in ("ref", "rtl")}
    assert out["rtl"][:3] == out["ref"][:3]
    if fault:
        assert out["rtl"][1] == Status.BAD_SHAPE and out["rtl"][2] == 3
        return
    state, costs, running, beside = KernelState(), [], [], []
    for i, cmd in enumerate(cmds):
        running.append(state.sm_end > state.now + fetch_cycles(i, cfg) - 1)
        beside.append(_pv_beside_sm(cmd, state))
        costs.append(command_cycles(cmd, cfg, i, state))
    # the rows run from the QK's end through both PVs' fetches; only the first is beside
    assert running == [False, False, True, True, False, False]
    assert beside == [False, False, True, False, False, False]
    _check_trace(out["rtl"][3], cmds, costs)


def _qk4(q, k, p, tokens, mask=701):
    """A QK_SOFTMAX of 4-channel heads, 5 bytes apart, probabilities 16 bytes apart."""
    return Command(Op.QK_SOFTMAX, {"q": q, "k": k, "stride": 5, "tokens": tokens, "d": 4,
                                   "mask": mask, "mult": 3000, "shift": 20, "p": p,
                                   "p_stride": 16})


def test_a_qk_softmax_s_scores_go_out_while_the_next_one_runs(monkeypatch):
    """With one softmax lane a tile's scores take 4 cycles a beat to go out, so each next
    QK_SOFTMAX (other keys: 13, then 16; its command ends once its rows are handed over) has
    its first tile's sums captured while the last scores of the one before still go out:
    each tile's rows and score buffer come with it through the descriptor FIFO. Bit for
    bit, cycle for cycle command by command."""
    from sw.perf import top

    cfg = preset("tiny").replace(name="qkdrain", m=4, n_max=4, pe_rows=8, pe_cols=16,
                                 max_k=256, spm_kib=8, act_buffer_depth=64, softmax_lanes=1)

    qk = _qk4
    cmds = [Command(Op.LOAD, {"dst": 0, "src": 0, "bytes": 2048}),
            qk(5, 301, 3001, 16), qk(101, 401, 3301, 13), qk(201, 501, 3601, 16),
            Command(Op.STORE, {"dst": 0, "src": 3000, "bytes": 1000}), Command(Op.END, {})]
    # the model: a QK_SOFTMAX's first tile is captured with scores of the one before queued
    firsts, engine, capture = [], top._engine, top._Results.capture

    def engine_spy(*args, **kwargs):
        firsts.append(None)
        return engine(*args, **kwargs)

    def capture_spy(self, ready, beats, hold=-1):
        at = capture(self, ready, beats, hold)
        if firsts[-1] is None:
            firsts[-1] = bool(self.fifo or self.held)
        return at

    monkeypatch.setattr(top, "_engine", engine_spy)
    monkeypatch.setattr(top._Results, "capture", capture_spy)
    costs = top.command_costs(cmds, cfg)
    monkeypatch.undo()
    assert firsts == [False, True, True]
    program = _program(cmds, config=cfg)
    inp = np.random.default_rng(9).integers(0, 256, 2048, dtype=np.uint8)
    out = {kind: _run_traced(kind, program, inp.tobytes(), cfg, out=1000)
           for kind in ("ref", "rtl")}
    assert out["rtl"][:3] == out["ref"][:3] and out["rtl"][1] == Status.OK
    _check_trace(out["rtl"][3], cmds, costs)


def test_softmax_rows_wait_in_a_pending_slot_while_the_next_qk_softmax_runs():
    """With one softmax lane (16 cycles a row) the rows outlast a QK_SOFTMAX's tiles: the
    next QK_SOFTMAX hands its rows to the pending slot and its command ends, and they go in
    once the running rows are all in the unit, while those still drain; the one after that
    fills the score buffer the feed still reads, so its scores wait for it, and it hands its
    rows once the slot is free. Each QK_SOFTMAX has its own key mask (the mask
    buffers go round). One whose queries are the probabilities of the QK_SOFTMAX before the
    last (the rows CHECK's second range covers) waits for every row; a PV after two
    QK_SOFTMAXes waits for the pending rows to start and for their scores. Bit for bit, and
    cycle for cycle command by command."""
    from sw.perf import top

    cfg = preset("tiny").replace(name="smpend", m=4, n_max=4, pe_rows=8, pe_cols=16,
                                 max_k=256, spm_kib=8, act_buffer_depth=64, softmax_lanes=1)
    rng = np.random.default_rng(11)

    qk = _qk4
    qks = [qk(5, 301, 3001, 16, 701), qk(101, 401, 3301, 13, 731), qk(201, 501, 3601, 16, 761),
           # its queries are the second's probabilities: it waits for every row
           qk(3301, 601, 3901, 16, 791),
           qk(305, 1, 4201, 16, 821), qk(405, 101, 4501, 16, 851)]
    pv = Command(Op.PV, {"p": 1000, "p_stride": 25, "v": 1700, "stride": 7, "tokens": 16,
                         "d": 3, "rq_off": 2048, "out": 5001, "out_stride": 7})
    cmds = ([Command(Op.LOAD, {"dst": 0, "src": 0, "bytes": 2048})] + qks + [pv]
            + [Command(Op.STORE, {"dst": 0, "src": 3000, "bytes": 3000}), Command(Op.END, {})])
    # the model: which commands' rows wait in the slot when their command ends, which start
    # beside the rows before, and whether a QK's scores waited for their buffer
    capture, held = top._Results.capture, []

    def capture_spy(self, ready, beats, hold=-1):
        held.append(hold > ready)
        return capture(self, ready, beats, hold)

    state, costs, pending, beside, early = top.KernelState(), [], [], [], []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(top._Results, "capture", capture_spy)
        for i, cmd in enumerate(cmds):
            running = state.sm_end > state.now + top.fetch_cycles(i, cfg) - 1
            beside.append(running and top._beside(cmd, state))
            costs.append(top.command_cycles(cmd, cfg, i, state))
            pending.append(cmd.op == Op.QK_SOFTMAX and state.sm_prev_end > state.now)
            # its rows went in while the running rows still wrote theirs
            early.append(cmd.op == Op.QK_SOFTMAX and state.sm_in < state.sm_prev_end)
    assert pending[1:7] == [False, True, True, False, True, True]
    assert beside[1:8] == [False, True, True, False, True, True, False]
    assert any(held) and any(early)
    program = _program(cmds, config=cfg)
    inp = rng.integers(0, 256, 2048, dtype=np.uint8)
    for c in qks:  # a key mask of its own each, the first key kept
        mask, tokens = c.args["mask"], c.args["tokens"]
        inp[mask:mask + tokens] = rng.integers(0, 2, tokens)
        inp[mask] = 1
    params = _pv_params(rng, 3)
    out = {kind: _run_traced(kind, program, inp.tobytes(), cfg, params, 3000)
           for kind in ("ref", "rtl")}
    assert out["rtl"][:3] == out["ref"][:3] and out["rtl"][1] == Status.OK
    _check_trace(out["rtl"][3], cmds, costs)


@pytest.mark.parametrize("fault", [False, True])
def test_pv_results_go_out_beside_the_next_pv_unless_it_reads_them(fault):
    """A PV's last chunk's results go out after its command (3 chunks of a token block of
    16: a chunk's before the next one's staging); the next PV starts beside them when
    it reads none of their bytes; one whose P rows are those results, and STORE, wait for
    them. With ``fault``, a bad PV (d over max_k) after one running beside stops the kernel
    only once the results before are written: the memory equals the ref backend's. Bit for
    bit, and cycle for cycle command by command."""
    from sw.perf.top import _pv_beside

    cfg = preset("tiny").replace(name="pvbeside", m=4, n_max=4, pe_rows=8, pe_cols=16,
                                 max_k=48, spm_kib=8, act_buffer_depth=12)
    rng = np.random.default_rng(6)
    params = _pv_params(rng, 8)

    def pv(p, out, d=8):
        return Command(Op.PV, {"p": p, "p_stride": 50, "v": 700, "stride": 9,
                               "tokens": 48, "d": d, "rq_off": 2048, "out": out,
                               "out_stride": 9})

    cmds = [Command(Op.LOAD, {"dst": 0, "src": 0, "bytes": 2048}),
            pv(5, 3001),
            pv(105, 3501),  # beside
            pv(3924, 6401)]  # its first P row is the last results before: it waits
    if fault:
        cmds += [pv(205, 6851), pv(205, 7301, d=300)]  # beside, then a bad one
    cmds += [Command(Op.STORE, {"dst": 0, "src": 3000, "bytes": 4500}), Command(Op.END, {})]
    program = _program(cmds, config=cfg)
    inp = rng.integers(0, 256, 2048, dtype=np.uint8)
    out = {kind: _run_traced(kind, program, inp.tobytes(), cfg, bytes(params), 4500)
           for kind in ("ref", "rtl")}
    _check_beside(out, cmds, cfg, fault, "wo_end", _pv_beside)


def test_a_vector_command_reads_pv_results_beside_their_write_out():
    """Two PVs' results go out (the second PV beside the first's), then an ADD reads the
    second's rows as they are written (its rows span the results' gaps and stride) beside
    them, its writes waiting for the write-out's. Bit for bit against the ref backend, and
    cycle for cycle command by command; the model's ADD ran beside them, slower than alone."""
    from sw.perf.top import KernelState, _vector_stream, command_cycles, vector_stream_start

    cfg = preset("tiny").replace(name="pvvec", m=4, n_max=4, pe_rows=8, pe_cols=16,
                                 max_k=48, spm_kib=8, act_buffer_depth=12)
    rng = np.random.default_rng(9)
    params = _pv_params(rng, 8)

    def pv(p, out):
        return Command(Op.PV, {"p": p, "p_stride": 50, "v": 700, "stride": 9,
                               "tokens": 48, "d": 8, "rq_off": 2048, "out": out,
                               "out_stride": 9})

    cmds = [Command(Op.LOAD, {"dst": 0, "src": 0, "bytes": 2048}),
            pv(5, 3001),
            pv(105, 3501),  # beside the first's results
            Command(Op.ADD, {"a": 3501, "b": 1100, "out": 4501, "tokens": 48, "width": 9,
                             "m_a": 3, "m_b": 5, "shift": 3, "a_bits": 8, "b_bits": 8,
                             "out_bits": 8}),
            Command(Op.STORE, {"dst": 0, "src": 3000, "bytes": 2000}), Command(Op.END, {})]
    program = _program(cmds, config=cfg)
    inp = rng.integers(0, 256, 2048, dtype=np.uint8)
    out = {kind: _run_traced(kind, program, inp.tobytes(), cfg, bytes(params), 2000)
           for kind in ("ref", "rtl")}
    assert out["rtl"][:3] == out["ref"][:3] and out["ref"][1] == Status.OK
    state, costs = KernelState(), []
    for i, cmd in enumerate(cmds):
        if cmd.op == Op.ADD:  # its stream starts beside the results
            start, wo = vector_stream_start(cmd, cfg, i, state)
            assert wo is not None
            assert _vector_stream(cmd, cfg, wo, start) > _vector_stream(cmd, cfg)
        costs.append(command_cycles(cmd, cfg, i, state))
    _check_trace(out["rtl"][3], cmds, costs)


@pytest.mark.parametrize("fault", [False, True])
def test_a_linear_s_results_go_out_beside_a_vector_command_that_reads_them_as_written(fault):
    """A LINEAR's last chunk's results go out after its command; a vector command starts
    beside them: an ADD reading them (no parameters: its stream runs beside the write-out,
    gathering a row once the write-out is past it, its writes waiting for the write-out's)
    and a GELU reading other bytes (its table loads beside them). An engine command and STORE
    wait for them at CHECK. With ``fault``, a bad ADD (12-bit operand) after a LINEAR stops
    the kernel only once the LINEAR's results are written: the memory equals the ref
    backend's. Bit for bit, and cycle for cycle command by command (the model says that the
    ADD's stream ran beside them, slower than alone, and that the GELU's began after them)."""
    from sw.nm import nm_mask, pack
    from sw.perf.top import (
        KernelState,
        _vector_stream,
        command_cycles,
        fetch_cycles,
        vector_stream_start,
    )

    cfg = preset("tiny").replace(name="linbeside", pe_cols=16, max_k=64, spm_kib=8,
                                 act_buffer_depth=64)
    rng = np.random.default_rng(8)
    params = bytearray(_pv_params(rng, 8))  # records of 8 rows at 2048
    w = rng.integers(-128, 128, (8, 64))
    pk = pack(w * nm_mask(w, 2, 4), 2, 4)
    blob = np.concatenate([pk.values.astype(np.int8).view(np.uint8).ravel(), pk.indices.ravel()])
    params[:blob.size] = blob.tobytes()
    params[1024:1280] = rng.integers(0, 256, 256, dtype=np.uint8).tobytes()  # a GELU table

    def linear(out, bits=8):  # 16 tokens x 64 -> 8 rows: 2 row blocks of one tile
        return Command(Op.LINEAR, {"a": 0, "a_stride": 64, "tokens": 16, "k": 64, "rows": 8,
                                   "n": 2, "m": 4, "w_off": 0, "rq_off": 2048, "out": out,
                                   "out_stride": 8 * bits // 8, "out_bits": bits, "gelu": 0,
                                   "table_off": 0})

    def add(a, out, a_bits=8):
        return Command(Op.ADD, {"a": a, "b": 600, "out": out, "tokens": 16, "width": 8,
                                "m_a": 3, "m_b": 5, "shift": 3, "a_bits": a_bits,
                                "b_bits": 8, "out_bits": 8})

    cmds = [Command(Op.LOAD, {"dst": 0, "src": 0, "bytes": 1024}),
            linear(1024),
            add(1024, 1200),  # reads the results: its rows as they are written
            linear(1400, 16),
            Command(Op.GELU, {"src": 600, "dst": 1700, "tokens": 2, "width": 64,
                              "table_off": 1024}),  # other bytes: its table loads beside
            linear(1900)]
    if fault:
        cmds += [add(1900, 2100, a_bits=12)]
    cmds += [Command(Op.STORE, {"dst": 0, "src": 1024, "bytes": 1200}), Command(Op.END, {})]
    program = _program(cmds, config=cfg)
    inp = rng.integers(0, 256, 1024, dtype=np.uint8)
    out = {kind: _run_traced(kind, program, inp.tobytes(), cfg, bytes(params), 1200)
           for kind in ("ref", "rtl")}
    assert out["rtl"][:3] == out["ref"][:3]
    if fault:
        assert out["rtl"][1] == Status.BAD_SHAPE and out["rtl"][2] == len(cmds) - 3
        return
    assert out["ref"][1] == Status.OK
    state, costs, beside, slowed = KernelState(), [], {}, {}
    for i, cmd in enumerate(cmds):
        if cmd.op in (Op.ADD, Op.GELU):
            check = state.now + fetch_cycles(i, cfg) - 1  # its CHECK cycle, if nothing waits
            beside[i] = state.wo_end > check
            start, wo = vector_stream_start(cmd, cfg, i, state)
            if wo is not None:  # its stream beside them, against its stream alone
                slowed[i] = _vector_stream(cmd, cfg, wo, start) - _vector_stream(cmd, cfg)
        costs.append(command_cycles(cmd, cfg, i, state))
    # the ADD's gather waited for the rows it reads, the GELU's stream started after them
    assert beside == {2: True, 4: True} and slowed.keys() == {2} and slowed[2] > 0, (
        beside, slowed)
    _check_trace(out["rtl"][3], cmds, costs)


@pytest.mark.parametrize("M, nm, spm, P", [(8, (3, 8), 1, 4), (4, (1, 4), 1, 4),
                                           (4, (2, 4), 2, 8)])
def test_linear_pv_qk_with_odd_offsets_and_strides_match_the_ref_backend(M, nm, spm, P):
    """Single engine commands whose rows start mid-word everywhere (activations, weights,
    indices, results, key rows, P rows): the realigning staging and the word-wide result
    write-out (also through LINEAR's GELU table) against the ref backend, bit for bit, and the
    kernel model, cycle for cycle."""
    from sw.nm import nm_mask, pack
    from sw.perf.top import program_cycles

    cfg = preset("tiny").replace(name=f"odd{M}s{spm}p{P}", m=M, n_max=M, pe_rows=3,
                                 pe_cols=2, max_k=256, spm_kib=8, act_buffer_depth=64,
                                 spm_lanes=spm, softmax_lanes=P)
    rng = np.random.default_rng(M)
    n, _ = nm
    rows, k, tokens = 7, 43, 5
    w = rng.integers(-128, 128, (rows, k))
    pk = pack(w * nm_mask(w, n, M), n, M)
    params = bytearray(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    blob = np.concatenate([pk.values.astype(np.int8).view(np.uint8).ravel(), pk.indices.ravel()])
    w_off = 3
    params[w_off:w_off + blob.size] = blob.tobytes()
    rq = pack_requant(rng.integers(-1000, 1000, rows), rng.integers(1 << 8, 1 << 12, rows),
                      [18] * rows)
    params[2048:2048 + len(rq)] = rq
    cmds = [Command(Op.LOAD, {"dst": 0, "src": 0, "bytes": 2048}),
            Command(Op.LINEAR, {"a": 1, "a_stride": k + 2, "tokens": tokens, "k": k,
                                "rows": rows, "n": n, "m": M, "w_off": w_off,
                                "rq_off": 2048, "out": 3001, "out_stride": 9, "out_bits": 8}),
            # the same through a GELU table (random bytes: any 256 int8 values are a table)
            Command(Op.LINEAR, {"a": 1, "a_stride": k + 2, "tokens": tokens, "k": k,
                                "rows": rows, "n": n, "m": M, "w_off": w_off,
                                "rq_off": 2048, "out": 3103, "out_stride": 8, "out_bits": 8,
                                "gelu": 1, "table_off": 1024 + 4 * M}),
            Command(Op.QK_SOFTMAX, {"q": 5, "k": 301, "stride": 13, "tokens": tokens, "d": 11,
                                    "mask": 701, "mult": 3000, "shift": 20, "p": 3501,
                                    "p_stride": 7}),
            Command(Op.PV, {"p": 3501, "p_stride": 7, "v": 902, "stride": 9, "tokens": tokens,
                            "d": 6, "rq_off": 2048, "out": 4003, "out_stride": 11}),
            Command(Op.STORE, {"dst": 0, "src": 3000, "bytes": 1200}),
            Command(Op.END, {})]
    program = _program(cmds, config=cfg)
    inp = rng.integers(0, 256, 2048, dtype=np.uint8)
    inp[701:701 + tokens] = [1, 1, 0, 1, 1]  # the key mask
    out = {kind: _run_traced(kind, program, inp.tobytes(), cfg, bytes(params), 1200)
           for kind in ("ref", "rtl")}
    assert out["ref"][1] == Status.OK and out["rtl"][:3] == out["ref"][:3]
    commands = Program.from_bytes(program).commands
    assert out["rtl"][3].cycles == program_cycles(commands, cfg)
    # command by command: the cycle counter when each command was fetched (the bench's trace)
    from sw.perf.top import command_costs

    _check_trace(out["rtl"][3], commands, command_costs(commands, cfg))
