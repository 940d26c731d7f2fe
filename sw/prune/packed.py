"""The packed model file: N:M int8 layers in safetensors, with JSON metadata.

One ``.safetensors`` file. Per layer ``<name>``: ``<name>.values`` (int8 ``[out, G*N]``),
``<name>.indices`` (uint8, bit-packed as :mod:`sw.nm` defines), ``<name>.w_scale`` (float64
``[out]``), ``<name>.bias`` (int64, accumulator units), ``<name>.mult`` and ``<name>.shift``
(int64, the requantizer). The safetensors metadata key ``nmaccel`` holds JSON: format version,
and per layer ``n``, ``m``, ``k``, ``in_scale``, ``out_scale``, plus free-form ``info`` (source
model, calibration, accuracy...).

:func:`load_packed` validates everything it reads and refuses, naming the problem: a file that
is not safetensors or is truncated, missing metadata or layers, mismatched shapes or dtypes,
and weights that break their declared N:M.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sw.nm import PackedNM, check_nm, unpack
from sw.ref.quant import RequantParams

from .quantize import QuantLinear

__all__ = ["FORMAT", "PackedModelError", "save_packed", "load_packed"]

FORMAT = "nmaccel-packed-1"
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
        meta[name] = {"n": p.n, "m": p.m, "k": p.k, "in_scale": ql.in_scale,
                      "out_scale": ql.out_scale}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": FORMAT, "layers": meta, "info": info or {}}
    save_file(tensors, str(path), metadata={"nmaccel": json.dumps(header)})
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
            requant = RequantParams(m=t["mult"], s=t["shift"], bias=t["bias"],
                                    real=t["mult"] * np.exp2(-t["shift"].astype(float)))
            layers[name] = QuantLinear(weight=weight, w_scale=t["w_scale"],
                                       in_scale=float(meta["in_scale"]),
                                       out_scale=float(meta["out_scale"]), requant=requant)
        except (KeyError, TypeError, ValueError) as e:
            raise PackedModelError(f"{path}: layer {name}: {e}") from None
    extra = sorted({key.rsplit(".", 1)[0] for key in tensors} - set(layers))
    if extra:
        raise PackedModelError(f"{path}: tensors of undeclared layers {extra[:4]}")
    if not layers:
        raise PackedModelError(f"{path}: declares no layers")
    return layers, header.get("info", {})
