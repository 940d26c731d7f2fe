"""Save and load the compiler's intermediate results (any step's output).

An IR is a tree of dataclasses, dicts, lists, numbers, strings, enums and numpy arrays. It is
written as ``<name>.json`` (the structure, readable; each dataclass tagged with its type) plus
``<name>.npz`` (the arrays, referenced from the JSON by key), so a step's output can be
inspected, diffed and fed back into the next step.

The JSON's top level is ``{"format": "nmaccel-ir", "version": V, "ir": tree}`` with ``V`` the
Program version (:data:`sw.compiler.isa.VERSION`) of the build that saved it: an IR holds the
Program's commands and params in their layout of that version, so a build reading another
version refuses the file instead of feeding misread weights to the next step.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import json
from pathlib import Path

import numpy as np

from .isa import VERSION

__all__ = ["save_ir", "load_ir"]

_ALLOWED_MODULES = ("sw.", "hw.")
_FORMAT = "nmaccel-ir"


def _encode(obj, arrays: dict[str, np.ndarray]):
    if isinstance(obj, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = obj
        return {"__array__": key}
    if isinstance(obj, enum.Enum):
        cls = type(obj)
        return {"__enum__": f"{cls.__module__}:{cls.__qualname__}", "value": obj.value}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        cls = type(obj)
        body = {f.name: _encode(getattr(obj, f.name), arrays) for f in dataclasses.fields(obj)}
        return {"__type__": f"{cls.__module__}:{cls.__qualname__}", **body}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError(f"IR dict keys must be strings, got {list(obj)[:3]}")
        return {k: _encode(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_encode(v, arrays) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot save {type(obj).__name__} in an IR")


def _resolve(tag: str):
    module, _, name = tag.partition(":")
    if not module.startswith(_ALLOWED_MODULES):
        raise ValueError(f"IR names type {tag!r} outside this project's packages")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _decode(obj, arrays):
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__array__" in obj:
        return arrays[obj["__array__"]]
    if "__enum__" in obj:
        return _resolve(obj["__enum__"])(obj["value"])
    if "__type__" in obj:
        cls = _resolve(obj["__type__"])
        kwargs = {k: _decode(v, arrays) for k, v in obj.items() if k != "__type__"}
        for f in dataclasses.fields(cls):
            if isinstance(kwargs.get(f.name), list) and "tuple" in str(f.type):
                kwargs[f.name] = tuple(kwargs[f.name])
        return cls(**kwargs)
    return {k: _decode(v, arrays) for k, v in obj.items()}


def save_ir(ir, path: str | Path) -> Path:
    """Write ``path.json`` and ``path.npz``; returns the JSON path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    tree = {"format": _FORMAT, "version": VERSION, "ir": _encode(ir, arrays)}
    np.savez(path.with_suffix(".npz"), **arrays)
    out = path.with_suffix(".json")
    out.write_text(json.dumps(tree, indent=1) + "\n")
    return out


def load_ir(path: str | Path):
    """Read back what :func:`save_ir` wrote (``path`` with or without a suffix)."""
    path = Path(path)
    try:
        tree = json.loads(path.with_suffix(".json").read_text())
        with np.load(path.with_suffix(".npz"), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable IR ({e})") from None
    if not isinstance(tree, dict) or tree.get("format") != _FORMAT:
        raise ValueError(f"{path}: not an nmaccel IR (no \"format\": \"{_FORMAT}\" header; "
                         "IRs saved before the header existed must be compiled again)")
    if tree.get("version") != VERSION:
        raise ValueError(f"{path}: IR saved for Program version {tree.get('version')!r}, this "
                         f"build reads version {VERSION}: compile the model again")
    return _decode(tree["ir"], arrays)
