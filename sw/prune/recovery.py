"""Recovery training helpers: gradual N:M schedules, SR-STE masks, distillation losses.

* :func:`cubic_density` / :func:`scheduled_n`: the GMP-style cubic schedule from dense to the
  target N:M; :class:`GradualPruner` applies it to a model's parametrized masks every
  ``update_every`` steps (each new mask nested in the previous one).
* :class:`SRSTEMask`: a parametrization whose backward is the sparse-refined straight-through
  estimator (Zhou et al. 2021): the dense weights receive the full gradient plus
  ``decay * (1 - mask) * W``, and the mask is recomputed from the dense weights by
  :func:`refresh_srste_masks`, so pruned weights can come back.
* :func:`distillation_loss`: KL divergence of softened logits plus MSE of hidden states,
  from a dense teacher.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from sw.nm import nm_mask

from .sparsify import NMPlan, apply_masks, current_masks, encoder_linears

__all__ = [
    "cubic_density",
    "scheduled_n",
    "GradualPruner",
    "SRSTEMask",
    "apply_srste",
    "refresh_srste_masks",
    "distillation_loss",
]


def cubic_density(step: int, total: int, final: float) -> float:
    """Density ``final + (1 - final) * (1 - step/total)**3`` (clamped to ``[final, 1]``)."""
    if total < 1:
        raise ValueError(f"schedule needs total >= 1 steps, got {total}")
    if not 0 < final <= 1:
        raise ValueError(f"final density must be in (0, 1], got {final}")
    t = min(max(step / total, 0.0), 1.0)
    return final + (1 - final) * (1 - t) ** 3


def scheduled_n(step: int, total: int, n: int, m: int) -> int:
    """N:M's N at ``step``: the cubic density rounded up to whole non-zeros per group."""
    return max(n, min(m, math.ceil(cubic_density(step, total, n / m) * m - 1e-9)))


class GradualPruner:
    """Walks every planned layer from dense to its target N:M along the cubic schedule.

    Call :meth:`step` once per optimizer step; masks change every ``update_every`` steps and
    are chosen by magnitude inside the previous masks (so the family is nested).
    """

    def __init__(self, model, target: NMPlan, total_steps: int, update_every: int = 10):
        target.validate(model)
        self.model, self.target = model, target
        self.total, self.every = total_steps, max(1, update_every)
        self.steps = 0
        self.current: dict[str, tuple[int, int] | None] = {}

    def plan_at(self, step: int) -> NMPlan:
        return NMPlan({name: None if nm is None else (scheduled_n(step, self.total, *nm), nm[1])
                       for name, nm in self.target.layers.items()})

    def step(self) -> NMPlan:
        plan = self.plan_at(self.steps)
        if self.steps % self.every == 0 or self.steps >= self.total:
            if plan.layers != self.current:
                parents = current_masks(self.model) or None
                apply_masks(self.model, plan, parents=parents)
                self.current = dict(plan.layers)
        self.steps += 1
        return plan


class _SRSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, mask, decay):
        ctx.save_for_backward(weight, mask)
        ctx.decay = decay
        return weight * mask

    @staticmethod
    def backward(ctx, grad):
        weight, mask = ctx.saved_tensors
        # straight-through to every weight, plus the refining decay of the pruned ones
        return grad + ctx.decay * (~mask) * weight, None, None


class SRSTEMask(nn.Module):
    """Parametrization ``W -> W * mask`` with the SR-STE backward (see module docstring)."""

    def __init__(self, mask: torch.Tensor, n: int, m: int, decay: float = 2e-4):
        super().__init__()
        self.n, self.m, self.decay = n, m, float(decay)
        self.register_buffer("mask", mask.to(torch.bool).clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return _SRSTE.apply(weight, self.mask, self.decay)


def apply_srste(model, plan: NMPlan, decay: float = 2e-4) -> None:
    """Register SR-STE masks (from magnitudes) on every planned Linear."""
    plan.validate(model)
    for name, linear in encoder_linears(model).items():
        nm = plan.layers.get(name)
        if nm is None:
            continue
        if parametrize.is_parametrized(linear, "weight"):
            raise ValueError(f"{name} already has a parametrization; squash it first")
        mask = nm_mask(linear.weight.detach(), *nm)
        parametrize.register_parametrization(linear, "weight", SRSTEMask(mask, *nm, decay))


def refresh_srste_masks(model) -> int:
    """Recompute every SR-STE mask from the dense weights; returns how many entries changed."""
    changed = 0
    for linear in encoder_linears(model).values():
        if not parametrize.is_parametrized(linear, "weight"):
            continue
        for p in linear.parametrizations.weight:
            if isinstance(p, SRSTEMask):
                new = nm_mask(linear.parametrizations.weight.original.detach(), p.n, p.m)
                changed += int((new != p.mask).sum())
                p.mask.copy_(new)
    return changed


def distillation_loss(student_logits, teacher_logits, *, temperature: float = 2.0,
                      student_hidden=None, teacher_hidden=None, hidden_weight: float = 1.0):
    """``T**2 * KL(softmax(t/T) || softmax(s/T))`` plus ``hidden_weight`` times the mean MSE of
    the hidden states (lists of tensors of equal shapes), when given."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    t = temperature
    log_s = torch.log_softmax(student_logits / t, dim=-1)
    log_t = torch.log_softmax(teacher_logits / t, dim=-1)
    loss = torch.nn.functional.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * t * t
    if student_hidden is not None and teacher_hidden is not None:
        if len(student_hidden) != len(teacher_hidden):
            raise ValueError(f"{len(student_hidden)} student vs {len(teacher_hidden)} teacher "
                             f"hidden states")
        mse = sum(torch.nn.functional.mse_loss(s, h) for s, h in zip(student_hidden,
                                                                     teacher_hidden))
        loss = loss + hidden_weight * mse / len(student_hidden)
    return loss
