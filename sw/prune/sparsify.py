"""N:M sparsification of Hugging Face BERT encoders with parametrized masks.

The six ``nn.Linear`` layers of every encoder layer (query, key, value, attention output,
intermediate, output) get a mask as a ``torch.nn.utils.parametrize`` parametrization, so
``linear.weight`` is always the masked weight (training steps cannot break N:M) while
``linear.parametrizations.weight.original`` keeps the dense values (for masks that change
during training). :func:`squash` bakes the masks in and removes the parametrizations.

Groups run along the input dimension (``weight`` is ``[out, in]``), as :mod:`sw.nm` defines.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from sw.nm import NMViolationError, check_nm, nm_mask

__all__ = [
    "LINEAR_PATHS",
    "NMPlan",
    "NMMask",
    "encoder_layers",
    "encoder_linears",
    "apply_masks",
    "update_masks",
    "current_masks",
    "squash",
    "check_model",
]

#: the six Linear layers of a BertLayer, by attribute path
LINEAR_PATHS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)
_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def _parse_nm(text) -> tuple[int, int]:
    if isinstance(text, tuple | list) and len(text) == 2:
        n, m = int(text[0]), int(text[1])
    else:
        match = _NM.match(str(text))
        if not match:
            raise ValueError(f"N:M must look like '2:4', got {text!r}")
        n, m = int(match[1]), int(match[2])
    if m not in (4, 8, 16) or not 1 <= n <= m:
        raise ValueError(f"unsupported N:M {n}:{m}: M must be 4, 8 or 16 and 1 <= N <= M")
    return n, m


def encoder_layers(model) -> nn.ModuleList:
    """The ``BertLayer`` list of a BertModel, a BertFor* model, or a BertEncoder."""
    for candidate in (model, getattr(model, "base_model", None), getattr(model, "bert", None)):
        enc = getattr(candidate, "encoder", None)
        if enc is not None and hasattr(enc, "layer"):
            return enc.layer
    if hasattr(model, "layer") and isinstance(model.layer, nn.ModuleList):
        return model.layer
    raise TypeError(f"{type(model).__name__} is not a BERT encoder (no encoder.layer list)")


def encoder_linears(model) -> dict[str, nn.Linear]:
    """``{"layer.<i>.<path>": nn.Linear}`` for the six Linear layers of every encoder layer."""
    out = {}
    for i, layer in enumerate(encoder_layers(model)):
        for path in LINEAR_PATHS:
            mod = layer
            for part in path.split("."):
                mod = getattr(mod, part, None)
            if not isinstance(mod, nn.Linear):
                raise TypeError(f"encoder layer {i} has no nn.Linear at {path!r}")
            out[f"layer.{i}.{path}"] = mod
    return out


@dataclass
class NMPlan:
    """N:M per Linear layer (``None``: left dense). JSON round-trips; names are validated."""

    layers: dict[str, tuple[int, int] | None] = field(default_factory=dict)

    @classmethod
    def uniform(cls, model, nm) -> NMPlan:
        n, m = _parse_nm(nm)
        return cls({name: (n, m) for name in encoder_linears(model)})

    def validate(self, model) -> None:
        names = set(encoder_linears(model))
        unknown = sorted(set(self.layers) - names)
        if unknown:
            raise ValueError(f"N:M plan names layers the model does not have: {unknown[:4]}")
        for nm in self.layers.values():
            if nm is not None:
                _parse_nm(nm)

    def to_json(self) -> str:
        return json.dumps({k: None if v is None else f"{v[0]}:{v[1]}"
                           for k, v in sorted(self.layers.items())}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> NMPlan:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"malformed N:M plan JSON: {e}") from None
        if not isinstance(raw, dict):
            raise ValueError("an N:M plan is a JSON object {layer: 'N:M' or null}")
        return cls({k: None if v is None else _parse_nm(v) for k, v in raw.items()})


class NMMask(nn.Module):
    """Parametrization ``W -> W * mask`` with a boolean ``mask`` buffer."""

    def __init__(self, mask: torch.Tensor, n: int, m: int):
        super().__init__()
        self.n, self.m = n, m
        self.register_buffer("mask", mask.to(torch.bool).clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask.to(weight.dtype)


def _mask_of(linear: nn.Linear) -> NMMask | None:
    if parametrize.is_parametrized(linear, "weight"):
        for p in linear.parametrizations.weight:
            if isinstance(p, NMMask):
                return p
    return None


def _dense_weight(linear: nn.Linear) -> torch.Tensor:
    if parametrize.is_parametrized(linear, "weight"):
        return linear.parametrizations.weight.original
    return linear.weight


def apply_masks(model, plan: NMPlan, *, parents: dict[str, torch.Tensor] | None = None) -> None:
    """Mask every planned Linear by magnitude (one-shot), as a parametrization.

    ``parents`` (for inheritance): masks of a denser parent; each new mask is then chosen
    inside the parent's, so it is a subset. Re-applying updates the existing masks.
    """
    plan.validate(model)
    for name, linear in encoder_linears(model).items():
        nm = plan.layers.get(name)
        if nm is None:
            continue
        n, m = nm
        dense = _dense_weight(linear).detach()
        score = dense.abs()
        if parents is not None and name in parents:
            score = torch.where(parents[name], score + 1, torch.zeros_like(score))
        mask = nm_mask(score, n, m)
        if parents is not None and name in parents:
            mask &= parents[name]
        existing = _mask_of(linear)
        if existing is not None:
            existing.mask.copy_(mask)
            existing.n, existing.m = n, m
        else:
            parametrize.register_parametrization(linear, "weight", NMMask(mask, n, m))


def update_masks(model, plan: NMPlan, *, parents=None) -> None:
    """Recompute masks from the current dense weights (for schedules and SR-STE)."""
    apply_masks(model, plan, parents=parents)


def current_masks(model) -> dict[str, torch.Tensor]:
    """The boolean mask of every masked Linear (copies)."""
    out = {}
    for name, linear in encoder_linears(model).items():
        mask = _mask_of(linear)
        if mask is not None:
            out[name] = mask.mask.clone()
    return out


def squash(model) -> None:
    """Bake the masks into plain weights and remove the parametrizations."""
    for linear in encoder_linears(model).values():
        if parametrize.is_parametrized(linear, "weight"):
            parametrize.remove_parametrizations(linear, "weight", leave_parametrized=True)


def check_model(model, plan: NMPlan) -> None:
    """Raise ``ValueError`` naming the layer, row and group of the first N:M violation."""
    for name, linear in encoder_linears(model).items():
        nm = plan.layers.get(name)
        if nm is None:
            continue
        try:
            check_nm(linear.weight.detach(), *nm)
        except NMViolationError as e:
            raise ValueError(f"{name} breaks its {nm[0]}:{nm[1]}: {e}") from e
