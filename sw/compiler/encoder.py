"""Compile a (pruned) Hugging Face BERT encoder into a Program and a memory image.

The compiler is a list of named steps (:data:`STEPS`), each a pure function from one IR to the
next; ``compile_encoder(..., save_dir=D)`` saves every step's output as ``D/<step>.json/.npz``
(:mod:`sw.compiler.ir`) so it can be inspected or checked.

1. ``quantize`` (:class:`QuantEncoder`): calibrate each layer on the float model's own hidden
   states and derive every integer parameter (:func:`sw.compiler.qlayer.quantize_bert_layer`);
   layer ``i + 1`` takes layer ``i``'s output scale, so int8 activations chain without host
   rescaling. Each Linear runs at the sparsest N:M its weights satisfy that the config can
   run (dense otherwise).
2. ``lower`` (:class:`Graph`): the layer dataflow as nodes over named tensors (linear, per-head
   QK+softmax and PV, add, LayerNorm, GELU) and the parameter blobs in the device byte format.
   Q, K and V are one LINEAR of their stacked rows (``l<i>.qkv``; QK and PV read its column
   views) when their N:M and result widths agree: the layer input is staged once for all three.
3. ``fuse`` (:class:`Graph`): a LINEAR whose int8 result only feeds a GELU takes the GELU
   on (the ``gelu`` field: the engine's write-out looks each result up in the table), so the
   FFN's intermediate is written once, already through GELU, and never read back; a residual
   ADD whose sum only feeds a LayerNorm becomes one ADD_LAYERNORM (the sums stream from the
   adder into the LayerNorm unit and are never stored).
4. ``order`` (:class:`Graph`): each layer's attention commands in the order the kernel
   overlaps best that the scratchpad holds: every QK_SOFTMAX before the PVs, or each PV as
   many heads behind its QK_SOFTMAX as fit (:func:`order_step`).
5. ``allocate`` (:class:`Schedule`): scratchpad offsets by liveness (first and best fit in
   a few orders, the lowest peak kept; 64-byte aligned; a model that does not fit the
   config's ``spm_kib`` is refused, naming the peak) and parameter offsets.
6. ``emit`` (:class:`Compiled`): the :class:`~sw.compiler.isa.Program`, the ``params`` image
   and the layout of the ``input`` / ``output`` buffers.

Activations stay on chip for the whole encoder (DESIGN.md section 5): the Program loads the key
mask and the int8 input once, and stores the last layer's int8 output once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hw.config import AcceleratorConfig
from sw.nm import PackedNM, is_nm
from sw.ref.quant import RequantParams

from .ir import save_ir
from .isa import (
    LN_RECORD,
    WEIGHT_BANKS,
    Command,
    Op,
    Program,
    check_command,
    config_fingerprint,
    pack_requant,
)
from .qlayer import _LINEARS, QuantBertLayer, _get, check_bert_layer, quantize_bert_layer
from .weight_layout import weight_banks

__all__ = ["QuantEncoder", "Tensor", "Node", "Graph", "Schedule", "Compiled", "STEPS",
           "quantize_step", "lower_step", "fuse_step", "order_step", "allocate_step", "emit_step",
           "compile_encoder",
           "detect_nm", "CompileError", "ALIGN"]

ALIGN = 64  #: scratchpad and params alignment (bytes)


class CompileError(ValueError):
    """A model the config cannot run (the message says what and by how much)."""


# -- step 1: quantize ------------------------------------------------------------------------
@dataclass
class QuantEncoder:
    layers: list[QuantBertLayer]
    tokens: int
    hidden: int
    config: AcceleratorConfig

    @property
    def in_scale(self) -> float:
        return self.layers[0].in_scale

    @property
    def out_scale(self) -> float:
        return self.layers[-1].out_scale


def detect_nm(weight: torch.Tensor, config: AcceleratorConfig) -> tuple[int, int]:
    """The sparsest ``(N, M)`` with the config's M that ``weight`` satisfies and the config
    runs; ``(M, M)`` (dense) when it satisfies none."""
    m = config.m
    w = weight.detach()
    if w.shape[1] < 1:
        raise CompileError(f"weight of shape {tuple(w.shape)} has no input features")
    for n in range(1, config.n_max + 1):
        if n < m and is_nm(w, n, m):
            return n, m
    return m, m


def quantize_step(model, samples: torch.Tensor, masks: torch.Tensor | None,
                  config: AcceleratorConfig, *, layers: int | None = None,
                  residual_bits: int = 16, progress=None) -> QuantEncoder:
    """Calibrate on ``samples`` (embedding outputs ``[B, L, H]``, float) with boolean key
    ``masks [B, L]``; ``layers`` limits the encoder to its first layers."""
    enc_layers = _encoder_layers(model)
    count = len(enc_layers) if layers is None else layers
    if not 1 <= count <= len(enc_layers):
        raise CompileError(f"--layers {layers} is outside 1..{len(enc_layers)}")
    if samples.ndim != 3:
        raise CompileError(f"calibration samples must be [batch, tokens, hidden], got "
                           f"{tuple(samples.shape)}")
    hidden = samples.shape[-1]
    out, x, scale = [], samples.float(), None
    ext = None if masks is None else (1.0 - masks[:, None, None, :].float()) * -1e9
    for i in range(count):
        layer = enc_layers[i]
        try:  # the dataflow the accelerator runs is this layer's (else: silently wrong)
            check_bert_layer(layer, x[:1], None if ext is None else ext[:1], what=f"layer {i}")
        except ValueError as e:
            raise CompileError(str(e)) from None
        nm = {key: detect_nm(_get(layer, path).weight, config) for key, path in _LINEARS.items()}
        ql = quantize_bert_layer(layer, [x], None if masks is None else [masks],
                                 in_scale=scale, nm=nm, residual_bits=residual_bits)
        out.append(ql)
        scale = ql.out_scale
        with torch.no_grad():
            y = layer(x, attention_mask=ext)
        x = y[0] if isinstance(y, tuple) else y
        if progress:
            progress(i + 1, count)
    return QuantEncoder(layers=out, tokens=samples.shape[1], hidden=hidden, config=config)


def _encoder_layers(model):
    for path in ("bert.encoder.layer", "encoder.layer", "layer"):
        try:
            return _get(model, path)
        except AttributeError:
            continue
    if hasattr(model, "attention") and hasattr(model, "intermediate"):
        return [model]  # a single BertLayer
    raise CompileError(f"{type(model).__name__} is not a BERT model, encoder or layer")


# -- step 2: lower ---------------------------------------------------------------------------
@dataclass
class Tensor:
    name: str
    rows: int
    width: int  # elements per row
    bits: int  # 8 (int8 / uint8) or 16

    @property
    def nbytes(self) -> int:
        return self.rows * self.width * self.bits // 8


@dataclass
class Node:
    op: Op
    name: str
    inputs: list[str]  # tensor names read
    output: str  # tensor name written
    attrs: dict  # op fields that are not addresses; *_blob name a params blob


@dataclass
class Graph:
    tokens: int
    hidden: int
    tensors: dict[str, Tensor]
    nodes: list[Node]
    # uint8 device bytes; a LINEAR's weights with several weight ports: [ports, bytes], one
    # row per bank (sw.compiler.weight_layout), each at the same offset of its bank
    blobs: dict[str, np.ndarray]
    input: str  # the int8 [tokens, hidden] input tensor
    mask: str  # the key-mask tensor (one byte per token)
    output: str
    in_scale: float
    out_scale: float
    config: AcceleratorConfig


def requant_blob(rq: RequantParams) -> np.ndarray:
    """Per channel: a requantizer record (``RQ_RECORD`` bytes: :func:`~sw.compiler.isa.
    pack_requant`); a value the record cannot hold is a :class:`CompileError`."""
    try:
        raw = pack_requant(rq.bias, rq.m, rq.s)
    except ValueError as e:
        raise CompileError(str(e)) from None
    return np.frombuffer(raw, np.uint8).copy()


def lower_step(qe: QuantEncoder) -> Graph:
    L, H = qe.tokens, qe.hidden
    tensors: dict[str, Tensor] = {}
    nodes: list[Node] = []
    blobs: dict[str, np.ndarray] = {}

    def tensor(name, width, bits=8, rows=L):
        tensors[name] = Tensor(name, rows, width, bits)
        return name

    def linear(prefix, key, ql: QuantBertLayer, src):
        lin = ql.linears[key]
        return linear_of(prefix, key, lin.weight, lin.requant, src)

    def linear_of(prefix, key, w: PackedNM, rq: RequantParams, src):
        banks = weight_banks(w, qe.config)
        blobs[f"{prefix}.{key}.w"] = banks[0] if len(banks) == 1 else banks
        blobs[f"{prefix}.{key}.rq"] = requant_blob(rq)
        bits = rq.out_bits
        out = tensor(f"{prefix}.{key}", w.rows, bits)
        nodes.append(Node(Op.LINEAR, f"{prefix}.{key}", [src], out,
                          {"k": w.k, "rows": w.rows, "n": w.n, "m": w.m, "out_bits": bits,
                           "w_blob": f"{prefix}.{key}.w", "rq_blob": f"{prefix}.{key}.rq"}))
        return out

    def add_norm(sum_name, out_name, a, b, add, ln):
        """Residual add (``add``) of ``a`` and ``b``, then LayerNorm (``ln``)."""
        h = tensor(sum_name, H, add.out_bits)
        nodes.append(Node(Op.ADD, sum_name.replace(".h", ".add"), [a, b], h, _add_attrs(add)))
        out = tensor(out_name, H)
        blob = sum_name.replace(".h", ".ln")
        blobs[blob] = _ln_blob(ln)
        nodes.append(Node(Op.LAYERNORM, blob, [h], out, _ln_attrs(ln, blob)))
        return out

    def qkv(prefix, ql: QuantBertLayer, src):
        """Q, K and V: one LINEAR of their stacked rows when their N:M and result widths agree
        (the input is staged once, the row blocks run back to back), read through column
        views; else three. Returns each one's (tensor, first column)."""
        lins = [ql.linears[key] for key in ("q", "k", "v")]
        ws = [lin.weight for lin in lins]
        if (len({(w.n, w.m, w.k) for w in ws}) > 1
                or len({lin.requant.out_bits for lin in lins}) > 1):
            return [(linear(prefix, key, ql, src), 0) for key in ("q", "k", "v")]
        w = PackedNM(values=np.concatenate([w.values for w in ws]),
                     indices=np.concatenate([w.indices for w in ws]),
                     n=ws[0].n, m=ws[0].m, k=ws[0].k)
        rqs = [lin.requant for lin in lins]
        rq = RequantParams(*(np.concatenate([getattr(r, f) for r in rqs])
                             for f in ("m", "s", "bias", "real")), out_bits=rqs[0].out_bits)
        out = linear_of(prefix, "qkv", w, rq, src)
        return [(out, 0), (out, ws[0].rows), (out, ws[0].rows + ws[1].rows)]

    mask = tensor("mask", 1, rows=L)
    x = tensor("x", H)
    src = x
    for i, ql in enumerate(qe.layers):
        p = f"l{i}"
        d = H // ql.heads
        (q, q_col), (k, k_col), (v, v_col) = qkv(p, ql, src)
        ctx = tensor(f"{p}.ctx", H)
        for h in range(ql.heads):
            prob = tensor(f"{p}.p{h}", L)
            sm = ql.softmax[h]
            nodes.append(Node(Op.QK_SOFTMAX, f"{p}.qk{h}", [q, k, mask], prob,
                              {"head": h, "d": d, "mult": sm.mult, "shift": sm.shift,
                               "q_col": q_col, "k_col": k_col}))
            blobs[f"{p}.pv{h}.rq"] = requant_blob(ql.pv[h])
            nodes.append(Node(Op.PV, f"{p}.pv{h}", [prob, v], ctx,
                              {"head": h, "d": d, "rq_blob": f"{p}.pv{h}.rq", "v_col": v_col}))
        a = linear(p, "ao", ql, ctx)
        l1 = add_norm(f"{p}.h1", f"{p}.l1", a, src, ql.add1, ql.ln1)
        inter = linear(p, "inter", ql, l1)
        g = tensor(f"{p}.gelu", tensors[inter].width)
        blobs[f"{p}.gelu"] = ql.gelu.table.astype(np.int8).view(np.uint8)
        nodes.append(Node(Op.GELU, f"{p}.gelu", [inter], g, {"table_blob": f"{p}.gelu"}))
        o = linear(p, "out", ql, g)
        y = add_norm(f"{p}.h2", f"{p}.y", o, l1, ql.add2, ql.ln2)
        src = y
    return Graph(tokens=L, hidden=H, tensors=tensors, nodes=nodes, blobs=blobs, input=x,
                 mask=mask, output=src, in_scale=qe.in_scale, out_scale=qe.out_scale,
                 config=qe.config)


# -- step 3: fuse ----------------------------------------------------------------------------
def fuse_step(g: Graph) -> Graph:
    """Pairs whose intermediate is read by the second node alone and is not the graph's
    output, into one command that never writes it:

    * LINEAR -> GELU into one LINEAR with ``gelu_blob`` (the table), where the LINEAR's result
      is int8: the engine's write-out looks each result up on its way out;
    * ADD -> LAYERNORM into one ADD_LAYERNORM: the vector datapath streams the sums into the
      LayerNorm unit, one pass over the scratchpad instead of two."""
    readers: dict[str, list[Node]] = {}
    for n in g.nodes:
        for t in n.inputs:
            readers.setdefault(t, []).append(n)
    tensors, nodes, gone = dict(g.tensors), [], set()
    for n in g.nodes:
        if id(n) in gone:
            continue
        r = readers.get(n.output, [])
        only = r[0] if len(r) == 1 and n.output != g.output else None
        if (n.op == Op.LINEAR and n.attrs["out_bits"] == 8 and "gelu_blob" not in n.attrs
                and only is not None and only.op == Op.GELU):
            del tensors[n.output]
            gone.add(id(only))
            n = Node(Op.LINEAR, n.name, n.inputs, only.output,
                     {**n.attrs, "gelu_blob": only.attrs["table_blob"]})
        elif (n.op == Op.ADD and only is not None and only.op == Op.LAYERNORM
              and only.attrs["in_bits"] == n.attrs["out_bits"]):
            del tensors[n.output]
            gone.add(id(only))
            add = {k: v for k, v in n.attrs.items() if k != "out_bits"}
            n = Node(Op.ADD_LAYERNORM, only.name, n.inputs, only.output, {**add, **only.attrs})
        nodes.append(n)
    return dataclasses.replace(g, tensors=tensors, nodes=nodes)


def _add_attrs(p) -> dict:
    return {"m_a": p.m_a, "m_b": p.m_b, "shift": p.shift, "a_bits": p.a_bits,
            "b_bits": p.b_bits, "out_bits": p.out_bits}


def _ln_blob(p) -> np.ndarray:
    rec = np.stack([np.asarray(p.gain, "<i8"), np.asarray(p.offset, "<i8")], -1)
    assert rec.shape[1] * 8 == LN_RECORD
    return rec.reshape(-1).view(np.uint8)


def _ln_attrs(p, blob) -> dict:
    if not 0 <= p.eps_int < 2**32:
        raise CompileError(f"LayerNorm eps {p.eps} is {p.eps_int} in integer units: does not "
                           "fit the command's 32-bit field")
    return {"in_bits": p.in_bits, "eps_int": int(p.eps_int), "sqrt_frac": p.sqrt_frac,
            "params_blob": blob}


# -- steps 4 and 5: order, allocate ----------------------------------------------------------
@dataclass
class Schedule:
    graph: Graph
    spm: dict[str, int]  # tensor -> scratchpad byte address
    params: dict[str, int]  # blob -> params byte offset
    spm_peak: int
    params_bytes: int = 0
    lifetimes: dict[str, list[int]] = field(default_factory=dict)


def _align(n: int, to: int = ALIGN) -> int:
    return -(-n // to) * to


def _place(order, first, last, size, best: bool) -> tuple[dict[str, int], int]:
    """Scratchpad addresses placing tensors in ``order``, each clear of the placed tensors
    live at any of its steps (``first`` .. ``last``): in the lowest gap it fits, or with
    ``best`` the smallest (then lowest) one; and the peak."""
    placed: list[tuple[int, int, str]] = []  # (start, end, tensor)
    spm: dict[str, int] = {}
    peak = 0
    for t in order:
        gaps, addr = [], 0  # (room, start) of the gaps below the live tensors' ends
        for lo, hi, _ in sorted(iv for iv in placed
                                if first[iv[2]] <= last[t] and first[t] <= last[iv[2]]):
            if lo - addr >= size[t]:
                gaps.append((lo - addr, addr))
            addr = max(addr, hi)
        if gaps:
            addr = min(gaps)[1] if best else gaps[0][1]
        spm[t] = addr
        placed.append((addr, addr + size[t], t))
        peak = max(peak, addr + size[t])
    return spm, peak


def _lagged(qk: list, pv: list, lag: int) -> list:
    """A run's QK_SOFTMAXes and PVs with PV ``i`` after QK_SOFTMAX ``i + lag`` (every QK_SOFTMAX
    first from ``lag`` = their count - 1; head by head at ``lag`` 0)."""
    nodes = []
    for i, n in enumerate(qk):
        nodes.append(n)
        if i >= lag:
            nodes.append(pv[i - lag])
    return nodes + pv[max(0, len(qk) - lag):]


def _in_order(nodes: list) -> bool:
    """Whether every tensor a node reads that some node writes is written before it."""
    written = {n.output for n in nodes}
    done: set[str] = set()
    for n in nodes:
        if any(t in written and t not in done for t in n.inputs):
            return False
        done.add(n.output)
    return True


def order_step(g: Graph) -> Graph:
    """Each run of attention commands (a layer's QK_SOFTMAX and PV per head) becomes its
    QK_SOFTMAXes, then its PVs, each in the order they came, when the scratchpad then still
    holds the encoder (every head's probabilities are live at once): the kernel runs a
    QK_SOFTMAX's softmax rows beside the next QK_SOFTMAX, while any other command waits for
    them (:mod:`hw.top.accelerator`). Where that does not fit, each PV follows the
    QK_SOFTMAX ``lag`` heads after its own, the largest ``lag`` that fits (``lag + 1`` heads'
    probabilities live): the first ``lag + 1`` QK_SOFTMAXes run beside the rows before them
    and each PV beside the next head's rows, where head by head (``lag`` 0) every PV waits
    for its own head's rows (a QK_SOFTMAX after a PV waits for the PV's results, which wait
    for the rows, either way). A run whose QK_SOFTMAXes and PVs differ in number stays as it
    was, and so does the graph where no order that fits reads every tensor after its
    write."""
    runs, run = [], []  # the graph as [node] (others) and [QK_SOFTMAXes, PVs] (attention runs)
    attention = (Op.QK_SOFTMAX, Op.PV)

    def flush():
        qk = [n for n in run if n.op == Op.QK_SOFTMAX]
        pv = [n for n in run if n.op == Op.PV]
        if len(qk) == len(pv) > 0:
            runs.append([qk, pv])
        else:
            runs.extend([n] for n in run)
        run.clear()

    for n in g.nodes:
        if n.op in attention:
            run.append(n)
        else:
            flush()
            runs.append([n])
    flush()
    heads = max((len(r[0]) for r in runs if len(r) == 2), default=0)
    for lag in range(heads - 1, 0, -1):
        nodes = [n for r in runs
                 for n in (_lagged(*r, min(lag, len(r[0]))) if len(r) == 2 else r)]
        ordered = dataclasses.replace(g, nodes=nodes)
        if _in_order(nodes) and _allocate(ordered)[1] <= g.config.spm_bytes:
            return ordered
    return g


def _allocate(g: Graph) -> tuple[dict[str, int], int, dict[str, int], dict[str, int]]:
    """The scratchpad offsets of ``g``'s tensors, the peak, and their first and last steps."""
    # lifetimes in node steps; the input and mask are live from the start (LOAD), the output
    # to the end (STORE)
    end = len(g.nodes)
    first: dict[str, int] = {g.input: -1, g.mask: -1}
    last: dict[str, int] = {g.output: end}
    for i, n in enumerate(g.nodes):
        first.setdefault(n.output, i)
        last[n.output] = max(last.get(n.output, i), i)
        for t in n.inputs:
            last[t] = max(last.get(t, i), i)
    size = {t: _align(g.tensors[t].nbytes) for t in first}
    # first and best fit in four orders (by definition, the larger first, or the longer-lived
    # and then the larger first; largest first; longest-lived first): the lowest peak
    orders = (sorted(first, key=lambda t: (first[t], -size[t])),
              sorted(first, key=lambda t: (first[t], -last[t], -size[t])),
              sorted(first, key=lambda t: (-size[t], first[t])),
              sorted(first, key=lambda t: (first[t] - last[t], first[t])))
    spm, peak = min((_place(order, first, last, size, best) for order in orders
                     for best in (False, True)), key=lambda r: r[1])
    return spm, peak, first, last


def allocate_step(g: Graph) -> Schedule:
    spm, peak, first, last = _allocate(g)
    if peak > g.config.spm_bytes:
        raise CompileError(f"the encoder needs {peak} bytes of scratchpad at its peak, config "
                           f"{g.config.name!r} has {g.config.spm_bytes} (spm_kib = "
                           f"{g.config.spm_kib}); use fewer tokens or a larger spm_kib")
    params, off = {}, 0
    to = max(ALIGN, g.config.weight_port_bytes)  # a weight blob starts on a beat
    # weights in banks first, so the other banks (which hold only weights) end with them;
    # equal params blobs share one offset (PV's heads' requantizer records are all alike, and
    # the kernel then reuses the records it holds instead of fetching them again)
    seen: dict[tuple, int] = {}
    for name, blob in sorted(g.blobs.items(), key=lambda kv: kv[1].ndim != 2):
        key = (blob.ndim, blob.dtype.str, blob.shape, blob.tobytes()) if blob.ndim == 1 else None
        if key in seen:
            params[name] = seen[key]
            continue
        params[name] = off
        if key is not None:
            seen[key] = off
        off += _align(blob.shape[-1], to)
    return Schedule(graph=g, spm=spm, params=params, spm_peak=peak, params_bytes=off,
                    lifetimes={t: [first[t], last[t]] for t in first})


# -- step 6: emit ----------------------------------------------------------------------------
@dataclass
class Compiled:
    program: Program
    params: np.ndarray  # uint8 image of the params buffer
    input_bytes: int  # input buffer: mask (tokens bytes, padded to ALIGN) then x int8
    output_bytes: int  # output buffer: y int8 [tokens, hidden]
    tokens: int
    hidden: int
    in_scale: float
    out_scale: float
    spm_peak: int
    config: AcceleratorConfig
    # images of the weight banks params1, ... (weight_ports - 1; none in IRs saved before them)
    banks: tuple[np.ndarray, ...] = ()
    # each command's name: its graph node's (l0.qkv, l0.qk3, l0.ln1, ...), "mask" and "input"
    # (the LOADs), "output" (the STORE), "end" (none in IRs saved before them)
    labels: tuple[str, ...] = ()

    @property
    def x_offset(self) -> int:
        return _align(self.tokens)

    def pack_input(self, x, key_mask=None) -> bytes:
        """The ``input`` buffer for int8 ``x [tokens, hidden]`` and a boolean key mask."""
        x = np.asarray(x)
        if x.shape != (self.tokens, self.hidden):
            raise ValueError(f"input must be [{self.tokens}, {self.hidden}] (the shape this "
                             f"Program was compiled for), got {x.shape}")
        if x.min() < -128 or x.max() > 127:
            raise ValueError("input is not int8")
        mask = np.ones(self.tokens, bool) if key_mask is None else np.asarray(key_mask)
        if mask.dtype != np.bool_ or mask.shape != (self.tokens,):
            raise ValueError(f"key mask must be boolean [{self.tokens}], got {mask.dtype} "
                             f"{mask.shape}")
        buf = np.zeros(self.input_bytes, np.uint8)
        buf[: self.tokens] = mask
        buf[self.x_offset:] = x.astype(np.int8).reshape(-1).view(np.uint8)
        return buf.tobytes()

    def buffers(self) -> dict[str, bytes]:
        """The initial bytes of the read-only buffers the Program runs with, by name
        (:func:`sw.compiler.isa.buffers`): ``program``, ``params``, the weight banks."""
        return {"program": self.program.to_bytes(), "params": self.params.tobytes(),
                **{n: b.tobytes() for n, b in zip(WEIGHT_BANKS, self.banks, strict=False)}}

    def unpack_output(self, data: bytes) -> np.ndarray:
        arr = np.frombuffer(bytes(data), np.int8, count=self.tokens * self.hidden)
        return arr.reshape(self.tokens, self.hidden).copy()


def emit_step(s: Schedule) -> Compiled:
    g, spm, cfg = s.graph, s.spm, s.graph.config
    t = g.tensors
    L, H = g.tokens, g.hidden
    x_off = _align(L)
    cmds = [Command(Op.LOAD, {"dst": spm[g.mask], "src": 0, "bytes": L}),
            Command(Op.LOAD, {"dst": spm[g.input], "src": x_off, "bytes": L * H})]
    for n in g.nodes:
        a = n.attrs
        if n.op == Op.LINEAR:
            src = t[n.inputs[0]]
            args = {"a": spm[src.name], "a_stride": src.width, "tokens": L, "k": a["k"],
                    "rows": a["rows"], "n": a["n"], "m": a["m"], "w_off": s.params[a["w_blob"]],
                    "rq_off": s.params[a["rq_blob"]], "out": spm[n.output],
                    "out_stride": a["rows"] * a["out_bits"] // 8, "out_bits": a["out_bits"],
                    "gelu": int("gelu_blob" in a),
                    "table_off": s.params[a["gelu_blob"]] if "gelu_blob" in a else 0}
        elif n.op == Op.QK_SOFTMAX:
            q, k, mask = n.inputs
            off = a["head"] * a["d"]
            if t[q].width != t[k].width:  # pragma: no cover - lower_step keeps them alike
                raise CompileError(f"{n.name}: Q and K rows differ in width")
            # column views of a stacked Q/K/V LINEAR (absent in IRs saved before it)
            args = {"q": spm[q] + a.get("q_col", 0) + off, "k": spm[k] + a.get("k_col", 0) + off,
                    "stride": t[q].width, "tokens": L,
                    "d": a["d"], "mask": spm[mask], "mult": a["mult"], "shift": a["shift"],
                    "p": spm[n.output], "p_stride": L}
        elif n.op == Op.PV:
            p, v = n.inputs
            off = a["head"] * a["d"]
            args = {"p": spm[p], "p_stride": L, "v": spm[v] + a.get("v_col", 0) + off,
                    "stride": t[v].width,
                    "tokens": L, "d": a["d"], "rq_off": s.params[a["rq_blob"]],
                    "out": spm[n.output] + off, "out_stride": t[n.output].width}
        elif n.op == Op.ADD:
            args = {"a": spm[n.inputs[0]], "b": spm[n.inputs[1]], "out": spm[n.output],
                    "tokens": L, "width": t[n.output].width,
                    **{k: a[k] for k in ("m_a", "m_b", "shift", "a_bits", "b_bits", "out_bits")}}
        elif n.op == Op.LAYERNORM:
            args = {"src": spm[n.inputs[0]], "dst": spm[n.output], "tokens": L, "hidden": H,
                    "in_bits": a["in_bits"], "params_off": s.params[a["params_blob"]],
                    "eps_int": a["eps_int"], "sqrt_frac": a["sqrt_frac"]}
        elif n.op == Op.ADD_LAYERNORM:
            args = {"a": spm[n.inputs[0]], "b": spm[n.inputs[1]], "dst": spm[n.output],
                    "tokens": L, "hidden": H, "params_off": s.params[a["params_blob"]],
                    **{k: a[k] for k in ("m_a", "m_b", "shift", "a_bits", "b_bits", "in_bits",
                                         "eps_int", "sqrt_frac")}}
        elif n.op == Op.GELU:
            args = {"src": spm[n.inputs[0]], "dst": spm[n.output], "tokens": L,
                    "width": t[n.output].width, "table_off": s.params[a["table_blob"]]}
        else:  # pragma: no cover - lower_step emits only the ops above
            raise CompileError(f"cannot emit {n.op!r}")
        cmds.append(Command(n.op, args))
    cmds.append(Command(Op.STORE, {"dst": 0, "src": spm[g.output], "bytes": L * H}))
    cmds.append(Command(Op.END, {}))
    labels = ("mask", "input", *(n.name for n in g.nodes), "output", "end")
    assert len(labels) == len(cmds)
    image = np.zeros(s.params_bytes, np.uint8)
    nbanks = cfg.weight_ports - 1
    banks_end = max((off + g.blobs[name].shape[-1] for name, off in s.params.items()
                     if g.blobs[name].ndim == 2), default=ALIGN)
    banks = tuple(np.zeros(banks_end, np.uint8) for _ in range(nbanks))
    for name, off in s.params.items():
        blob = g.blobs[name]
        if blob.ndim == 2:
            for b, bank in zip((image, *banks), blob, strict=True):
                b[off: off + blob.shape[1]] = bank
        else:
            image[off: off + blob.size] = blob
    out = Compiled(program=Program(tuple(cmds), config_fingerprint(cfg)), params=image,
                   banks=banks,
                   input_bytes=x_off + L * H, output_bytes=L * H, tokens=L, hidden=H,
                   in_scale=g.in_scale, out_scale=g.out_scale, spm_peak=s.spm_peak, config=cfg,
                   labels=labels)
    sizes = {"params": image.size, "input": out.input_bytes, "output": out.output_bytes,
             **{name: bank.size for name, bank in zip(WEIGHT_BANKS, banks, strict=False)}}
    for i, c in enumerate(cmds):
        bad = check_command(c, cfg, sizes)
        if bad:
            raise CompileError(f"command {i} ({c.op.name}) would stop the device with "
                               f"{bad[0].name}: {bad[1]}")
    return out


#: The compiler's steps, in order: (name, function from the previous IR).
STEPS = (("lower", lower_step), ("fuse", fuse_step), ("order", order_step),
         ("allocate", allocate_step), ("emit", emit_step))


def compile_encoder(model, config: AcceleratorConfig, samples: torch.Tensor,
                    masks: torch.Tensor | None = None, *, layers: int | None = None,
                    residual_bits: int = 16, save_dir: str | Path | None = None,
                    progress=None) -> Compiled:
    """Run every step; with ``save_dir``, each step's IR is saved there under its name."""
    ir = quantize_step(model, samples, masks, config, layers=layers,
                       residual_bits=residual_bits, progress=progress)
    if save_dir is not None:
        save_ir(ir, Path(save_dir) / "quantize")
    for name, step in STEPS:
        ir = step(ir)
        if save_dir is not None:
            save_ir(ir, Path(save_dir) / name)
    return ir
