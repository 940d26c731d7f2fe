"""The packed model file: N:M int8 layers in safetensors, with JSON metadata.

One ``.safetensors`` file. Per layer ``<name>``: ``<name>.values`` (int8 ``[out, G*N]``),
``<name>.indices`` (uint8, bit-packed as :mod:`sw.nm` defines), ``<name>.w_scale`` (float64
``[out]``), ``<name>.bias`` (int64, accumulator units), ``<name>.mult`` and ``<name>.shift``
(int64, the requantizer), and ``<name>.out_scale`` (float64 ``[out]``) when the output scale is
per channel (the integer encoder's Q and K). The safetensors metadata key ``nmaccel`` holds
JSON: format version, and per layer ``n``, ``m``, ``k``, ``in_scale``, ``out_bits`` (the
requantizer's output width: 8, or 16 on the residual path), ``out_scale`` (when
one scalar), plus free-form ``info`` (source model, calibration, accuracy...).

The int8 results of ``nmaccel prune --int8``, of the QAT runs and of ``make accuracy`` leave
one in their model directory as :data:`PACKED_FILE`: every encoder Linear of the
:class:`~sw.compiler.encoder.QuantEncoder` that produced the reported int8 accuracy, named like
the Hugging Face modules under ``bert.encoder`` (``layer.<i>.attention.self.query``...;
:func:`quant_linears`), packed at the model's declared N:M.

:func:`load_packed` validates everything it reads and refuses, naming the problem: a file that
is not safetensors or is truncated, missing metadata or layers, mismatched shapes or dtypes,
and weights that break their declared N:M. :func:`check_same_layers` refuses a file whose
layers differ from the ones a model's calibration derives, naming the layer and the field.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from sw.nm import PackedNM, check_nm, pack, unpack
from sw.ref.quant import RequantParams

from .quantize import QuantLinear

__all__ = ["FORMAT", "PACKED_FILE", "PackedModelError", "save_packed", "load_packed",
           "quant_linears", "check_same_layers"]

FORMAT = "nmaccel-packed-2"  # 2: per-layer out_bits is required (1 had none)
#: the packed file's name inside a model directory
PACKED_FILE = "packed.safetensors"
_TENSORS = ("values", "indices", "w_scale", "bias", "mult", "shift")


class PackedModelError(ValueError):
    """A packed model file that cannot be used (the message says why)."""


def save_packed(path, layers: dict[str, QuantLinear], info: dict | None = None) -> Path:
    from safetensors.numpy import save_file

    tensors, meta = {}, {}
    for name, ql in layers.items():
        p = ql.weight
        tensors.update({
            f"{name}.values": np.ascontiguousarray(p.values.astype(np.int8)),
            f"{name}.indices": np.ascontiguousarray(p.indices),
            f"{name}.w_scale": np.asarray(ql.w_scale, np.float64),
            f"{name}.bias": np.asarray(ql.requant.bias, np.int64),
            f"{name}.mult": np.asarray(ql.requant.m, np.int64),
            f"{name}.shift": np.asarray(ql.requant.s, np.int64),
        })
        meta[name] = {"n": p.n, "m": p.m, "k": p.k, "in_scale": float(ql.in_scale),
                      "out_bits": int(ql.requant.out_bits)}
        if np.ndim(ql.out_scale) == 0:
            meta[name]["out_scale"] = float(ql.out_scale)
        else:
            tensors[f"{name}.out_scale"] = np.ascontiguousarray(ql.out_scale, np.float64)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": FORMAT, "layers": meta, "info": info or {}}
    # written whole, then renamed: an interrupted run never leaves a half-written file
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"nmaccel": json.dumps(header)})
    os.replace(tmp, path)
    return path


def load_packed(path) -> tuple[dict[str, QuantLinear], dict]:
    """Read and validate a packed model; returns ``(layers, info)``."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise PackedModelError(f"{path}: no such file")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            raw_meta = (f.metadata() or {}).get("nmaccel")
    except (SafetensorError, OSError, ValueError) as e:
        raise PackedModelError(f"{path}: not a readable safetensors file ({e})") from None
    if raw_meta is None:
        raise PackedModelError(f"{path}: safetensors file without nmaccel metadata: not a packed "
                               f"nmaccel model")
    try:
        header = json.loads(raw_meta)
    except json.JSONDecodeError as e:
        raise PackedModelError(f"{path}: malformed nmaccel metadata JSON ({e})") from None
    if header.get("format") != FORMAT:
        raise PackedModelError(f"{path}: format {header.get('format')!r}, expected {FORMAT!r}")
    layers = {}
    for name, meta in header.get("layers", {}).items():
        missing = [t for t in _TENSORS if f"{name}.{t}" not in tensors]
        if missing:
            raise PackedModelError(f"{path}: layer {name} lacks tensors {missing}")
        t = {k: tensors[f"{name}.{k}"] for k in _TENSORS}
        try:
            n, m, k = int(meta["n"]), int(meta["m"]), int(meta["k"])
            weight = PackedNM(values=t["values"], indices=t["indices"], n=n, m=m, k=k)
            rows = weight.rows
            for key in ("w_scale", "bias", "mult", "shift"):
                if t[key].shape != (rows,):
                    raise ValueError(f"{key} has shape {t[key].shape}, expected ({rows},)")
            if t["values"].dtype != np.int8:
                raise ValueError(f"values have dtype {t['values'].dtype}, expected int8")
            check_nm(unpack(weight), n, m)
            out_bits = int(meta["out_bits"])
            if out_bits not in (8, 16):
                raise ValueError(f"out_bits {out_bits}, expected 8 or 16")
            if f"{name}.out_scale" in tensors:
                if "out_scale" in meta:
                    raise ValueError("out_scale both in the metadata and as a tensor")
                out_scale = tensors[f"{name}.out_scale"]
                if out_scale.shape != (rows,) or out_scale.dtype != np.float64:
                    raise ValueError(f"out_scale has shape {out_scale.shape} and dtype "
                                     f"{out_scale.dtype}, expected ({rows},) float64")
            elif "out_scale" in meta:
                out_scale = float(meta["out_scale"])
            else:
                raise ValueError("no out_scale (neither in the metadata nor as a tensor)")
            requant = RequantParams(m=t["mult"], s=t["shift"], bias=t["bias"],
                                    real=t["mult"] * np.exp2(-t["shift"].astype(float)),
                                    out_bits=out_bits)
            layers[name] = QuantLinear(weight=weight, w_scale=t["w_scale"],
                                       in_scale=float(meta["in_scale"]),
                                       out_scale=out_scale, requant=requant)
        except (KeyError, TypeError, ValueError) as e:
            raise PackedModelError(f"{path}: layer {name}: {e}") from None
    extra = sorted({key.rsplit(".", 1)[0] for key in tensors} - set(layers))
    if extra:
        raise PackedModelError(f"{path}: tensors of undeclared layers {extra[:4]}")
    if not layers:
        raise PackedModelError(f"{path}: declares no layers")
    return layers, header.get("info", {})


def quant_linears(encoder, plan: dict | None = None) -> dict[str, QuantLinear]:
    """Every Linear of a :class:`~sw.compiler.encoder.QuantEncoder` by its Hugging Face module
    name (``layer.<i>.attention.self.query``...). ``plan`` (``{name: (n, m) or None}``, as
    :class:`~sw.prune.sparsify.NMPlan` holds) repacks a layer at its declared N:M when the
    encoder packed it otherwise (the int8 evaluation's config has M = 4, so 2:8 runs as 4:4):
    the same integer weights, laid out as declared; a weight that breaks it raises."""
    from sw.compiler.qlayer import _LINEARS

    out = {}
    for i, layer in enumerate(encoder.layers):
        for key, path in _LINEARS.items():
            name, ql = f"layer.{i}.{path}", layer.linears[key]
            nm = (plan or {}).get(name)
            if nm is not None and (ql.n, ql.m) != tuple(nm):
                ql = dataclasses.replace(ql, weight=pack(unpack(ql.weight), *nm))
            out[name] = ql
    return out


def _difference(a: QuantLinear, b: QuantLinear) -> str | None:
    wa, wb = unpack(a.weight), unpack(b.weight)
    if wa.shape != wb.shape:
        return f"weight shape ({wa.shape} against {wb.shape})"
    checks = (("weights", wa, wb), ("w_scale", a.w_scale, b.w_scale),
              ("in_scale", a.in_scale, b.in_scale), ("out_scale", a.out_scale, b.out_scale),
              ("requantizer bias", a.requant.bias, b.requant.bias),
              ("requantizer multiplier", a.requant.m, b.requant.m),
              ("requantizer shift", a.requant.s, b.requant.s),
              ("requantizer width", a.requant.out_bits, b.requant.out_bits))
    for what, x, y in checks:
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or not np.array_equal(x, y):
            return what
    return None


def check_same_layers(stored: dict[str, QuantLinear], derived: dict[str, QuantLinear],
                      where) -> None:
    """Refuse (:class:`PackedModelError`, naming the layer) when ``stored`` (a packed file's
    layers) and ``derived`` (a model's calibrated layers) differ: a layer missing on either
    side, or any weight, scale or requantizer value. N:M packing may differ (the dense
    weights are compared)."""
    missing = sorted(set(derived) - set(stored))
    if missing:
        raise PackedModelError(f"{where}: lacks layer(s) {missing[:4]} of the model")
    extra = sorted(set(stored) - set(derived))
    if extra:
        raise PackedModelError(f"{where}: has layer(s) {extra[:4]} the model does not have")
    for name, ql in derived.items():
        diff = _difference(stored[name], ql)
        if diff is not None:
            raise PackedModelError(f"{where}: layer {name}: {diff} mismatch: the file's "
                                   f"differ from what the model's own int8 calibration derives "
                                   f"(the file belongs to another model or calibration)")
