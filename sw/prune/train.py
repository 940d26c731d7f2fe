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
            seed: int = 0):
    """Tokenized batches ``(inputs, labels)``; ``shuffle`` with a fixed seed."""
    order = np.arange(len(data))
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(data))
    for start in range(0, len(order), batch_size):
        chunk = [data[i] for i in order[start:start + batch_size]]
        inputs = tokenizer([e.text for e in chunk], padding=True, truncation=True,
                           max_length=seq, return_tensors="pt")
        yield dict(inputs), torch.tensor([e.label for e in chunk])


def finetune(model, tokenizer, train: list[Example], *, epochs: float = 1.0,
             batch_size: int = 32, seq: int = 64, lr: float = 5e-5, seed: int = 0,
             teacher=None, kd_weight: float = 0.5, on_step=None, progress: bool = True) -> dict:
    """Train ``model`` in place; returns ``{"steps", "loss", "wall_s"}``."""
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
                                      shuffle=True, seed=seed + epoch):
            out = model(**inputs, labels=labels, output_hidden_states=teacher is not None)
            loss = out.loss
            if teacher is not None:
                with torch.no_grad():
                    t_out = teacher(**inputs, output_hidden_states=True)
                loss = (1 - kd_weight) * loss + kd_weight * distillation_loss(
                    out.logits, t_out.logits, student_hidden=out.hidden_states,
                    teacher_hidden=t_out.hidden_states)
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
