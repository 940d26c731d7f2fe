"""int8 accuracy of a (pruned) BERT classifier through the bit-exact integer encoder.

Post-training quantization in the numerics contract's terms: the encoder is calibrated on a
few training sentences (:func:`sw.compiler.encoder.quantize_step`: per-channel int8 weights,
MSE-clipped per-tensor int8 activations, int16 residual path) and every test sentence runs
through :func:`sw.compiler.qlayer.layer_int`, the same integer model the ``ref`` device
backend and the RTL must equal bit for bit. The embeddings (host side) and the pooler and
classifier head (one token, not on the accelerator) stay float.

Each sentence runs at its own length: keys past the end are masked anyway, so dropping the
padding changes no real token's output and saves most of the work.

:func:`int8_evaluate` returns the calibrated encoder with the accuracy, so the one that
produced a reported figure is the one saved (:mod:`sw.prune.packed`), and evaluates a given
encoder as it is; :func:`calibration_record` describes a calibration for the packed file's
metadata (what ``nmaccel eval --int8`` repeats to check the file).
"""

from __future__ import annotations

import numpy as np
import torch

from hw.config import AcceleratorConfig

from .data import Example

__all__ = ["calibrate_int8", "int8_accuracy", "int8_evaluate", "calibration_record",
           "CALIBRATION_SENTENCES"]

CALIBRATION_SENTENCES = 64
#: N:M detection and packing do not change integer results, so any config with the model's
#: sizes will do; M = 4 covers 1:4 and 2:4 packing, other patterns run as dense (same values).
_EVAL_CONFIG = AcceleratorConfig(name="int8-eval", max_hidden=1024)


def calibrate_int8(model, tok, calib: list[Example], *, seq: int = 64):
    """The :class:`~sw.compiler.encoder.QuantEncoder` of a ``BertForSequenceClassification``."""
    from sw.compiler.encoder import quantize_step

    if not calib:
        raise ValueError("int8 calibration needs at least one sentence")
    enc = tok([e.text for e in calib], padding="max_length", truncation=True, max_length=seq,
              return_tensors="pt")
    with torch.no_grad():
        emb = model.bert.embeddings(input_ids=enc["input_ids"],
                                    token_type_ids=enc.get("token_type_ids"))
    return quantize_step(model.bert, emb, enc["attention_mask"].bool(), _EVAL_CONFIG)


def calibration_record(sentences: int, *, seq: int, split_seed: int) -> dict:
    """How :func:`calibrate_int8` was run: the first ``sentences`` training sentences of the
    Rotten Tomatoes split with ``split_seed``, padded or cut to ``seq`` tokens."""
    return {"sentences": sentences, "from": "the first training sentences of the split",
            "split_seed": split_seed, "seq": seq,
            "method": "sw.compiler.encoder.quantize_step: per-channel int8 weights, MSE-clipped "
                      "per-tensor int8 activations (per-head amax for Q and K), int16 residual "
                      "path"}


def int8_logits(model, tok, qe, text: str, *, seq: int = 64) -> torch.Tensor:
    from sw.compiler.qlayer import layer_int

    enc = tok(text, truncation=True, max_length=seq, return_tensors="pt")
    with torch.no_grad():
        emb = model.bert.embeddings(input_ids=enc["input_ids"],
                                    token_type_ids=enc.get("token_type_ids"))[0]
    x = np.clip(np.round(emb.numpy() / qe.in_scale), -128, 127).astype(np.int64)
    for ql in qe.layers:
        x = layer_int(ql, x)
    h = torch.as_tensor(x[None].astype(np.float32) * qe.out_scale)
    with torch.no_grad():
        return model.classifier(model.dropout(model.bert.pooler(h)))[0]


def int8_evaluate(model, tok, test: list[Example], calib: list[Example] | None = None, *,
                  seq: int = 64, encoder=None, progress: bool = True):
    """``(accuracy, encoder)``: the int8 integer encoder's accuracy on ``test``; the encoder
    is calibrated on ``calib`` (PTQ, sentences at ``seq`` tokens) unless ``encoder`` is
    given."""
    from tqdm.auto import tqdm

    if not test:
        raise ValueError("no evaluation examples")
    model.eval()
    qe = calibrate_int8(model, tok, calib, seq=seq) if encoder is None else encoder
    correct = 0
    for e in tqdm(test, desc="evaluate int8", disable=not progress):
        correct += int(int(int8_logits(model, tok, qe, e.text, seq=seq).argmax()) == e.label)
    return correct / len(test), qe


def int8_accuracy(model, tok, test: list[Example], calib: list[Example], *, seq: int = 64,
                  progress: bool = True) -> float:
    """Accuracy of the int8 integer encoder (PTQ on ``calib``) on ``test``."""
    return int8_evaluate(model, tok, test, calib, seq=seq, progress=progress)[0]
