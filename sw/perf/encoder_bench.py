"""The encoder benchmark behind ``make bench``: accelerator projections beside CPU baselines.

``python -m sw.perf.encoder_bench`` (issue 8) writes ``build/bench/encoder.json``, a plot
(``build/bench/encoder.png``) and, with ``--readme``, the table of README.md between the
markers :data:`BEGIN` / :data:`END`. Per model (``bert-base``: ``BertConfig()`` with seeded
random weights; ``minilm``: the pretrained all-MiniLM-L6-v2; or a saved BERT directory), per
preset (``ecp5``, ``u200``, ``u280`` by default) and per sparsity (``dense``, ``2:4``,
``1:4``), at batch 1 and one sequence length:

* **What runs.** The model is pruned one-shot by magnitude to the sparsity (:func:`pruned_nm`:
  as asked where its M divides the preset's, the weights then running in the preset's M at the
  same density, so the same 2:4 weights run as ``4:8`` on the M = 8 Alveo presets and 1:4 as
  ``2:8``; else in the preset's M, ``2:8`` pruned as ``1:4`` on M = 4), calibrated int8 on a few
  sequences (calibration changes scales, never cycles) and compiled for the preset by
  :func:`sw.compiler.encoder.compile_encoder`. A case the preset cannot hold (the compiler's
  :class:`~sw.compiler.encoder.CompileError`, e.g. the ``ecp5`` scratchpad at seq 128, or a
  sequence or hidden size beyond the preset) is recorded as ``"does not fit"`` with the reason;
  no figure is made up for it.
* **Model cycles** (``model_cycles``): the ``ref`` backend's figure for that Program, i.e.
  the sum of :func:`sw.driver.executor.command_cycles` (engine, softmax, LayerNorm and the
  vector units at their exact cycle models, commands one after another, LOAD/STORE at
  ``pe_cols`` bytes per cycle), computed from the Program without executing it. It does
  **not** include what the kernel as built adds around the blocks (command fetch, operand
  staging, result write-out): ``kernel_cycles`` does (:mod:`sw.perf.top`, per command; the
  figure the RTL check holds to the RTL's cycle counter, below).
* **Device memory.** Bytes each command streams from device memory: a LINEAR's packed weights
  (values + bit-packed indices) and requant records once per token block of ``pe_cols``
  tokens (``hw.top.engine_ops.EngineOps`` fetches a row block's weights for every token
  block), PV's requant records likewise, LayerNorm records, GELU tables, and LOAD/STORE
  bytes; their time is bytes / ``mem_bandwidth_gbps`` (77 GB/s DDR on ``u200``, 460 GB/s HBM
  on ``u280``). ``projected_cycles`` = the sum over commands of max(compute cycles, memory
  cycles) (each command's stream overlapped with its own compute, none across commands). A
  case is ``bandwidth_bound`` when its weight stream (every byte but LOAD/STORE's) takes
  longer than its compute cycles; ``bandwidth_bound_commands`` counts the commands whose own
  stream outlasts their compute. Without a clock (``ecp5`` before a bitstream) the bound is
  unknown and only ``weight_stream_ms`` (bytes / bandwidth) is given.
* **Clock.** ``ecp5``: nextpnr's Fmax from ``bitstreams/ecp5-ecp5/summary.json``
  (``fmax_mhz``); without that file: "no Fmax measured" and no latency at all. Alveo presets:
  300 MHz, labelled assumed. Others: the config's ``clock_mhz``, labelled assumed.
  ``latency_ms`` = ``projected_cycles`` / clock.
* **Floor.** The compute-bound minimum: ``(weight-matmul MACs * N/M + attention MACs) /
  (part DSPs * MACs per DSP)`` cycles (attention's QK and PV are dense; a preset without a
  part DSP count uses its PE count), at the clock. ``utilisation`` = floor / projected.
  ``array_floor_cycles`` is the PE array's own floor for the Program's GEMMs (MACs / (R * C *
  M/N)), as ``nmaccel run`` reports it; ``array_utilisation`` and
  ``kernel_array_utilisation`` divide it by the block model's and the kernel's cycles (the PE
  utilisation of ``DESIGN.md`` section 9: how busy the preset's own PEs are, where
  ``utilisation`` also counts the part's DSPs the array leaves unused).
* **Ceiling.** ``busy_cycles`` (:func:`sw.perf.top.busy_cycles`): the cycles the PE array
  (whole tiles, padding included, each at least ``C`` cycles: the engine drains a tile's
  ``C`` output columns before it takes the next tile's sums), the LayerNorm / residual lanes
  and the LOAD / STORE port are busy with the Program. At batch 1 each of them waits for the
  whole output of the command before it, so no schedule on these units is faster, however
  much of the fetch, staging, loads and write-out it hides; ``busy_utilisation`` = floor /
  ``total`` is the most utilisation the preset's units can reach on this Program.
* **Cycle budget** (:func:`cycle_budget`): the kernel's cycles split floor first, each
  term what the next figure adds to the one before: the array's own floor (fewer PEs than the
  part's DSPs' MACs), its busy cycles by opcode (whole tiles: padding, drain-bound short
  tiles), the vector lanes', the LOAD / STORE port's, and the kernel's overhead beyond them.
  The terms add up to ``kernel_cycles``; each one's share of it is the utilisation it costs.
* **Resources** (:func:`preset_resources`): whether the preset fits its part, from the
  summary ``make bitstream`` wrote (Yosys estimates for the Alveo parts, the routed design for
  ``ecp5``). The projections are those of the preset as configured, fitting or not.
* **Fitting variants** (``--fit-variants``, default on; :func:`fit_variant`): beside each
  preset whose estimate says it does not fit, the same cases on the largest array of its
  columns that the same estimate fits (``bitstreams.xcup.fitting_config``: fewer PE rows,
  and weight ports to match; ``<preset>-<R>x<C>``), against the same floor, so the table
  shows what a design that fits its part reaches as well as the preset's projection.
* **RTL check** (``--rtl-check``, default on; ``make bench`` runs it): one whole encoder
  layer (MiniLM, 1 layer, seq 16, 2:4 by default; a shorter sequence where the preset's
  scratchpad cannot hold 16 tokens) compiled for each ``--rtl-presets`` preset (``tiny``
  and ``ecp5`` by default: the sizes a simulator affords) and run on the ``ref`` backend and
  on the ``rtl`` backend (the generated kernel under ``SIM``, Verilator unless set):
  bit-exactness and the ratio RTL
  cycles / model cycles, reported next to the projections (which stay model-only figures).
* **CPU baselines** measured in the same run by :func:`sw.perf.cpu.run_cpu_bench` (PyTorch
  and ONNX Runtime, fp32 and int8 dynamic; fresh processes, interleaved rounds; median and
  p10-p90), same models and sequence length. ``speedup`` = the best (lowest median) CPU
  baseline's time / the case's projected latency (block model); ``kernel_speedup`` the same
  for the RTL kernel as built (below 1: slower than the CPU). The CPU times include the
  embeddings, the accelerator figures cover the encoder layers only (embeddings run on the
  host).

Nothing here asserts a time; the tests check the arithmetic and the report's structure.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import itertools
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hw.config import PRESETS, AcceleratorConfig, preset
from sw.nm import same_density
from sw.perf.builds import (
    ALVEO_CLOCK_MHZ,
    BITSTREAMS,
    ECP5_SUMMARY,
    fit_variant,
    preset_clock,
    preset_resources,
    read_json,
)
from sw.perf.engine import device_macs_per_cycle

__all__ = [
    "BEGIN", "END", "DEFAULT_MODELS", "DEFAULT_PRESETS", "DEFAULT_SPARSITIES",
    "ALVEO_CLOCK_MHZ", "ECP5_SUMMARY", "ModelShape", "encoder_macs", "floor_cycles",
    "device_macs_per_cycle", "parse_sparsity", "preset_nm", "pruned_nm", "preset_clock",
    "preset_resources",
    "command_stream_bytes", "program_figures", "cycle_budget", "BUDGET", "run_rtl_check",
    "run_encoder_bench", "fit_variant", "write_plot", "write_budget_plot", "budget_plot_path",
    "readme_table", "update_readme", "format_report", "main",
]

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
DEFAULT_MODELS = ("bert-base", "minilm")
DEFAULT_PRESETS = ("ecp5", "u200", "u280")
DEFAULT_SPARSITIES = ("dense", "2:4", "1:4")
#: Calibration sequences per compile: they set integer scales only, never cycles.
CALIBRATION = 2
MODEL_LABELS = {"bert-base": "BERT-base (random weights)", "minilm": "all-MiniLM-L6-v2"}
CPU_LABELS = {"torch-fp32": "PyTorch fp32", "ort-fp32": "ONNX Runtime fp32",
              "torch-int8": "PyTorch int8 dynamic", "ort-int8": "ONNX Runtime int8 dynamic"}


# -- arithmetic: MACs, floor, sparsity, clock ------------------------------------------------
@dataclass(frozen=True)
class ModelShape:
    """The shape of a BERT encoder: what the MAC count and the floor need."""

    layers: int
    hidden: int
    heads: int
    ffn: int

    @classmethod
    def of(cls, hf_config) -> ModelShape:
        """From a Hugging Face ``BertConfig``."""
        return cls(layers=hf_config.num_hidden_layers, hidden=hf_config.hidden_size,
                   heads=hf_config.num_attention_heads, ffn=hf_config.intermediate_size)


def encoder_macs(shape: ModelShape, seq: int, layers: int | None = None) -> dict:
    """Dense multiply-accumulates of ``layers`` encoder layers at ``seq`` tokens:
    ``weight`` (Q, K, V, attention output, FFN in and out: ``seq * (4 H^2 + 2 H F)`` per layer)
    and ``attention`` (QK^T and P.V over all heads: ``2 * seq^2 * H`` per layer)."""
    n = shape.layers if layers is None else layers
    h, f = shape.hidden, shape.ffn
    return {"weight": n * seq * (4 * h * h + 2 * h * f), "attention": n * 2 * seq * seq * h}


def floor_cycles(macs: dict, density: float, macs_per_cycle: float) -> float:
    """The compute-bound minimum: ``(weight MACs * N/M + attention MACs) / MACs per cycle``
    (the weight matmuls skip the pruned weights, attention is dense)."""
    if not 0 < density <= 1:
        raise ValueError(f"density N/M must be in (0, 1], got {density!r}")
    return (macs["weight"] * density + macs["attention"]) / macs_per_cycle


def parse_sparsity(text: str) -> tuple[str, int, int]:
    """``(label, N, M)`` for ``dense`` or ``N:M`` (``dense`` is ``(dense, 1, 1)``)."""
    t = str(text).strip().lower()
    if t == "dense":
        return "dense", 1, 1
    parts = t.split(":")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        n, m = int(parts[0]), int(parts[1])
        if m in (4, 8, 16) and 1 <= n <= m:
            return ("dense" if n == m else f"{n}:{m}"), n, m
    raise ValueError(f"unknown sparsity {text!r}: use 'dense' or N:M with M in 4, 8, 16 and "
                     f"1 <= N <= M (e.g. {', '.join(DEFAULT_SPARSITIES)})")


def preset_nm(config: AcceleratorConfig, n: int, m: int) -> tuple[int, int]:
    """The sparsity ``n:m`` in the preset's M (``2:4`` is ``4:8`` on M = 8); ``ValueError``
    when the density has no such form or the preset cannot run it."""
    if n == m:
        return config.m, config.m
    nc = same_density(n, m, config.m)
    if nc is None:
        raise ValueError(f"{n}:{m} has no equivalent in M = {config.m} (preset "
                         f"{config.name!r})")
    config.check_nm(nc, config.m)
    return nc, config.m


def pruned_nm(config: AcceleratorConfig, n: int, m: int) -> str:
    """The N:M a case prunes to: ``n:m`` itself when ``m`` divides the preset's M (its weights
    then satisfy :func:`preset_nm`'s, which the compiler runs), else :func:`preset_nm` (dense:
    ``M:M``)."""
    if n != m and config.m % m == 0:
        return f"{n}:{m}"
    nc, mc = preset_nm(config, n, m)
    return f"{nc}:{mc}"


# -- a compiled Program: cycles, memory traffic ----------------------------------------------
def command_stream_bytes(cmd, config: AcceleratorConfig) -> int:
    """Bytes one command moves between device memory and the kernel (see module docstring):
    weights and requant records are fetched again for every token block of ``pe_cols``."""
    from sw.compiler.isa import LN_RECORD, RQ_RECORD, Op, linear_param_bytes

    a = cmd.args
    if cmd.op in (Op.LOAD, Op.STORE):
        return a["bytes"]
    blocks = -(-a.get("tokens", 1) // config.pe_cols)
    if cmd.op == Op.LINEAR:  # in the config's weight layout (sw.compiler.weight_layout)
        w, rq = linear_param_bytes(a["rows"], a["k"], a["n"], a["m"], config)
        return (w * config.weight_ports + rq) * blocks  # w: per weight port's bank
    if cmd.op == Op.PV:
        return a["d"] * RQ_RECORD * blocks
    if cmd.op in (Op.LAYERNORM, Op.ADD_LAYERNORM):
        return a["hidden"] * LN_RECORD
    if cmd.op == Op.GELU:
        return 256
    return 0


def program_figures(compiled, clock_mhz: float | None) -> dict:
    """Cycles and memory traffic of a compiled encoder (see module docstring)."""
    from sw.compiler.isa import Op
    from sw.driver.encoder_run import ideal_cycles_by_op
    from sw.driver.executor import command_cycles

    cfg: AcceleratorConfig = compiled.config
    bw = cfg.mem_bandwidth_gbps
    per_cycle = bw * 1e9 / (clock_mhz * 1e6) if bw and clock_mhz else None
    by_op: dict[str, int] = {}
    compute = projected = bound_cmds = 0
    weight_bytes = io_bytes = 0
    mem_cycles = 0.0
    for c in compiled.program.commands:
        if c.op == Op.END:
            break
        cyc = command_cycles(c, cfg)
        by_op[c.op.name] = by_op.get(c.op.name, 0) + cyc
        compute += cyc
        nbytes = command_stream_bytes(c, cfg)
        if c.op in (Op.LOAD, Op.STORE):
            io_bytes += nbytes
        else:
            weight_bytes += nbytes
        if per_cycle is not None:
            mc = nbytes / per_cycle
            mem_cycles += mc
            bound_cmds += mc > cyc
            projected += max(cyc, math.ceil(mc))
    from sw.perf.top import busy_cycles, command_costs, header_cycles

    kernel_by_op: dict[str, int] = {}
    array_floor = ideal_cycles_by_op(compiled)
    commands = compiled.program.commands
    for c, cyc in zip(commands, command_costs(commands, cfg), strict=True):
        kernel_by_op[c.op.name] = kernel_by_op.get(c.op.name, 0) + cyc
    fig = {"model_cycles": compute, "model_cycles_by_op": by_op,
           "kernel_cycles": header_cycles(cfg) + sum(kernel_by_op.values()),
           "kernel_cycles_by_op": kernel_by_op,
           "array_floor_cycles": sum(array_floor.values()), "array_floor_by_op": array_floor,
           "busy_cycles": busy_cycles(compiled.program.commands, cfg),
           "params_bytes": int(compiled.params.size + sum(b.size for b in compiled.banks)),
           "weight_bytes_streamed": weight_bytes, "io_bytes": io_bytes,
           "mem_bandwidth_gbps": bw or None, "spm_peak_bytes": int(compiled.spm_peak),
           "commands": len(compiled.program)}
    fig["weight_stream_ms"] = weight_bytes / (bw * 1e6) if bw else None
    if per_cycle is None:
        fig.update(projected_cycles=compute if clock_mhz and not bw else None,
                   memory_cycles=None, bandwidth_bound=None, bandwidth_bound_commands=None)
        fig["bound"] = "compute (no bandwidth modelled)" if clock_mhz else "unknown: no clock"
    else:
        weight_cycles = weight_bytes / per_cycle
        fig.update(projected_cycles=projected, memory_cycles=mem_cycles,
                   bandwidth_bound=weight_cycles > compute, bandwidth_bound_commands=bound_cmds)
        fig["bound"] = "bandwidth" if fig["bandwidth_bound"] else "compute"
    return fig


# -- compiling the cases ---------------------------------------------------------------------
def _check_model(name: str) -> None:
    if name not in DEFAULT_MODELS and not (Path(name) / "config.json").is_file():
        raise ValueError(f"unknown model {name!r}; known: {', '.join(DEFAULT_MODELS)} or a "
                         "saved BERT model directory")


def _config(p) -> AcceleratorConfig:
    """A config, a preset name, or a config JSON file (``nmaccel config u200 > my.json``,
    edited: what-if projections of a config no preset has)."""
    if isinstance(p, AcceleratorConfig):
        return p
    if p not in PRESETS and Path(p).is_file():
        return AcceleratorConfig.from_json(Path(p))
    if p not in PRESETS and (p.endswith(".json") or os.sep in p):
        raise ValueError(f"config file {p!r}: no such file")
    return preset(p)  # an unknown name: the error lists the presets


def _configs(names) -> list[AcceleratorConfig]:
    configs = [_config(p) for p in names]
    seen = set()
    for c in configs:
        if c.name in seen:
            raise ValueError(f"two configs named {c.name!r} in one run: the report keys its "
                             "cases by config name (give a config file its own 'name')")
        seen.add(c.name)
    return configs


def _prechecks(cfg: AcceleratorConfig, shape: ModelShape, seq: int, n: int, m: int):
    """``(status, reason)`` for a case the preset refuses before compiling, else None."""
    try:
        preset_nm(cfg, n, m)
    except ValueError as e:
        return "unsupported", str(e)
    if not 1 <= seq <= cfg.max_row:
        return "does not fit", f"seq {seq}: preset {cfg.name!r} holds 1..{cfg.max_row} tokens"
    if shape.hidden > cfg.max_hidden:
        return "does not fit", (f"hidden size {shape.hidden} exceeds preset {cfg.name!r} "
                                f"(max_hidden = {cfg.max_hidden})")
    return None


def _compile_cases(models, configs, sparsities, seq, layers, clocks, calibration, progress):
    """Every (model, preset, sparsity) case as a dict; quantizes once per (model, M, N max,
    N) and lowers/allocates/emits per preset."""
    from sw.compiler.encoder import STEPS, CompileError, quantize_step
    from sw.driver.encoder_run import encoder_inputs, load_encoder, max_tokens, prune_oneshot

    cases = []
    for mname in models:
        t0 = time.monotonic()
        net, tok = load_encoder(mname, seed=0)
        shape = ModelShape.of(net.config)
        if seq > max_tokens(net):
            raise ValueError(f"--seq {seq}: model {mname!r} takes at most {max_tokens(net)} "
                             "tokens (its position embeddings)")
        nl = shape.layers if layers is None else layers
        if not 1 <= nl <= shape.layers:
            raise ValueError(f"--layers {layers}: model {mname!r} has {shape.layers} layers")
        calib, cmask, _, _ = encoder_inputs(net, tok, seq)
        calib, cmask = calib[:calibration], cmask[:calibration]
        macs = encoder_macs(shape, seq, nl)
        progress(f"{mname}: {nl} of {shape.layers} layers, hidden {shape.hidden}, seq {seq}: "
                 f"{macs['weight'] / 1e9:.3f} G weight MACs + {macs['attention'] / 1e9:.3f} G "
                 f"attention MACs (loaded in {time.monotonic() - t0:.1f} s)")
        for sp in sparsities:
            label, n, m = parse_sparsity(sp)
            groups: dict[tuple, list] = {}
            for cfg in configs:
                base = {"model": mname, "preset": cfg.name, "sparsity": label,
                        "density": n / m, "seq": seq, "layers": nl, "macs": macs,
                        "hidden": shape.hidden}
                bad = _prechecks(cfg, shape, seq, n, m)
                if bad:
                    cases.append({**base, "status": bad[0], "reason": bad[1]})
                    progress(f"[{mname} {cfg.name} {label}] {bad[0]}: {bad[1]}")
                    continue
                nc, mc = preset_nm(cfg, n, m)
                base["pruned"] = pruned_nm(cfg, n, m)
                groups.setdefault((base["pruned"], mc, cfg.n_max, nc), []).append((cfg, base))
            for (pnm, mc, _, nc), members in groups.items():
                t1 = time.monotonic()
                what = "dense" if nc == mc else f"pruning to {pnm}"
                progress(f"{mname}: {what}, calibrating for "
                         f"{', '.join(c.name for c, _ in members)}")
                pruned_net = copy.deepcopy(net)
                prune_oneshot(pruned_net, pnm, nl)
                try:
                    qe = quantize_step(pruned_net, calib, cmask, members[0][0], layers=nl)
                except CompileError as e:
                    for _cfg, base in members:
                        cases.append({**base, "nm": f"{nc}:{mc}", "status": "does not fit",
                                      "reason": str(e)})
                    continue
                finally:
                    del pruned_net
                tq = time.monotonic() - t1
                for cfg, base in members:
                    t2 = time.monotonic()
                    case = {**base, "nm": f"{nc}:{mc}"}
                    try:
                        ir = dataclasses.replace(qe, config=cfg)
                        for _, step in STEPS:
                            ir = step(ir)
                    except CompileError as e:
                        case.update(status="does not fit", reason=str(e))
                        progress(f"[{mname} {cfg.name} {label}] does not fit: {e}")
                        cases.append(case)
                        continue
                    case.update(status="ok", compile_s=round(tq + time.monotonic() - t2, 1),
                                **program_figures(ir, clocks[cfg.name]["mhz"]))
                    cases.append(case)
                    progress(f"[{mname} {cfg.name} {_sparsity_label(case)}] "
                             f"{case['model_cycles']:,} model cycles, scratchpad peak "
                             f"{case['spm_peak_bytes']:,} B, bound: {case['bound']} "
                             f"({case['compile_s']:.0f} s)")
        del net
    return cases


def _finish_case(case: dict, cfg: AcceleratorConfig, clock: dict) -> None:
    """Add the floor, latency and utilisation (the clock may be missing)."""
    mpc, what = device_macs_per_cycle(cfg)
    fc = floor_cycles(case["macs"], case["density"], mpc)
    mhz = clock["mhz"]
    case.update(floor_cycles=fc, floor_counts=what, clock_mhz=mhz, clock_label=clock["label"],
                floor_ms=fc / (mhz * 1e3) if mhz else None)
    if case["status"] != "ok":
        return
    proj = case["projected_cycles"]
    case["latency_ms"] = proj / (mhz * 1e3) if proj is not None and mhz else None
    case["kernel_ms"] = case["kernel_cycles"] / (mhz * 1e3) if mhz else None
    case["utilisation"] = fc / proj if proj else None
    case["kernel_utilisation"] = fc / case["kernel_cycles"]  # the RTL kernel as built
    case["compute_utilisation"] = fc / case["model_cycles"]
    # DESIGN.md section 9's PE utilisation: over the preset's own PEs, not the part's DSPs
    case["array_utilisation"] = case["array_floor_cycles"] / case["model_cycles"]
    case["kernel_array_utilisation"] = case["array_floor_cycles"] / case["kernel_cycles"]
    # the most any schedule of this Program on these units reaches (sw.perf.top.busy_cycles)
    case["busy_utilisation"] = fc / case["busy_cycles"]["total"]
    case["cycle_budget"] = cycle_budget(case)


#: :func:`cycle_budget`'s terms, in order, and what each counts
BUDGET = {
    "floor": "the floor (the part's DSPs, every MAC useful)",
    "array_size": "the PE array's own floor beyond it (fewer PEs than the part's DSPs' MACs)",
    "tiles_LINEAR": "LINEAR tiles beyond their MACs (padding to R rows and C tokens)",
    "tiles_QK_SOFTMAX": "QK tiles beyond their MACs (padding; tiles shorter than their C-cycle "
                        "drain)",
    "tiles_PV": "PV tiles beyond their MACs (padding: head size to R rows)",
    "vector": "LayerNorm / residual / GELU lanes, serial with the array at batch 1",
    "io": "LOAD / STORE beats",
    "overhead": "the kernel as built beyond its units' busy cycles (fetch and checks, operand "
                "staging, weight and parameter loads, pipeline fill, write-out waits, the "
                "softmax tail)",
}


def cycle_budget(case: dict) -> dict[str, float]:
    """Where the RTL kernel's cycles go, floor first: the :data:`BUDGET` terms, which add up
    to ``kernel_cycles`` (each term is what the next figure adds to the one before: floor,
    the array's own floor, the array's busy cycles by opcode, the vector lanes', the
    LOAD/STORE port's, the kernel's). ``floor / kernel_cycles`` is the kernel's utilisation;
    every other term's share of ``kernel_cycles`` is utilisation it costs."""
    busy = case["busy_cycles"]
    out = {"floor": case["floor_cycles"],
           "array_size": case["array_floor_cycles"] - case["floor_cycles"]}
    for op in ("LINEAR", "QK_SOFTMAX", "PV"):
        out[f"tiles_{op}"] = (busy["array_by_op"].get(op, 0)
                              - case["array_floor_by_op"].get(op, 0.0))
    out.update(vector=busy["vector"], io=busy["io"],
               overhead=case["kernel_cycles"] - busy["total"])
    return out


# -- the RTL check ---------------------------------------------------------------------------
def run_rtl_check(config: AcceleratorConfig | str, *, model: str = "minilm", sparsity="2:4",
                  seq: int = 16, layers: int = 1, device: str = "rtl", progress=print) -> dict:
    """Compile ``layers`` layer(s) of ``model`` for ``config`` and run them on ``ref`` and on
    ``device``: bit-exactness, RTL cycles / the kernel model's (:mod:`sw.perf.top`, 1.0 when
    the model is right) and / the block model's (``ratio``: what the byte-serial staging
    costs). ``seq`` is halved until the layer fits the config's scratchpad (the ``ecp5``
    preset's 32 KiB holds a MiniLM layer at seq 8). ``device="ref"`` lets tests exercise the
    path without a simulator."""
    import numpy as np

    from sw.compiler.encoder import CompileError, compile_encoder
    from sw.driver.device import open_device
    from sw.driver.encoder_run import (
        encoder_inputs,
        ideal_program_cycles,
        load_encoder,
        prune_oneshot,
        run_on_device,
        run_with_progress,
    )

    cfg = _config(config)
    label, n, m = parse_sparsity(sparsity)
    nc, mc = preset_nm(cfg, n, m)
    t0 = time.monotonic()
    net, tok = load_encoder(model, seed=0)
    prune_oneshot(net, pruned_nm(cfg, n, m), layers)
    while True:  # the longest sequence up to ``seq`` (halving) whose layer fits the scratchpad
        calib, cmask, x, xmask = encoder_inputs(net, tok, seq)
        try:
            compiled = compile_encoder(net, cfg, calib, cmask, layers=layers)
            break
        except CompileError as e:
            if "scratchpad" not in str(e) or seq == 1:
                raise
            progress(f"RTL check [{cfg.name}]: seq {seq} does not fit ({e}); seq {seq // 2}")
            seq //= 2
    xq = np.clip(np.round(x.numpy() / compiled.in_scale), -128, 127).astype(np.int8)
    mask = xmask.numpy().astype(bool)
    ref_y, ref_res = run_on_device(open_device("ref", cfg), compiled, xq, mask)
    sim = None
    if device == "rtl":
        os.environ.setdefault("SIM", "verilator")
        from sim.runner import simulator

        sim = simulator()
    progress(f"RTL check [{cfg.name}]: {model}, {layers} layer(s), seq {seq}, {label} "
             f"({nc}:{mc}) on {device}{f' ({sim})' if sim else ''}; kernel model "
             f"{ref_res.cycles:,} cycles")
    t1 = time.monotonic()
    kwargs = {"max_cycles": max(50_000_000, 2 * ref_res.cycles)} if device == "rtl" else {}
    y, res = run_with_progress(device, cfg, compiled, xq, mask, expected_cycles=ref_res.cycles,
                               **kwargs)
    run_s = time.monotonic() - t1
    floor = ideal_program_cycles(compiled)
    block = program_figures(compiled, None)["model_cycles"]
    ok = res.status.name == "OK"
    out = {"preset": cfg.name, "model": model, "sparsity": label, "nm": f"{nc}:{mc}",
           "pruned": pruned_nm(cfg, n, m), "seq": seq, "layers": layers, "device": device,
           "simulator": sim,
           "status": res.status.name, "rtl_cycles": res.cycles, "model_cycles": block,
           "ratio": res.cycles / block if ok else None,
           "kernel_model_cycles": ref_res.cycles,
           "kernel_ratio": res.cycles / ref_res.cycles if ok else None,
           "bit_exact": bool(np.array_equal(y, ref_y)),
           "mismatches": int((y != ref_y).sum()), "array_floor_cycles": floor,
           "rtl_array_utilisation": floor / max(res.cycles, 1),
           "model_array_utilisation": floor / max(block, 1),
           "sim_s": round(run_s, 1), "wall_s": round(time.monotonic() - t0, 1)}
    progress(f"RTL check [{cfg.name}]: {device} {res.status.name}, {res.cycles:,} cycles: "
             f"{res.cycles / ref_res.cycles:.4f} x the kernel model ({ref_res.cycles:,}), "
             f"{res.cycles / block:.2f} x the block model ({block:,}); bit-exact "
             f"{out['bit_exact']}, {run_s:.0f} s")
    return out


# -- the whole benchmark ---------------------------------------------------------------------
def _kernel_speedup(case: dict) -> float | None:
    """The fastest CPU baseline's time / the RTL kernel's projected latency (as built)."""
    best = case.get("best_cpu")
    return best["median_ms"] / case["kernel_ms"] if best and case.get("kernel_ms") else None


def _best_cpu(cpu: dict | None, model: str, seq: int):
    if not cpu or cpu.get("seq") != seq:
        return None
    best = None
    for key, v in cpu.get("cases", {}).items():
        mname, _, backend = key.rpartition("/")
        if mname == model and (best is None or v["median_ms"] < best["median_ms"]):
            best = {"backend": backend, "median_ms": v["median_ms"]}
    return best


def run_encoder_bench(*, models=DEFAULT_MODELS, presets=DEFAULT_PRESETS,
                      sparsities=DEFAULT_SPARSITIES, seq: int = 128, layers: int | None = None,
                      cpu: str = "measure", cpu_json: str | Path | None = None,
                      rounds: int = 5, cpu_iters: int = 10, cpu_warmup: int = 3,
                      threads: int | None = None, rtl_check: bool = True,
                      rtl_presets=("tiny", "ecp5"), rtl_model: str = "minilm",
                      rtl_sparsity="2:4",
                      rtl_seq: int = 16, rtl_layers: int = 1, rtl_device: str = "rtl",
                      alveo_clock_mhz: float = ALVEO_CLOCK_MHZ,
                      ecp5_summary: str | Path = ECP5_SUMMARY, calibration: int = CALIBRATION,
                      fit_variants: bool = True, bitstreams: str | Path = BITSTREAMS,
                      out: str | Path = "build/bench/encoder.json",
                      plot: str | Path | None = "build/bench/encoder.png",
                      readme: str | Path | None = None, cpu_bench=None,
                      onnx_dir: str | Path = "build/bench/onnx", progress=print) -> dict:
    """Run the benchmark, write ``out`` (and ``plot``, and the table into ``readme``); returns
    the report. ``cpu`` is ``measure`` (run :func:`sw.perf.cpu.run_cpu_bench`, or
    ``cpu_bench`` when given: same keywords; its ONNX exports cached in ``onnx_dir``),
    ``reuse`` (read ``cpu_json``; labelled as not measured in this run) or ``none``."""
    from sw import checks

    # (an empty run would also empty the README's table)
    models, presets = checks.selection(models, "--models"), list(presets)
    sparsities = checks.selection(sparsities, "--sparsity")
    checks.selection(presets, "--presets")  # (a config's name twice: _configs below)
    for mname in models:
        _check_model(mname)
    labels: dict[str, str] = {}
    for sp in sparsities:  # dense, 4:4 and 8:8 are one case: the report keys by label
        label = parse_sparsity(sp)[0]
        if label in labels:
            raise ValueError(f"--sparsity {','.join(sparsities)}: {labels[label]} and {sp} "
                             f"are the same case ({label})")
        labels[label] = sp
    configs = _configs(presets)
    resources = {c.name: preset_resources(c, bitstreams=bitstreams) for c in configs}
    if fit_variants:  # beside each preset too large for its part, the largest that fits
        for c in list(configs):
            found = fit_variant(c, bitstreams=bitstreams)
            if found and found[0].name not in resources:
                configs.insert(configs.index(c) + 1, found[0])
                resources[found[0].name] = found[1]
    rtl_configs = _configs(rtl_presets) if rtl_check else []
    if rtl_check:  # before the minutes of compiling: a failed check is reported, not raised
        _check_model(rtl_model)
        parse_sparsity(rtl_sparsity)
        checks.tokens(rtl_seq, "--rtl-seq")
        checks.count(rtl_layers, "--rtl-layers")
        if rtl_device == "rtl":  # an unknown SIM was met after compiling
            from sim.runner import simulator

            os.environ.setdefault("SIM", "verilator")
            simulator()
    # (the CPU options too, though the CPU baselines run last)
    checks.count(rounds, "--rounds")
    checks.count(cpu_iters, "--cpu-iters")
    checks.count(cpu_warmup, "--cpu-warmup", lo=0)
    if threads is not None:
        checks.count(threads, "--threads")
    checks.finite(alveo_clock_mhz, "--alveo-clock-mhz", strict=True)
    if cpu not in ("measure", "reuse", "none"):
        raise ValueError(f"cpu must be 'measure', 'reuse' or 'none', got {cpu!r}")
    if cpu == "reuse" and not (cpu_json and Path(cpu_json).is_file()):
        raise ValueError(f"--cpu-json {cpu_json}: no such file to reuse")
    if cpu == "reuse":  # read before the long work, so that a bad file stops the run at once
        reused = read_json(Path(cpu_json), "CPU report (the bench's -cpu.json)")
    checks.tokens(seq)
    checks.output_path(out, "--out")  # before the minutes of compiling and measuring
    if plot:
        checks.output_path(plot, "--plot")
    if readme:
        _markers(Path(readme).read_text() if Path(readme).is_file() else "", readme)
    t0 = time.monotonic()
    out = Path(out)
    clocks = {c.name: preset_clock(c, ecp5_summary=ecp5_summary,
                                   alveo_clock_mhz=alveo_clock_mhz) for c in configs}
    for c in configs:
        progress(f"preset {c.name}: {c.pe_rows} x {c.pe_cols} PEs, M = {c.m}, "
                 f"{c.spm_kib} KiB scratchpad, {c.mem_bandwidth_gbps:g} GB/s; clock "
                 f"{clocks[c.name]['label']}; resources: {resources[c.name]['label']}")

    cases = _compile_cases(models, configs, sparsities, seq, layers, clocks, calibration,
                           progress)
    by_name = {c.name: c for c in configs}
    order = {"model": {m: i for i, m in enumerate(models)},
             "preset": {c.name: i for i, c in enumerate(configs)},
             "sparsity": {parse_sparsity(s)[0]: i for i, s in enumerate(sparsities)}}
    cases.sort(key=lambda c: tuple(order[k][c[k]] for k in ("model", "preset", "sparsity")))
    for case in cases:
        _finish_case(case, by_name[case["preset"]], clocks[case["preset"]])

    rtl = []
    for cfg in rtl_configs:
        try:
            rtl.append(run_rtl_check(cfg, model=rtl_model, sparsity=rtl_sparsity, seq=rtl_seq,
                                     layers=rtl_layers, device=rtl_device, progress=progress))
        except Exception as e:  # a failed check is reported, not hidden
            progress(f"RTL check [{cfg.name}] failed: {type(e).__name__}: {e}")
            rtl.append({"preset": cfg.name, "model": rtl_model, "seq": rtl_seq,
                        "layers": rtl_layers, "status": "failed",
                        "error": f"{type(e).__name__}: {e}"})

    cpu_report, cpu_source = None, None
    if cpu == "measure":
        from sw.perf.cpu import BACKENDS, run_cpu_bench

        fn = cpu_bench or run_cpu_bench
        progress(f"CPU baselines: {', '.join(models)} x {', '.join(BACKENDS)}, seq {seq}, "
                 f"{rounds} rounds x {cpu_iters} passes")
        cpu_report = fn(models=models, backends=BACKENDS, seq=seq, rounds=rounds,
                        iters=cpu_iters, warmup=cpu_warmup, threads=threads,
                        out=out.with_name(out.stem + "-cpu.json"), onnx_dir=onnx_dir,
                        progress=progress)
        cpu_source = "measured in this run"
    elif cpu == "reuse":
        cpu_report = reused
        when = cpu_report.get("measured", "at a time the report does not record")
        cpu_source = f"reused from {cpu_json}, measured {when}, not in this run"
        if cpu_report.get("seq") != seq:
            progress(f"CPU report {cpu_json} is for seq {cpu_report.get('seq')}, not {seq}: "
                     "no speed-ups")

    full = layers is None
    ratio = {r["preset"]: r for r in rtl if r.get("status") == "OK"}
    for case in cases:
        best = _best_cpu(cpu_report, case["model"], seq) if full else None
        case["best_cpu"] = best
        lat = case.get("latency_ms")
        case["speedup"] = best["median_ms"] / lat if best and lat else None
        case["kernel_speedup"] = _kernel_speedup(case)
        r = ratio.get(case["preset"])
        if r and case["status"] == "ok":
            case["rtl_kernel_ratio"] = r["kernel_ratio"]  # that preset's RTL / kernel model
    report = {
        "generated": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seq": seq, "batch": 1, "layers": layers or "all",
        "models": models, "presets": {c.name: {"config": c.to_dict(), "clock": clocks[c.name],
                                               "macs_per_cycle": device_macs_per_cycle(c)[0],
                                               "floor_counts": device_macs_per_cycle(c)[1],
                                               "resources": resources[c.name]}
                                      for c in configs},
        "sparsities": [parse_sparsity(s)[0] for s in sparsities],
        "calibration_sequences": calibration,
        "cases": cases, "rtl_checks": rtl,
        "cpu": cpu_report, "cpu_source": cpu_source,
        "notes": [
            "model_cycles: the block model (sw.driver.executor.command_cycles: every block fed "
            "at full rate, commands one after another); projected_cycles add device-memory "
            "streaming per command (max of compute and memory); latency = projected / clock",
            "kernel_cycles / kernel_ms: the kernel as built (sw/perf/top.py, equal to the "
            "RTL's cycle counter; rtl_checks runs one layer on the RTL to show it); "
            "kernel_cycles_by_op: the same per opcode (the header's cycles excluded)",
            "floor: (weight MACs * N/M + attention MACs) / (part DSPs * MACs per DSP)",
            "cycle_budget: kernel_cycles split floor first (terms: "
            + "; ".join(f"{k}: {v}" for k, v in BUDGET.items()) + "); they add up to "
            "kernel_cycles",
            "CPU times include the embeddings; accelerator figures cover the encoder layers",
            "speed-up: best CPU baseline's median / projected latency"
            + ("" if full else " (not computed: --layers limits the encoder)"),
        ],
        "wall_s": None,
    }
    report["wall_s"] = round(time.monotonic() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")
    progress(f"wrote {out}")
    if plot:
        write_plot(report, plot)
        progress(f"wrote {plot}")
        if write_budget_plot(report, budget_plot_path(plot)):
            progress(f"wrote {budget_plot_path(plot)}")
    if readme:
        update_readme(readme, report)
        progress(f"updated the table in {readme}")
    return report


def _jsonable(v):
    import numpy as np

    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


# -- presentation: plot, README table, summary -----------------------------------------------
def _case_label(c: dict) -> str:
    return f"{c['preset']} {_sparsity_label(c)}"


def _sparsity_label(c: dict) -> str:
    """``2:4 (as 4:8)`` where the preset's M writes the sparsity differently."""
    nm = c.get("nm")
    if nm and c["sparsity"] != "dense" and nm != c["sparsity"]:
        return f"{c['sparsity']} (as {nm})"
    return c["sparsity"]


def write_plot(report: dict, path: str | Path) -> list[str]:
    """Latency per case on a log scale, one panel per model: the CPU baselines (median,
    p10-p90 bars) beside the accelerator's projected latencies (block model), each with its
    floor marked (a black bar) and the RTL kernel as built (``kernel_ms``, a red x); the
    fitting variants' bars hatched. Cases without a latency are labelled below the axis."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("the plot needs matplotlib (pip install matplotlib), or pass "
                           "--plot '' for none") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    models = report["models"]
    variants = {k for k, v in report.get("presets", {}).items()  # hatched: fitting variants
                if v.get("resources", {}).get("variant_of")}
    bars = max(sum(c["model"] == m for c in report["cases"]) for m in models) + 4
    width = max(12, 0.85 * bars) + 2.5  # and the legend beside the first panel
    fig, axes = plt.subplots(len(models), 1, figsize=(width, 4.4 * len(models)), squeeze=False)
    colours = {"dense": "#4c72b0", "2:4": "#55a868", "1:4": "#c44e52"}
    others = itertools.cycle(["#8172b2", "#937860", "#da8bc3", "#ccb974", "#64b5cd", "#8c8c8c"])
    for c in report["cases"]:  # other sparsities (e.g. 2:8) in the order they come
        if c["sparsity"] not in colours:
            colours[c["sparsity"]] = next(others)
    cpu = report.get("cpu") or {}
    drawn: set[str] = set()  # what the legend names: only series some panel shows
    for ax, mname in zip(axes[:, 0], models, strict=True):
        labels, x = [], 0
        for key, v in (cpu.get("cases") or {}).items():
            mn, _, backend = key.rpartition("/")
            if mn != mname or report["seq"] != cpu.get("seq"):
                continue
            med = v["median_ms"]
            err = [[med - v.get("p10_ms", med)], [v.get("p90_ms", med) - med]]
            ax.bar(x, med, color="#999999", yerr=err, capsize=3)
            drawn.add("cpu")
            labels.append("CPU\n" + backend.replace("torch-", "torch ").replace("ort-", "ORT "))
            x += 1
        for c in report["cases"]:
            if c["model"] != mname:
                continue
            lat = c.get("latency_ms")
            if lat:
                variant = c["preset"] in variants
                ax.bar(x, lat, color=colours[c["sparsity"]],
                       hatch="//" if variant else None, edgecolor="white" if variant else None)
                drawn.update({c["sparsity"]} | ({"variant"} if variant else set()))
                if c.get("floor_ms"):
                    ax.hlines(c["floor_ms"], x - 0.4, x + 0.4, colors="black", linewidth=2)
                    drawn.add("floor")
                if c.get("kernel_ms"):
                    ax.plot(x, c["kernel_ms"], "x", color="red", markersize=8)
                    drawn.add("kernel")
            else:
                why = "does not fit" if c["status"] == "does not fit" else (
                    "no clock" if c["status"] == "ok" else c["status"])
                ax.annotate(why, (x, 0.03), xycoords=("data", "axes fraction"), ha="center",
                            va="bottom", rotation=90, fontsize=7, color="#555555")
            labels.append(_case_label(c).replace(" ", "\n", 1).replace(" (as", "\n(as"))
            x += 1
        ax.set_yscale("log")
        ax.set_xlim(-0.6, max(x, 1) - 0.4)
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_ylabel("latency (ms, log)")
        ax.set_title(f"{MODEL_LABELS.get(mname, mname)}: batch 1, seq {report['seq']} "
                     "(accelerator: block-model projections; black bar = compute floor; "
                     "red x = the RTL kernel as built)", fontsize=9)
        ax.grid(axis="y", which="both", alpha=0.3)
    series = {"cpu": Patch(color="#999999", label="CPU (median, p10-p90)")}
    series |= {k: Patch(color=v, label=f"accelerator {k}") for k, v in colours.items()}
    series |= {"variant": Patch(facecolor="#bbbbbb", hatch="//", edgecolor="white",
                                label="largest array that fits the part (<preset>-RxC)"),
               "floor": Line2D([], [], color="black", linewidth=2, label="compute floor"),
               "kernel": Line2D([], [], marker="x", color="red", linestyle="",
                                label="RTL kernel as built (sw/perf/top.py)")}
    handles = [h for k, h in series.items() if k in drawn]
    if handles:  # beside the first panel, clear of its bars
        axes[0, 0].legend(handles=handles, fontsize=7, loc="upper left",
                          bbox_to_anchor=(1.005, 1.0), borderaxespad=0)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return [h.get_label() for h in handles]


#: the README's and the budget plot's name for each :data:`BUDGET` term
BUDGET_LABELS = {"floor": "floor (= utilisation)", "array_size": "PE array < part's DSPs",
                 "tiles_LINEAR": "LINEAR tiles", "tiles_QK_SOFTMAX": "QK tiles",
                 "tiles_PV": "PV tiles", "vector": "LayerNorm / GELU lanes",
                 "io": "LOAD / STORE", "overhead": "kernel overhead"}


def budget_plot_path(plot: str | Path) -> Path:
    """Where the budget plot goes beside the latency plot ``plot``."""
    plot = Path(plot)
    return plot.with_name(plot.stem + "-budget" + plot.suffix)


def write_budget_plot(report: dict, path: str | Path) -> bool:
    """The cycle budget of every case that has one (:func:`cycle_budget`) as a stacked bar of
    shares of the RTL kernel's cycles, the floor first (its share is the utilisation);
    False (nothing written) without such a case."""
    rows = [c for c in report["cases"] if c.get("cycle_budget")]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = ["#55a868", "#8172b2", "#4c72b0", "#c44e52", "#dd8452", "#937860", "#da8bc3",
               "#8c8c8c"]
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.3 * len(rows)))
    names = [f"{MODEL_LABELS.get(c['model'], c['model'])}, {_case_label(c)}" for c in rows]
    left = [0.0] * len(rows)
    for (key, label), colour in zip(BUDGET_LABELS.items(), colours, strict=True):
        share = [100 * c["cycle_budget"][key] / c["kernel_cycles"] for c in rows]
        ax.barh(range(len(rows)), share, left=left, color=colour, label=label)
        left = [a + b for a, b in zip(left, share, strict=True)]
    ax.set_yticks(range(len(rows)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of the RTL kernel's cycles (%)")
    ax.set_title(f"Where the kernel's cycles go: batch 1, seq {report['seq']} (sw/perf/top.py; "
                 "the floor's share is the utilisation)", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def _ms(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3g} ms" if v < 1 else f"{v:,.1f} ms"


def _floor(c: dict) -> str:
    if c.get("floor_ms") is not None:
        return _ms(c["floor_ms"])
    return f"{c['floor_cycles']:,.0f} cycles" if c.get("floor_cycles") else "-"


def readme_table(report: dict) -> str:
    """The markdown README.md shows between the markers, generated from the JSON report."""
    seq = report["seq"]
    lines = [f"Generated by `python -m sw.perf.encoder_bench` ({report['generated']}); batch 1, "
             f"seq {seq}. Accelerator figures are **projections**, not measurements: the "
             "*block model* (every block fed at full rate, commands one after another, plus "
             "weight streaming at each preset's device-memory bandwidth) and the *RTL kernel* "
             "as built today (`sw/perf/top.py`, cycle-exact against the RTL), both at the "
             "clock below. Speed-ups are over the fastest CPU baseline below, for the "
             "block model and for the kernel as built (below 1x: slower than the CPU)."]
    clocks = "; ".join(f"{k}: {v['clock']['label']}" for k, v in report["presets"].items())
    lines += ["", f"Clocks: {clocks}. Floor: the compute-bound minimum, (weight MACs x N/M + "
              "attention MACs) / (the part's DSPs x MACs per DSP); utilisation = floor / "
              "projected (for the block model, and for the RTL kernel as built). Ceiling: "
              "floor / the cycles the PE array (whole tiles, each at least as long as its "
              "output drain of one token a cycle), the LayerNorm lanes and the "
              "LOAD/STORE port are busy, one after the other as batch 1 needs them: the most "
              "utilisation any schedule of the Program on the preset's units reaches.", ""]
    delays = {k: v.get("config", {}).get("mem_read_delay", 0)
              for k, v in report["presets"].items()}
    slow = "; ".join(f"{k}: {d} cycles more" for k, d in delays.items() if d)
    lines += ["Device memory in the kernel projections: each read burst's first beat 2 cycles "
              "after its AR, as the benches' AXI RAM answers (the RTL checks' memory), unless a "
              "config's `mem_read_delay` says later" + (f" ({slow})" if slow else "") + "; a "
              "real DDR or HBM controller is slower (see the text below the table).", ""]
    res = [f"{k}: {v['resources']['label']}" for k, v in report["presets"].items()
           if v.get("resources", {}).get("fits") is not None]
    if res:
        lines += ["Resources (each config's figures above are those of the config as given, "
                  "fitting its part or not): "
                  + "; ".join(res) + ".", ""]
    for r in report.get("rtl_checks") or []:
        if r.get("status") == "OK":
            lines.append(
                f"RTL check ({r['preset']} preset, {MODEL_LABELS.get(r['model'], r['model'])}, "
                f"{r['layers']} layer, seq {r['seq']}, {r['sparsity']}, {r['simulator']}): "
                f"{r['rtl_cycles']:,} RTL cycles, **{r['kernel_ratio']:.4f} x the kernel "
                f"model** ({r['kernel_model_cycles']:,}) and {r['ratio']:.2f} x the block "
                f"model ({r['model_cycles']:,}); bit-exact: {r['bit_exact']}.")
        else:
            lines.append(f"RTL check ({r['preset']}): {r.get('status')} "
                         f"({r.get('error', '')}).")
    if not report.get("rtl_checks"):
        lines.append("RTL check: not run (`--no-rtl-check`); the figures are model-only.")
    lines += ["", "| model | preset | sparsity | block-model cycles | projected latency (block "
              "model) | floor | utilisation | bound | RTL kernel as built | utilisation "
              "(kernel as built) | ceiling | best CPU | speed-up (block model) | speed-up "
              "(kernel as built) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in report["cases"]:
        model = MODEL_LABELS.get(c["model"], c["model"])
        sp = _sparsity_label(c)
        if c["status"] != "ok":
            reason = c.get("reason", "").split("; use")[0].replace("|", "/")
            lines.append(f"| {model} | {c['preset']} | {sp} | {c['status']}: {reason} "
                         f"| - | {_floor(c)} | - | - | - | - | - | - | - | - |")
            continue
        lat = _ms(c.get("latency_ms")) if c.get("latency_ms") else "no clock"
        util = f"{c['utilisation']:.2f}" if c.get("utilisation") else "-"
        kern = (f"{_ms(c['kernel_ms'])} ({c['kernel_cycles']:,} cycles)" if c.get("kernel_ms")
                else f"{c['kernel_cycles']:,} cycles")
        k_util = (f"{c['kernel_utilisation']:.2f}" if c.get("kernel_utilisation") is not None
                  else "-")  # reports written before the field existed have none
        ceil = (f"{c['busy_utilisation']:.2f}" if c.get("busy_utilisation") is not None
                else "-")
        best = c.get("best_cpu")
        cpu = f"{_ms(best['median_ms'])} ({best['backend']})" if best else "-"
        sp_up = f"{c['speedup']:.1f}x" if c.get("speedup") else "-"
        k_sp = _kernel_speedup(c)  # also for reports written before the field existed
        k_up = f"{k_sp:.2f}x" if k_sp else "-"
        lines.append(f"| {model} | {c['preset']} | {sp} | {c['model_cycles']:,} | {lat} | "
                     f"{_floor(c)} | {util} | {c['bound']} | {kern} | {k_util} | {ceil} | "
                     f"{cpu} | "
                     f"{sp_up} | {k_up} |")
    lines += _budget_table(report["cases"])
    cpu = report.get("cpu")
    if cpu and cpu.get("cases"):
        backends = list(CPU_LABELS)
        lines += ["", f"CPU baselines ({report.get('cpu_source')}; {cpu.get('cpu', '?')}, "
                  f"{cpu.get('logical_cpus', '?')} logical CPUs, seq {cpu.get('seq')}, median "
                  "(p10-p90)):", "",
                  "| model | " + " | ".join(CPU_LABELS[b] for b in backends) + " |",
                  "|---|" + "---|" * len(backends)]
        for mname in report["models"]:
            cells = []
            for b in backends:
                v = cpu["cases"].get(f"{mname}/{b}")
                cells.append(f"{v['median_ms']:.1f} ms ({v.get('p10_ms', 0):.1f}-"
                             f"{v.get('p90_ms', 0):.1f})" if v else "-")
            lines.append(f"| {MODEL_LABELS.get(mname, mname)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _budget_table(cases: list[dict]) -> list[str]:
    """The README's cycle budget of each case that has one (:func:`cycle_budget`)."""
    rows = [c for c in cases if c.get("cycle_budget")]
    if not rows:
        return []
    heads = BUDGET_LABELS
    lines = ["", "Where the RTL kernel's cycles go, as shares of its cycles: the floor's share is "
             "the kernel's utilisation, each other column the utilisation a cause costs (PE "
             "array < part's DSPs: the array's own floor beyond the part's; tiles: the array's "
             "busy cycles beyond its floor, i.e. padding and tiles shorter than their output "
             "drain; lanes and LOAD / STORE: their busy cycles, serial with the array at batch "
             "1; kernel overhead: the rest, i.e. fetch, staging, loads, pipeline fill, "
             "write-out waits). `cycle_budget` in the JSON has the cycles.", "",
             "| model | preset | sparsity | " + " | ".join(heads.values()) + " |",
             "|---|---|---|" + "---|" * len(heads)]
    for c in rows:
        b, total = c["cycle_budget"], c["kernel_cycles"]
        cells = [f"{100 * b[k] / total:.1f} %" for k in heads]
        lines.append(f"| {MODEL_LABELS.get(c['model'], c['model'])} | {c['preset']} | "
                     f"{_sparsity_label(c)} | " + " | ".join(cells) + " |")
    return lines


def update_readme(path: str | Path, report: dict) -> None:
    """Replace what lies between :data:`BEGIN` and :data:`END` in ``path`` with
    :func:`readme_table`; everything else is left as it is."""
    path = Path(path)
    text = path.read_text()
    i, j = _markers(text, path)
    path.write_text(text[: i + len(BEGIN)] + "\n" + readme_table(report) + text[j:])


def _markers(text: str, path) -> tuple[int, int]:
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < i or text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"{path}: needs exactly one {BEGIN} followed by one {END}")
    return i, j


def _largest_losses(case: dict, n: int = 3) -> str:
    """The ``n`` largest non-floor terms of a case's :func:`cycle_budget`, as shares of the
    kernel's cycles."""
    b, total = case["cycle_budget"], case["kernel_cycles"]
    terms = sorted((k for k in b if k != "floor"), key=lambda k: -b[k])[:n]
    return ", ".join(f"{BUDGET_LABELS[k]} {100 * b[k] / total:.1f} %" for k in terms)


def format_report(report: dict) -> str:
    """A terminal summary of the report."""
    lines = [f"encoder benchmark, batch 1, seq {report['seq']} (accelerator: block-model "
             "projections, and the RTL kernel as built)"]
    width = max([18] + [len(_case_label(c)) for c in report["cases"]])
    for c in report["cases"]:
        head = f"  {c['model']:10s} {_case_label(c):{width}s}"
        if c["status"] != "ok":
            lines.append(f"{head} {c['status']}: {c['reason']}")
            continue
        lat = _ms(c.get("latency_ms")) if c.get("latency_ms") else "no clock"
        util = f"{c['utilisation']:.2f}" if c.get("utilisation") else "-"
        sp = f", {c['speedup']:.1f}x vs {c['best_cpu']['backend']}" if c.get("speedup") else ""
        kern = _ms(c["kernel_ms"]) if c.get("kernel_ms") else f"{c['kernel_cycles']:,} cycles"
        k_util = c.get("kernel_utilisation")
        k_util = f", util {k_util:.2f}" if k_util is not None else ""
        if c.get("busy_utilisation") is not None:
            k_util += f" (ceiling {c['busy_utilisation']:.2f})"
        lines.append(f"{head} {c['model_cycles']:>12,} cycles, {lat:>10s} (floor "
                     f"{_floor(c)}, util {util}, bound: {c['bound']}){sp}; RTL kernel as "
                     f"built: {kern}{k_util}")
        if c.get("cycle_budget"):
            lines.append(f"{'':{width + 13}s} kernel's largest losses: {_largest_losses(c)}")
    for r in report.get("rtl_checks") or []:
        if r.get("status") == "OK":
            lines.append(f"  RTL check {r['preset']}: {r['rtl_cycles']:,} RTL cycles = "
                         f"{r['kernel_ratio']:.4f} x the kernel model, {r['ratio']:.2f} x "
                         f"the block model; bit-exact {r['bit_exact']}")
        else:
            lines.append(f"  RTL check {r['preset']}: {r.get('status')} {r.get('error', '')}")
    return "\n".join(lines)


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv=None, prog: str = "python -m sw.perf.encoder_bench") -> int:
    p = argparse.ArgumentParser(prog=prog,
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help="comma-separated: bert-base, minilm or saved model directories")
    p.add_argument("--presets", default=",".join(DEFAULT_PRESETS),
                   help="comma-separated preset names or config JSON files (`nmaccel config "
                        "u200 > x.json`, edited, with its own name): what-if projections")
    p.add_argument("--sparsity", default=",".join(DEFAULT_SPARSITIES),
                   help="comma-separated: dense and/or N:M (default dense,2:4,1:4)")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--layers", type=int, default=None,
                   help="first layers only (quick runs; disables speed-ups)")
    p.add_argument("--rounds", type=int, default=5, help="CPU rounds (fresh processes)")
    p.add_argument("--cpu-iters", type=int, default=10)
    p.add_argument("--cpu-warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    cpu = p.add_mutually_exclusive_group()
    cpu.add_argument("--cpu-json", help="reuse this CPU report instead of measuring")
    cpu.add_argument("--no-cpu", action="store_true", help="no CPU baselines")
    p.add_argument("--rtl-check", action=argparse.BooleanOptionalAction, default=True,
                   help="run one encoder layer on the RTL per --rtl-presets (default on)")
    p.add_argument("--rtl-presets", default="tiny,ecp5",
                   help="presets whose kernel runs the RTL check (default: tiny,ecp5)")
    p.add_argument("--rtl-model", default="minilm")
    p.add_argument("--rtl-sparsity", default="2:4")
    p.add_argument("--rtl-seq", type=int, default=16)
    p.add_argument("--rtl-layers", type=int, default=1)
    p.add_argument("--fit-variants", action=argparse.BooleanOptionalAction, default=True,
                   help="beside each preset its build summary says does not fit its part, "
                        "project the largest array of its columns that does (default on)")
    p.add_argument("--alveo-clock-mhz", type=float, default=ALVEO_CLOCK_MHZ)
    p.add_argument("--ecp5-summary", default=str(ECP5_SUMMARY))
    p.add_argument("--out", default="build/bench/encoder.json")
    p.add_argument("--plot", default="build/bench/encoder.png", help="'' for no plot")
    p.add_argument("--readme", default=None, help="update the table between the markers")
    p.add_argument("--onnx-dir", default="build/bench/onnx",
                   help="where the CPU baselines' ONNX exports are cached")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        report = run_encoder_bench(
            models=_csv(args.models), presets=_csv(args.presets),
            sparsities=_csv(args.sparsity), seq=args.seq, layers=args.layers,
            cpu="none" if args.no_cpu else ("reuse" if args.cpu_json else "measure"),
            cpu_json=args.cpu_json, rounds=args.rounds, cpu_iters=args.cpu_iters,
            cpu_warmup=args.cpu_warmup, threads=args.threads, rtl_check=args.rtl_check,
            rtl_presets=_csv(args.rtl_presets), rtl_model=args.rtl_model,
            rtl_sparsity=args.rtl_sparsity, rtl_seq=args.rtl_seq, rtl_layers=args.rtl_layers,
            alveo_clock_mhz=args.alveo_clock_mhz, ecp5_summary=args.ecp5_summary,
            fit_variants=args.fit_variants, out=args.out, plot=args.plot or None,
            readme=args.readme, onnx_dir=args.onnx_dir,
            progress=lambda s: print(s, flush=True))
    except (ValueError, RuntimeError, OSError) as e:  # one line, as nmaccel's errors
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
