"""Run a Program on device memory with the ``sw/ref`` integer ops: the golden command processor.

This is the ``ref`` backend's engine and the oracle the RTL top is checked against: it decodes
the Program exactly as the hardware does (header, then one command at a time), applies
:func:`sw.compiler.isa.check_command` before each command, and stops with the same
:class:`~sw.compiler.isa.Status` and command index the hardware reports. A command that fails
its check writes nothing. Cycles are the kernel's as built (:mod:`sw.perf.top`, equal to the
RTL's counter on every run that ends with END); :func:`command_cycles` is the blocks' target.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from hw.config import AcceleratorConfig
from sw.compiler.isa import (
    CMD_WORDS,
    FIELDS,
    HEADER_WORDS,
    LN_RECORD,
    MAGIC,
    RQ_RECORD,
    VERSION,
    WEIGHT_BANKS,
    Command,
    Op,
    Status,
    buffers,
    check_command,
    config_fingerprint,
    unpack_requant,
)
from sw.compiler.weight_layout import read_weights
from sw.ref.gelu import GeluParams, gelu_int
from sw.ref.gemm import dense_gemm_int, spmm_int
from sw.ref.layernorm import LayerNormParams, layernorm_int
from sw.ref.quant import AddParams, RequantParams, add_int, requantize_int
from sw.ref.softmax import SoftmaxParams, softmax_int

__all__ = ["execute", "command_cycles"]


def _dtype(bits: int, unsigned: bool = False):
    return {8: np.uint8 if unsigned else np.int8, 16: np.dtype("<i2")}[bits]


class _Spm:
    def __init__(self, data: bytearray):
        self.data = data

    def rows(self, addr, rows, stride, width, bits=8, unsigned=False) -> np.ndarray:
        dt = np.dtype(_dtype(bits, unsigned))
        if stride == width * dt.itemsize:
            flat = np.frombuffer(self.data, dt, count=rows * width, offset=addr)
            return flat.reshape(rows, width).astype(np.int64)
        out = np.empty((rows, width), np.int64)
        for r in range(rows):
            out[r] = np.frombuffer(self.data, dt, count=width, offset=addr + r * stride)
        return out

    def put_rows(self, addr, stride, arr: np.ndarray, bits=8, unsigned=False) -> None:
        dt = np.dtype(_dtype(bits, unsigned))
        raw = np.ascontiguousarray(arr.astype(dt))
        nb = raw.shape[1] * dt.itemsize
        if stride == nb:
            self.data[addr: addr + raw.nbytes] = raw.tobytes()
            return
        for r in range(raw.shape[0]):
            a = addr + r * stride
            self.data[a: a + nb] = raw[r].tobytes()


def _requant(raw: bytes, channels: int, out_bits: int) -> RequantParams:
    bias, mult, shift = unpack_requant(raw, channels)
    return RequantParams(m=mult, s=shift, bias=bias, real=np.full(channels, math.nan),
                         out_bits=out_bits)


def command_cycles(cmd: Command, config: AcceleratorConfig) -> int:
    """Cycles of one command run alone, from the blocks' exact cycle models (no overlap
    between commands; LOAD/STORE at one ``pe_cols``-byte beat per cycle)."""
    from hw.vector.residual_add import ResidualAdd
    from sw.perf.engine import GemmShape, gemm_cycles
    from sw.perf.vector import layernorm_cycles, softmax_cycles

    a, m = cmd.args, config.m
    if cmd.op in (Op.LOAD, Op.STORE):
        return -(-a["bytes"] // config.pe_cols)
    if cmd.op == Op.LINEAR:  # (with gelu, its table first, like a LOAD of 256 bytes)
        return (gemm_cycles(config, GemmShape(a["rows"], a["k"], a["tokens"], a["n"], a["m"]))
                + (-(-256 // config.pe_cols) if a["gelu"] else 0))
    if cmd.op == Op.QK_SOFTMAX:
        return (gemm_cycles(config, GemmShape(a["tokens"], a["d"], a["tokens"], m, m))
                + softmax_cycles(config, [a["tokens"]] * a["tokens"]))
    if cmd.op == Op.PV:
        return gemm_cycles(config, GemmShape(a["d"], a["tokens"], a["tokens"], m, m))
    if cmd.op == Op.LAYERNORM:
        return layernorm_cycles(config, [a["hidden"]] * a["tokens"], a["in_bits"])
    if cmd.op == Op.ADD_LAYERNORM:  # the sums stream into the LayerNorm behind the adder
        return (layernorm_cycles(config, [a["hidden"]] * a["tokens"], a["in_bits"])
                + ResidualAdd.LATENCY)
    if cmd.op in (Op.ADD, Op.GELU):
        return a["tokens"] * -(-a["width"] // config.vector_lanes)
    return 1


def execute(config: AcceleratorConfig, mem: dict[str, memoryview], spm: bytearray,
            ) -> tuple[Status, int, str, dict[str, int]]:
    """Run the Program in ``mem["program"]``; ``mem`` maps ``program``, ``params``, ``input``,
    ``output`` (and the weight banks, :func:`sw.compiler.isa.buffers`) to their bytes
    (``output`` writable). Returns ``(status, command index, detail,
    kernel cycles by opcode)``, the header's under ``"HEADER"`` (:mod:`sw.perf.top`; exact
    for runs that end with END, the commands that ran for the others)."""
    from sw.perf import top

    prog = mem["program"]
    sizes = {k: len(mem[k]) for k in buffers(config) if k != "program"}
    per_op: dict[str, int] = {"HEADER": top.header_cycles(config)}
    if len(prog) < 4 * HEADER_WORDS:
        return Status.BAD_HEADER, -1, "program buffer shorter than the header", per_op
    magic, version, count, fp = struct.unpack_from("<4I", prog)
    if magic != MAGIC or version != VERSION:
        return Status.BAD_HEADER, -1, f"magic {magic:#x} / version {version}", per_op
    if fp != config_fingerprint(config):
        return (Status.BAD_HEADER, -1, f"compiled for another config (fingerprint {fp:#x}, "
                f"this device {config_fingerprint(config):#x})", per_op)
    if 4 * (HEADER_WORDS + count * CMD_WORDS) > len(prog):
        return Status.BAD_HEADER, -1, f"{count} commands overrun the program buffer", per_op
    s = _Spm(spm)
    state = top.KernelState()  # what each command leaves for the next (the records cache)
    for i in range(count):
        w = struct.unpack_from(f"<{CMD_WORDS}I", prog, 4 * (HEADER_WORDS + i * CMD_WORDS))
        try:
            op = Op(w[0])
        except ValueError:
            return Status.BAD_OPCODE, i, f"unknown opcode {w[0]}", per_op
        if op == Op.END:
            per_op["END"] = top.command_cycles(Command(op, {}), config, i)
            return Status.OK, i, "", per_op
        cmd = Command(op, dict(zip(FIELDS[op], w[1:], strict=False)))
        bad = check_command(cmd, config, sizes)
        if bad:
            return bad[0], i, f"{op.name}: {bad[1]}", per_op
        _run(cmd, s, mem, config)
        per_op[op.name] = per_op.get(op.name, 0) + top.command_cycles(cmd, config, i, state)
    return Status.NO_END, count, "the commands ran out without END", per_op


def _gelu_table(params, off: int) -> GeluParams:
    table = np.frombuffer(params, np.int8, count=256, offset=off)
    return GeluParams(table=table.astype(np.int64), scale_in=math.nan, scale_out=math.nan)


def _add(a: dict, s: _Spm, W: int) -> np.ndarray:
    """ADD's (or ADD_LAYERNORM's) sums of ``tokens`` rows of ``W`` elements, in ``out_bits``
    (ADD_LAYERNORM: ``in_bits``)."""
    L = a["tokens"]
    x = s.rows(a["a"], L, W * a["a_bits"] // 8, W, a["a_bits"])
    y = s.rows(a["b"], L, W * a["b_bits"] // 8, W, a["b_bits"])
    p = AddParams(m_a=a["m_a"], m_b=a["m_b"], shift=a["shift"], scale_a=math.nan,
                  scale_b=math.nan, scale_out=math.nan, a_bits=a["a_bits"],
                  b_bits=a["b_bits"], out_bits=a.get("out_bits", a.get("in_bits")))
    return add_int(x, y, p)


def _layernorm(x: np.ndarray, a: dict, mem) -> np.ndarray:
    """LAYERNORM's (or ADD_LAYERNORM's) int8 output for ``x`` with the command's records."""
    H = a["hidden"]
    raw = bytes(mem["params"][a["params_off"]: a["params_off"] + H * LN_RECORD])
    rec = np.frombuffer(raw, "<i8").reshape(H, 2).astype(np.int64)
    nan = np.full(H, math.nan)
    p = LayerNormParams(hidden=H, gain=rec[:, 0], offset=rec[:, 1], eps_int=a["eps_int"],
                        scale_in=math.nan, scale_out=math.nan, gamma=nan, beta=nan,
                        eps=math.nan, in_bits=a["in_bits"], sqrt_frac=a["sqrt_frac"])
    return layernorm_int(x, p)


def _run(cmd: Command, s: _Spm, mem,  # noqa: C901 - one branch per opcode
         config: AcceleratorConfig) -> None:
    a = cmd.args
    L = a.get("tokens", 0)
    if cmd.op == Op.LOAD:
        s.data[a["dst"]: a["dst"] + a["bytes"]] = mem["input"][a["src"]: a["src"] + a["bytes"]]
    elif cmd.op == Op.STORE:
        mem["output"][a["dst"]: a["dst"] + a["bytes"]] = s.data[a["src"]: a["src"] + a["bytes"]]
    elif cmd.op == Op.LINEAR:
        rows = a["rows"]
        params = mem["params"]
        banks = [params] + [mem[b] for b in WEIGHT_BANKS[:config.weight_ports - 1]]
        w = read_weights(params if len(banks) == 1 else banks, a["w_off"], rows, a["k"],
                         a["n"], a["m"], config)
        rq = _requant(bytes(params[a["rq_off"]: a["rq_off"] + rows * RQ_RECORD]), rows,
                      a["out_bits"])
        x = s.rows(a["a"], L, a["a_stride"], a["k"])
        y = requantize_int(spmm_int(x, w), rq)
        if a["gelu"]:
            y = gelu_int(y, _gelu_table(mem["params"], a["table_off"]))
        s.put_rows(a["out"], a["out_stride"], y, a["out_bits"])
    elif cmd.op == Op.QK_SOFTMAX:
        q = s.rows(a["q"], L, a["stride"], a["d"])
        k = s.rows(a["k"], L, a["stride"], a["d"])
        mask = np.frombuffer(s.data, np.uint8, count=L, offset=a["mask"]) != 0
        p = softmax_int(dense_gemm_int(q, k), SoftmaxParams(a["mult"], a["shift"], math.nan),
                        mask[None, :])
        s.put_rows(a["p"], a["p_stride"], p, unsigned=True)
    elif cmd.op == Op.PV:
        p = s.rows(a["p"], L, a["p_stride"], L, unsigned=True)
        v = s.rows(a["v"], L, a["stride"], a["d"])
        rq = _requant(bytes(mem["params"][a["rq_off"]: a["rq_off"] + a["d"] * RQ_RECORD]),
                      a["d"], 8)
        ctx = requantize_int(dense_gemm_int(p, v.T, a_unsigned=True), rq)
        s.put_rows(a["out"], a["out_stride"], ctx)
    elif cmd.op == Op.ADD:
        s.put_rows(a["out"], a["width"] * a["out_bits"] // 8, _add(a, s, a["width"]),
                   a["out_bits"])
    elif cmd.op == Op.LAYERNORM:
        H = a["hidden"]
        x = s.rows(a["src"], L, H * a["in_bits"] // 8, H, a["in_bits"])
        s.put_rows(a["dst"], H, _layernorm(x, a, mem))
    elif cmd.op == Op.ADD_LAYERNORM:  # the sum as ADD with out_bits = in_bits would write it
        s.put_rows(a["dst"], a["hidden"], _layernorm(_add(a, s, a["hidden"]), a, mem))
    elif cmd.op == Op.GELU:
        W = a["width"]
        x = s.rows(a["src"], L, W, W)
        s.put_rows(a["dst"], W, gelu_int(x, _gelu_table(mem["params"], a["table_off"])))
