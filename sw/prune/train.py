"""Fine-tuning and evaluation loops for sentence classification (CPU, progress bars).

:func:`finetune` trains a ``BertForSequenceClassification`` for a number of epochs (fractions
allowed), calling ``on_step`` after every optimizer step (where a :class:`GradualPruner` or
SR-STE mask refresh plugs in) and adding :func:`distillation_loss` against a teacher when one
is given. :func:`evaluate` returns accuracy. Both show a tqdm bar with an ETA.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from .data import Example
from .recovery import distillation_loss

__all__ = ["batches", "finetune", "evaluate"]


def batches(tokenizer, data: list[Example], *, batch_size: int, seq: int, shuffle: bool = False,
            seed: int = 0, bucket: bool = False):
    """Tokenized batches ``(inputs, labels)``; ``shuffle`` with a fixed seed.

    ``bucket`` (with ``shuffle``): sentences of similar length share a batch (the shuffled
    order is sorted by length inside windows of 50 batches, then the batches are shuffled), so
    little time goes into padding; the batches stay random from epoch to epoch.
    """
    order = np.arange(len(data))
    if shuffle:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(data))
        if bucket:
            lengths = np.array([len(data[i].text) for i in order])
            window = 50 * batch_size
            order = np.concatenate([
                order[s:s + window][np.argsort(lengths[s:s + window], kind="stable")]
                for s in range(0, len(order), window)])
            chunks = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
            order = np.concatenate([chunks[i] for i in rng.permutation(len(chunks))])
    for start in range(0, len(order), batch_size):
        chunk = [data[i] for i in order[start:start + batch_size]]
        inputs = tokenizer([e.text for e in chunk], padding=True, truncation=True,
                           max_length=seq, return_tensors="pt")
        yield dict(inputs), torch.tensor([e.label for e in chunk])


def finetune(model, tokenizer, train: list[Example], *, epochs: float = 1.0,
             batch_size: int = 32, seq: int = 64, lr: float = 5e-5, seed: int = 0,
             teacher=None, kd_weight: float = 0.5, kd_hidden: float = 1.0,
             kd_temperature: float = 2.0, bucket: bool = False, on_step=None,
             progress: bool = True) -> dict:
    """Train ``model`` in place; returns ``{"steps", "loss", "wall_s"}``.

    With a ``teacher``, the loss is ``(1 - kd_weight) * CE + kd_weight *``
    :func:`distillation_loss` (``kd_temperature``; ``kd_hidden`` weighs the hidden-state MSE,
    0 for logits only). ``lr`` decays linearly to 0 over the run; ``bucket``: see
    :func:`batches`.
    """
    from tqdm.auto import tqdm

    if not train:
        raise ValueError("no training examples")
    if epochs <= 0:
        return {"steps": 0, "loss": None, "wall_s": 0.0}
    torch.manual_seed(seed)
    per_epoch = math.ceil(len(train) / batch_size)
    total = max(1, round(epochs * per_epoch))
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / total))
    model.train()
    if teacher is not None:
        teacher.eval()
    t0, step, last = time.perf_counter(), 0, float("nan")
    bar = tqdm(total=total, desc="fine-tune", disable=not progress, unit="step")
    epoch = 0
    while step < total:
        for inputs, labels in batches(tokenizer, train, batch_size=batch_size, seq=seq,
                                      shuffle=True, seed=seed + epoch, bucket=bucket):
            hidden = teacher is not None and kd_hidden > 0
            out = model(**inputs, labels=labels, output_hidden_states=hidden)
            loss = out.loss
            if teacher is not None:
                with torch.no_grad():
                    t_out = teacher(**inputs, output_hidden_states=hidden)
                loss = (1 - kd_weight) * loss + kd_weight * distillation_loss(
                    out.logits, t_out.logits, temperature=kd_temperature,
                    student_hidden=out.hidden_states if hidden else None,
                    teacher_hidden=t_out.hidden_states if hidden else None,
                    hidden_weight=kd_hidden)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            last = float(loss.detach())
            if on_step is not None:
                on_step(step)
            bar.update(1)
            bar.set_postfix(loss=f"{last:.3f}")
            if step >= total:
                break
        epoch += 1
    bar.close()
    model.eval()
    return {"steps": step, "loss": last, "wall_s": round(time.perf_counter() - t0, 1)}


def evaluate(model, tokenizer, data: list[Example], *, batch_size: int = 64, seq: int = 64,
             progress: bool = True) -> float:
    """Accuracy of ``model`` on ``data``."""
    from tqdm.auto import tqdm

    if not data:
        raise ValueError("no evaluation examples")
    model.eval()
    correct = 0
    steps = math.ceil(len(data) / batch_size)
    with torch.no_grad():
        for inputs, labels in tqdm(batches(tokenizer, data, batch_size=batch_size, seq=seq),
                                   total=steps, desc="evaluate", disable=not progress):
            correct += int((model(**inputs).logits.argmax(-1) == labels).sum())
    return correct / len(data)
