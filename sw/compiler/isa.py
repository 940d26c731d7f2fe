"""The Program format: what the compiler emits and every device backend runs.

A Program lives in its own device-memory buffer: a header of :data:`HEADER_WORDS` 32-bit
little-endian words followed by fixed-size commands of :data:`CMD_WORDS` words each.

```
header:  magic 'NMAP' | version | command count | config fingerprint (CRC-32 of its JSON)
command: word 0 = opcode, words 1.. = the opcode's fields, one 32-bit word each, in the
         order of FIELDS[opcode]; unused words are zero
```

One field per word keeps the command processor's decoder trivial (field ``i`` is word
``i + 1``) and lets the hardware decoder be generated from :data:`FIELDS`.

Operands live in these places (buffers the host declares when it starts a run, and the
scratchpad):

* ``program`` (read-only): this buffer;
* ``params`` (read-only): packed weights, requantizers, LayerNorm gains, GELU tables;
  command fields ending in ``_off`` are byte offsets into it;
* ``input`` (read-only) and ``output`` (write-only): activations in and out, used by
  ``LOAD`` and ``STORE`` only (``src`` / ``dst`` are byte offsets into them);
* with several weight ports (``config.weight_ports = P > 1``), ``params1`` ..
  ``params<P-1>`` (read-only, :data:`WEIGHT_BANKS`): the other ports' banks of LINEAR
  weights, each at the LINEAR's ``w_off`` (:mod:`sw.compiler.weight_layout`);
* the on-chip scratchpad (``AcceleratorConfig.spm_bytes``): every other address field is a
  byte address in it; tensors are row-major with a row stride in bytes.

A command that names an unknown opcode, reaches outside a declared buffer or the scratchpad,
or has a shape the config cannot run stops the device with a :class:`Status` (and the index of
the command) instead of running it: backends check exactly :func:`check_command`.
"""

from __future__ import annotations

import operator
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from sw.ref.fixedpoint import MAX_SHIFT, MULT_BITS
from sw.ref.quant import ADD_MULT_BITS

__all__ = ["Op", "Status", "FIELDS", "DEFAULTS", "Command", "Program", "ProgramError",
           "HEADER_WORDS", "CMD_WORDS", "MAGIC", "VERSION", "config_fingerprint", "RQ_RECORD",
           "RQ_WORDS", "RQ_SHIFT_BIT", "pack_requant", "unpack_requant", "LN_RECORD",
           "check_command", "check_shape", "footprint", "linear_param_bytes", "REGISTERS",
           "BUFFERS", "WEIGHT_BANKS", "buffers"]

MAGIC = 0x50414D4E  # b"NMAP" little-endian
#: 2: ADD_LAYERNORM (opcode 9); 3: with a weight port, LINEAR weights entry by entry (an
#: entry's values, then its index words: sw.compiler.weight_layout), so a kernel built for
#: the old layout cannot read a new Program's params as garbage; 4: requantizer records of 8
#: bytes (:data:`RQ_RECORD`). A kernel refuses a Program of another version at its header
VERSION = 4
HEADER_WORDS = 4
CMD_WORDS = 16
#: Bytes per output channel of a requantizer in ``params``, two little-endian 32-bit words:
#: the bias (int32), then the multiplier in bits 0..14 and the shift in bits 16..21
#: (:func:`pack_requant`; the other bits are zero, and readers ignore them)
RQ_RECORD = 8
RQ_WORDS = RQ_RECORD // 4  #: 32-bit words of a requantizer record
#: the bit of a record's second word where the shift starts
RQ_SHIFT_BIT = 16
#: Bytes per channel of LayerNorm parameters: gain, offset (int64 each; the hardware keeps
#: GAIN_BITS and OFFSET_BITS of them, see sw.ref.layernorm).
LN_RECORD = 16


def pack_requant(bias, mult, shift) -> bytes:
    """Requantizer records (:data:`RQ_RECORD` bytes a channel) of per-channel ``bias``
    (int32), ``mult`` (``0 <= mult < 2**MULT_BITS``) and ``shift`` (``0..MAX_SHIFT``);
    a value out of its range raises ``ValueError`` naming it."""
    b, m, s = (np.asarray(v, np.int64).reshape(-1) for v in (bias, mult, shift))
    if not len(b) == len(m) == len(s):
        raise ValueError(f"requantizer records: {len(b)} biases, {len(m)} multipliers and "
                         f"{len(s)} shifts")
    for name, v, lo, hi in (("bias", b, -(2**31), 2**31 - 1), ("multiplier", m, 0,
                            2**MULT_BITS - 1), ("shift", s, 0, MAX_SHIFT)):
        if v.size and (v.min() < lo or v.max() > hi):
            raise ValueError(f"requantizer {name} out of range {lo}..{hi}: "
                             f"{v.min()}..{v.max()}")
    rec = np.empty((len(b), RQ_WORDS), "<u4")
    rec[:, 0] = b.astype("<i4").view("<u4")
    rec[:, 1] = m | (s << RQ_SHIFT_BIT)
    return rec.tobytes()


def unpack_requant(raw: bytes, channels: int):
    """``(bias, mult, shift)`` int64 arrays of ``channels`` records from ``raw`` (at least
    ``channels * RQ_RECORD`` bytes), read as the hardware reads them: the bias's 32 bits,
    the multiplier's :data:`~sw.ref.fixedpoint.MULT_BITS` and the shift's 6 (other bits
    ignored)."""
    w = np.frombuffer(raw, "<u4", count=RQ_WORDS * channels).reshape(channels, RQ_WORDS)
    w = w.astype(np.int64)
    bias = w[:, 0] - ((w[:, 0] >> 31) << 32)
    mult = w[:, 1] & ((1 << MULT_BITS) - 1)
    shift = (w[:, 1] >> RQ_SHIFT_BIT) & ((1 << MAX_SHIFT.bit_length()) - 1)
    return bias, mult, shift


class Op(IntEnum):
    END = 0
    LOAD = 1  # input[src : src+bytes] -> spm[dst]
    STORE = 2  # spm[src : src+bytes] -> output[dst]
    LINEAR = 3  # N:M weights (params) x activations (spm) -> requantized (spm)
    QK_SOFTMAX = 4  # per head: softmax(q . k^T, key mask) -> uint8 probabilities
    PV = 5  # per head: probabilities . v -> requantized int8 context
    ADD = 6  # residual add, int8/int16 in and out
    LAYERNORM = 7
    GELU = 8  # 256-entry int8 table from params
    ADD_LAYERNORM = 9  # LAYERNORM of an ADD's sum, the sum never stored


#: The kernel's AXI4-Lite control registers (byte offsets; Vitis RTL-kernel convention: CTRL at
#: 0x00 with ap_start = bit 0, ap_done = bit 1 (cleared on read), ap_idle = bit 2). Each buffer
#: argument is a 64-bit address (lo, hi) and a 32-bit size in bytes.
REGISTERS = {
    "CTRL": 0x00, "STATUS": 0x10, "COMMAND": 0x14, "CYCLES": 0x18,
    "PROGRAM_LO": 0x20, "PROGRAM_HI": 0x24, "PROGRAM_SIZE": 0x28,
    "PARAMS_LO": 0x30, "PARAMS_HI": 0x34, "PARAMS_SIZE": 0x38,
    "INPUT_LO": 0x40, "INPUT_HI": 0x44, "INPUT_SIZE": 0x48,
    "OUTPUT_LO": 0x50, "OUTPUT_HI": 0x54, "OUTPUT_SIZE": 0x58,
    "PARAMS1_LO": 0x60, "PARAMS1_HI": 0x64, "PARAMS1_SIZE": 0x68,
    "PARAMS2_LO": 0x70, "PARAMS2_HI": 0x74, "PARAMS2_SIZE": 0x78,
    "PARAMS3_LO": 0x80, "PARAMS3_HI": 0x84, "PARAMS3_SIZE": 0x88,
}
#: The buffer arguments every kernel has, in register order.
BUFFERS = ("program", "params", "input", "output")
#: The weight banks of weight ports 1, 2, 3 (a kernel has ``config.weight_ports - 1`` of them).
WEIGHT_BANKS = ("params1", "params2", "params3")


def buffers(config) -> tuple[str, ...]:
    """The buffer arguments of ``config``'s kernel, in register order."""
    return BUFFERS + WEIGHT_BANKS[:config.weight_ports - 1]


class Status(IntEnum):
    """The device's status register after a run (0 = finished cleanly)."""

    OK = 0
    BAD_HEADER = 1  # magic, version or command count does not fit the program buffer
    BAD_OPCODE = 2
    OUT_OF_BUFFER = 3  # a params/input/output range outside the declared buffer
    OUT_OF_SPM = 4  # a scratchpad range outside the scratchpad
    BAD_SHAPE = 5  # a shape or N:M the config cannot run
    NO_END = 6  # the commands ran out without END
    TIMEOUT = 7  # set by a driver that gave up waiting, never by the hardware
    BUS_ERROR = 9  # device memory answered an access with an AXI error response


#: The fields of each opcode, in word order (word 1 onwards). Widths are 32 bits.
FIELDS: dict[Op, tuple[str, ...]] = {
    Op.END: (),
    Op.LOAD: ("dst", "src", "bytes"),
    Op.STORE: ("dst", "src", "bytes"),
    # a [tokens, k] int8 at a (row stride a_stride); weights rows x k, N:M, at w_off (values
    # int8 [rows, ceil(k/m)*n] then bit-packed indices unless n == m); requantizer records at
    # rq_off; out [tokens, rows] of out_bits at out (row stride out_stride). gelu = 1 (int8
    # out only): each result then goes through the 256-entry int8 table at table_off on its way
    # out, as GELU would (the FFN's first Linear and its GELU in one command).
    Op.LINEAR: ("a", "a_stride", "tokens", "k", "rows", "n", "m", "w_off", "rq_off", "out",
                "out_stride", "out_bits", "gelu", "table_off"),
    # q, k: [tokens, d] int8 (stride); mask: one byte per key (1 = attend); p: [tokens, tokens]
    # uint8 (row stride p_stride); softmax multiplier and shift inline.
    Op.QK_SOFTMAX: ("q", "k", "stride", "tokens", "d", "mask", "mult", "shift", "p",
                    "p_stride"),
    # p: [tokens, tokens] uint8; v: [tokens, d] int8; out [tokens, d] int8 via d requantizers.
    Op.PV: ("p", "p_stride", "v", "stride", "tokens", "d", "rq_off", "out", "out_stride"),
    # out = sat(round_shift(a * m_a + b * m_b, shift)); elements are int8 or int16 by *_bits.
    Op.ADD: ("a", "b", "out", "tokens", "width", "m_a", "m_b", "shift", "a_bits", "b_bits",
             "out_bits"),
    Op.LAYERNORM: ("src", "dst", "tokens", "hidden", "in_bits", "params_off", "eps_int",
                   "sqrt_frac"),
    Op.GELU: ("src", "dst", "tokens", "width", "table_off"),
    # dst = LAYERNORM(sum), sum = ADD(a, b) saturated to in_bits: the residual add and its
    # LayerNorm in one pass over the scratchpad (words 1..10 as ADD's, then LAYERNORM's)
    Op.ADD_LAYERNORM: ("a", "b", "dst", "tokens", "hidden", "m_a", "m_b", "shift", "a_bits",
                       "b_bits", "in_bits", "params_off", "eps_int", "sqrt_frac"),
}
#: Fields a :class:`Command` may leave out, and the value they then take (a Program written
#: before the field existed has zero there, which means the same).
DEFAULTS: dict[Op, dict[str, int]] = {Op.LINEAR: {"gelu": 0, "table_off": 0}}


class ProgramError(ValueError):
    """A Program that cannot be decoded (the message names the word or command)."""


@dataclass(frozen=True)
class Command:
    op: Op
    args: dict[str, int]

    def __post_init__(self):
        op = self.op
        if isinstance(op, bool) or not isinstance(op, int):
            raise ProgramError(f"opcode {op!r}: must be an Op (or its int value)")
        try:
            object.__setattr__(self, "op", Op(op))
        except ValueError:
            raise ProgramError(f"unknown opcode {op}; known: "
                               f"{', '.join(f'{o.value} = {o.name}' for o in Op)}") from None
        if not isinstance(self.args, dict):
            raise ProgramError(f"{self.op.name} fields must be a dict of name -> int, "
                               f"got {type(self.args).__name__}")
        want = FIELDS[self.op]
        object.__setattr__(self, "args", {**DEFAULTS.get(self.op, {}), **self.args})
        if set(self.args) != set(want):
            raise ProgramError(f"{self.op.name} takes fields {list(want)}, "
                               f"got {sorted(self.args)}")
        for name, v in self.args.items():
            if not isinstance(v, int) or not 0 <= v < 2**32:
                raise ProgramError(f"{self.op.name}.{name} = {v!r} does not fit 32 bits")

    def __getattr__(self, name):
        try:
            return self.__dict__["args"][name]
        except KeyError:
            raise AttributeError(name) from None

    def words(self) -> list[int]:
        w = [int(self.op)] + [self.args[f] for f in FIELDS[self.op]]
        return w + [0] * (CMD_WORDS - len(w))

    def __str__(self) -> str:
        return f"{self.op.name} " + " ".join(f"{k}={v}" for k, v in self.args.items())


def config_fingerprint(config) -> int:
    """CRC-32 of the config's JSON: a Program runs only on the config it was compiled for."""
    return zlib.crc32(config.to_json().encode())


@dataclass(frozen=True)
class Program:
    commands: tuple[Command, ...]
    fingerprint: int

    def __post_init__(self):
        try:
            object.__setattr__(self, "commands", tuple(self.commands))
        except TypeError:
            raise ProgramError(f"commands must be a sequence of Command, got "
                               f"{type(self.commands).__name__}") from None
        for i, c in enumerate(self.commands):
            if not isinstance(c, Command):
                raise ProgramError(f"command {i} is a {type(c).__name__}, not a Command")
        fp = self.fingerprint
        try:
            if isinstance(fp, bool):
                raise TypeError
            fp = operator.index(fp)  # an int, or numpy's
        except TypeError:
            raise ProgramError(f"fingerprint = {fp!r}: must be an int (the config's CRC-32)") \
                from None
        if not 0 <= fp < 2**32:
            raise ProgramError(f"fingerprint = {fp}: must be a 32-bit CRC (0 <= f < 2**32)")
        object.__setattr__(self, "fingerprint", fp)

    def to_bytes(self) -> bytes:
        if not self.commands or self.commands[-1].op != Op.END:
            raise ProgramError("a Program must end with END")
        words = [MAGIC, VERSION, len(self.commands), self.fingerprint]
        for c in self.commands:
            words += c.words()
        return struct.pack(f"<{len(words)}I", *words)

    @classmethod
    def from_bytes(cls, data: bytes) -> Program:
        """Decode (host side, strict): every problem is a :class:`ProgramError` naming it."""
        try:
            data = bytes(memoryview(data))  # bytes, bytearray, memoryview, numpy arrays
        except TypeError:
            raise ProgramError(f"a Program decodes from bytes, got {type(data).__name__}") \
                from None
        if len(data) < 4 * HEADER_WORDS or len(data) % 4:
            raise ProgramError(f"a Program is whole 32-bit words with a {HEADER_WORDS}-word "
                               f"header; got {len(data)} bytes")
        magic, version, count, fp = struct.unpack_from("<4I", data)
        if magic != MAGIC:
            raise ProgramError(f"not an nmaccel Program: magic {magic:#010x}, want {MAGIC:#010x}")
        if version != VERSION:
            raise ProgramError(f"Program version {version}, this build reads {VERSION}")
        body = (len(data) - 4 * HEADER_WORDS) // 4
        if count * CMD_WORDS != body:
            raise ProgramError(f"header says {count} commands ({count * CMD_WORDS} words), "
                               f"the body has {body} words: truncated or corrupt")
        commands = []
        for i in range(count):
            w = struct.unpack_from(f"<{CMD_WORDS}I", data, 4 * (HEADER_WORDS + i * CMD_WORDS))
            try:
                op = Op(w[0])
            except ValueError:
                raise ProgramError(f"command {i}: unknown opcode {w[0]}") from None
            names = FIELDS[op]
            if any(w[1 + len(names):]):
                raise ProgramError(f"command {i} ({op.name}): non-zero unused words")
            commands.append(Command(op, dict(zip(names, w[1:], strict=False))))
        if not commands or commands[-1].op != Op.END:
            raise ProgramError("the Program does not end with END")
        return cls(tuple(commands), fp)

    def __len__(self) -> int:
        return len(self.commands)


# -- the checks every backend applies before running a command -------------------------------
def _span(base: int, rows: int, stride: int, row_bytes: int) -> tuple[int, int]:
    """``[start, end)`` of ``rows`` rows of ``row_bytes`` bytes, ``stride`` apart."""
    return base, base + (rows - 1) * stride + row_bytes


def linear_param_bytes(rows: int, k: int, n: int, m: int, config) -> tuple[int, int]:
    """Bytes of a LINEAR's weights in ``config``'s layout
    (:func:`sw.compiler.weight_layout.linear_weight_bytes`) and of its requantizers."""
    from sw.compiler.weight_layout import linear_weight_bytes

    return linear_weight_bytes(rows, k, n, m, config), rows * RQ_RECORD


def footprint(cmd: Command, config) -> dict[str, list[tuple[int, int]]]:
    """The byte ranges a command reads or writes on ``config``, by memory (``spm``,
    ``params``, ``input``, ``output``, the weight banks). Assumes :func:`check_shape`
    passed."""
    a = cmd.args
    spm: list[tuple[int, int]] = []
    out: dict[str, list[tuple[int, int]]] = {"spm": spm, "params": [], "input": [],
                                             "output": []}
    banks = WEIGHT_BANKS[:config.weight_ports - 1]
    for b in banks:
        out[b] = []
    if cmd.op == Op.LOAD:
        out["input"].append((a["src"], a["src"] + a["bytes"]))
        spm.append((a["dst"], a["dst"] + a["bytes"]))
    elif cmd.op == Op.STORE:
        spm.append((a["src"], a["src"] + a["bytes"]))
        out["output"].append((a["dst"], a["dst"] + a["bytes"]))
    elif cmd.op == Op.LINEAR:
        spm.append(_span(a["a"], a["tokens"], a["a_stride"], a["k"]))
        spm.append(_span(a["out"], a["tokens"], a["out_stride"], a["rows"] * a["out_bits"] // 8))
        w, rq = linear_param_bytes(a["rows"], a["k"], a["n"], a["m"], config)
        out["params"] += [(a["w_off"], a["w_off"] + w), (a["rq_off"], a["rq_off"] + rq)]
        for b in banks:
            out[b].append((a["w_off"], a["w_off"] + w))
        if a["gelu"]:
            out["params"].append((a["table_off"], a["table_off"] + 256))
    elif cmd.op == Op.QK_SOFTMAX:
        spm.append(_span(a["q"], a["tokens"], a["stride"], a["d"]))
        spm.append(_span(a["k"], a["tokens"], a["stride"], a["d"]))
        spm.append((a["mask"], a["mask"] + a["tokens"]))
        spm.append(_span(a["p"], a["tokens"], a["p_stride"], a["tokens"]))
    elif cmd.op == Op.PV:
        spm.append(_span(a["p"], a["tokens"], a["p_stride"], a["tokens"]))
        spm.append(_span(a["v"], a["tokens"], a["stride"], a["d"]))
        spm.append(_span(a["out"], a["tokens"], a["out_stride"], a["d"]))
        out["params"].append((a["rq_off"], a["rq_off"] + a["d"] * RQ_RECORD))
    elif cmd.op == Op.ADD:
        n = a["tokens"] * a["width"]
        spm += [(a["a"], a["a"] + n * a["a_bits"] // 8), (a["b"], a["b"] + n * a["b_bits"] // 8),
                (a["out"], a["out"] + n * a["out_bits"] // 8)]
    elif cmd.op == Op.LAYERNORM:
        n = a["tokens"] * a["hidden"]
        spm += [(a["src"], a["src"] + n * a["in_bits"] // 8), (a["dst"], a["dst"] + n)]
        out["params"].append((a["params_off"], a["params_off"] + a["hidden"] * LN_RECORD))
    elif cmd.op == Op.ADD_LAYERNORM:
        n = a["tokens"] * a["hidden"]
        spm += [(a["a"], a["a"] + n * a["a_bits"] // 8), (a["b"], a["b"] + n * a["b_bits"] // 8),
                (a["dst"], a["dst"] + n)]
        out["params"].append((a["params_off"], a["params_off"] + a["hidden"] * LN_RECORD))
    elif cmd.op == Op.GELU:
        n = a["tokens"] * a["width"]
        spm += [(a["src"], a["src"] + n), (a["dst"], a["dst"] + n)]
        out["params"].append((a["table_off"], a["table_off"] + 256))
    return out


#: an engine command's scratchpad ranges in :func:`footprint`'s order, the output last
_ENGINE_SPM = {Op.LINEAR: ("a", "out"), Op.QK_SOFTMAX: ("q", "k", "mask", "p"),
               Op.PV: ("p", "v", "out")}


def _overwrites_inputs(cmd: Command, config) -> str | None:
    """Why an engine command's output bytes overlap its own inputs, or None. The engine
    writes a chunk's (or token block's) results while later ones are still to be read, so
    such a command would not compute what it says: it is refused like a bad shape."""
    names = _ENGINE_SPM.get(cmd.op)
    if names is None:
        return None
    spans = footprint(cmd, config)["spm"]
    (lo, hi), name = spans[-1], names[-1]
    for what, (start, end) in zip(names[:-1], spans[:-1], strict=True):
        if start < hi and lo < end:
            return (f"{name} bytes [{lo}, {hi}) overlap its input {what} [{start}, {end}): "
                    f"{cmd.op.name} cannot write over what it reads")
    return None


def check_shape(cmd: Command, config) -> str | None:
    """Why ``config`` cannot run ``cmd``'s shape, or None."""
    a = cmd.args
    for name in ("tokens", "k", "rows", "d", "width", "hidden", "bytes"):
        if name in a and a[name] < 1:
            return f"{name} = {a[name]} must be >= 1"
    for name in ("out_bits", "a_bits", "b_bits", "in_bits"):
        if name in a and a[name] not in (8, 16):
            return f"{name} = {a[name]} must be 8 or 16"
    if cmd.op in (Op.LOAD, Op.STORE) and (a["src"] % 4 or a["dst"] % 4):
        return f"src = {a['src']} and dst = {a['dst']} must be multiples of 4 bytes"
    if cmd.op == Op.LINEAR:
        try:
            config.check_nm(a["n"], a["m"])
        except ValueError as e:
            return str(e)
        if a["k"] > config.max_k:
            return f"k = {a['k']} exceeds max_k = {config.max_k}"
        if a["a_stride"] < a["k"] or a["out_stride"] < a["rows"] * a["out_bits"] // 8:
            return "a row stride is shorter than its row"
        if a["gelu"] not in (0, 1):
            return f"gelu = {a['gelu']} must be 0 or 1"
        if a["gelu"] and a["out_bits"] != 8:
            return f"gelu = 1 needs int8 results (out_bits = 8), got out_bits = {a['out_bits']}"
        if config.weight_port_bytes and a["w_off"] % config.weight_port_bytes:
            return (f"w_off = {a['w_off']} must be a multiple of the weight port's "
                    f"{config.weight_port_bytes} bytes")
    if cmd.op in (Op.QK_SOFTMAX, Op.PV):
        if a["tokens"] > config.max_row:
            return f"tokens = {a['tokens']} exceed the longest softmax row max_row = " \
                   f"{config.max_row}"
        if a["d"] > config.max_k:
            return f"d = {a['d']} exceeds max_k = {config.max_k}"
        if a["stride"] < a["d"] or a["p_stride"] < a["tokens"]:
            return "a row stride is shorter than its row"
    why = _overwrites_inputs(cmd, config)
    if why:
        return why
    halves = {Op.LINEAR: (("out", "out_bits"), ("out_stride", "out_bits")),
              Op.ADD: (("a", "a_bits"), ("b", "b_bits"), ("out", "out_bits")),
              Op.LAYERNORM: (("src", "in_bits"),),
              Op.ADD_LAYERNORM: (("a", "a_bits"), ("b", "b_bits"))}.get(cmd.op, ())
    for name, bits in halves:
        if a[bits] == 16 and a[name] % 2:
            return f"{name} = {a[name]}: int16 elements must start on an even byte"
    for name in ("rq_off", "table_off", "params_off"):
        if name in a and a[name] % 4:
            return f"{name} = {a[name]} must be a multiple of 4 bytes"
    if cmd.op == Op.QK_SOFTMAX and (a["shift"] > MAX_SHIFT or a["mult"] >= 2**MULT_BITS):
        return f"softmax multiplier {a['mult']} / shift {a['shift']} out of range"
    if cmd.op == Op.PV and a["out_stride"] < a["d"]:
        return "a row stride is shorter than its row"
    if cmd.op in (Op.ADD, Op.ADD_LAYERNORM) and (a["shift"] > MAX_SHIFT - 1
                             or max(a["m_a"], a["m_b"]) >= 2**ADD_MULT_BITS):
        return f"add multipliers {a['m_a']}, {a['m_b']} / shift {a['shift']} out of range"
    if cmd.op in (Op.LAYERNORM, Op.ADD_LAYERNORM):
        if a["hidden"] > config.max_hidden:
            return f"hidden = {a['hidden']} exceeds max_hidden = {config.max_hidden}"
        if config.wide_ln_params and a["params_off"] % config.weight_port_bytes:
            return (f"params_off = {a['params_off']} must be a multiple of the weight port's "
                    f"{config.weight_port_bytes} bytes (the LayerNorm records come through it)")
        from sw.ref.layernorm import SQRT_FRAC

        if a["in_bits"] == 8 and not config.layernorm_int8:
            return (f"in_bits = 8: config {config.name!r} has no LayerNorm for int8 input "
                    "(layernorm_int8 = false)")
        want = SQRT_FRAC if a["in_bits"] == 8 else 0
        if a["sqrt_frac"] != want:
            return (f"sqrt_frac = {a['sqrt_frac']}: the LayerNorm for int{a['in_bits']} input "
                    f"uses {want}")
    return None


def check_command(cmd: Command, config, sizes: dict[str, int]) -> tuple[Status, str] | None:
    """The status a device stops with before running ``cmd`` (None: it may run). ``sizes``
    holds the byte sizes of the declared ``params``, ``input`` and ``output`` buffers (and
    of the weight banks, :func:`buffers`)."""
    why = check_shape(cmd, config)
    if why:
        return Status.BAD_SHAPE, why
    limits = {**sizes, "spm": config.spm_bytes}
    for mem, ranges in footprint(cmd, config).items():
        for lo, hi in ranges:
            if hi > limits[mem]:
                status = Status.OUT_OF_SPM if mem == "spm" else Status.OUT_OF_BUFFER
                return status, f"bytes [{lo}, {hi}) are outside {mem} ({limits[mem]} bytes)"
    return None
