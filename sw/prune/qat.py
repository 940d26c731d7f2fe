"""Quantization-aware fine-tuning (fake-quant + straight-through estimator) of an N:M BERT
classifier, in the integer encoder's own terms.

The QAT model computes in float but rounds every tensor the integer encoder rounds, on the
grid the integer encoder uses, so training sees (and learns to absorb) the int8 error:

* weights (every encoder Linear): :class:`WeightFakeQuant`, a parametrization registered
  after the layer's :class:`~sw.prune.sparsify.NMMask` (masks are fixed during QAT, so every
  step stays exactly N:M; zeros round to zero). Per output channel, ``s = max|w_row| / 127``,
  ``round(w / s)`` in [-127, 127] in float64: :func:`sw.ref.quant.quantize_weights`.
* activations, per tensor (int8, or int16 on the residual path): the layer input, Q and K (per
  head), V, the attention context, the attention-output Linear, the first residual sum, both
  LayerNorm outputs, the intermediate Linear (the GELU table's input), the GELU output, the
  output Linear and the second residual sum, with the scales of the
  :class:`~sw.compiler.encoder.QuantEncoder` that :func:`sw.prune.int8eval.calibrate_int8`
  derives for the current weights (MSE-clipped ranges on the calibration sentences). The
  scales are recomputed every ``refresh_every`` steps (activation fake-quant off, weights
  fake-quantized, eval mode: exactly the conversion's own calibration).
* the gradient is the straight-through estimator: identity inside the clipping range, zero
  outside (clipped values get no gradient).

Not modelled: the softmax's uint8 probabilities and its integer exponent, the integer
LayerNorm and the GELU table's output rounding (each within about one LSB of float, see the
numerics contract), and the requantizers' 15-bit multipliers.

:func:`qat_finetune` runs the phase and leaves a plain model whose weights are exactly on
their int8 grid; converting it is the ordinary int8 path (:func:`sw.prune.int8eval.
calibrate_int8` -> :func:`sw.compiler.qlayer.layer_int`, the bit-exact golden model), so the
accuracy of a QAT model is measured by the same integer encoder as post-training int8.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from sw.ref.quant import int_range

from .sparsify import NMPlan, apply_masks, check_model, encoder_layers, encoder_linears
from .sparsify import squash as _squash

__all__ = ["fake_quant", "WeightFakeQuant", "ActivationQuant", "prepare_qat", "finish_qat",
           "qat_finetune", "has_weight_fake_quant"]


def fake_quant(x: torch.Tensor, scale, bits: int = 8) -> torch.Tensor:
    """``clamp(round(x / scale)) * scale`` to a signed ``bits``-bit grid (8 or 16), with the
    clipped straight-through gradient. ``scale``: a float or a tensor broadcasting against
    ``x`` (per channel along the last dimension)."""
    lo, hi = int_range(bits)
    s = torch.as_tensor(scale, dtype=x.dtype, device=x.device)
    if not (torch.isfinite(s).all() and (s > 0).all()):
        raise ValueError(f"fake-quant scale must be finite and > 0, got {s.flatten()[:4]}")
    xc = torch.maximum(torch.minimum(x, hi * s), lo * s)
    return xc + (torch.round(xc / s) * s - xc).detach()


class WeightFakeQuant(nn.Module):
    """Parametrization: per-output-channel symmetric int8 fake-quant of a ``[out, in]`` weight,
    exactly :func:`sw.ref.quant.quantize_weights` (float64 rounding), straight-through."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        w64 = w.detach().double()
        amax = w64.abs().amax(dim=1, keepdim=True)
        s = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
        q = (torch.round(w64 / s).clamp(-127, 127) * s).to(w.dtype)
        return w + (q - w).detach()


class ActivationQuant:
    """The activation fake-quant hooks of a model, with scales from a ``QuantEncoder``."""

    def __init__(self, model):
        self.layers = encoder_layers(model)
        self.hooks: list = []

    @property
    def attached(self) -> bool:
        return bool(self.hooks)

    def attach(self, qe) -> None:
        """Hook every quantization point of every layer with ``qe``'s scales."""
        if len(qe.layers) != len(self.layers):
            raise ValueError(f"the QuantEncoder has {len(qe.layers)} layers, the model "
                             f"{len(self.layers)}")
        self.detach()
        for layer, ql in zip(self.layers, qe.layers):
            self._attach_layer(layer, ql)

    def detach(self) -> None:
        for h in self.hooks:
            h.remove()
        self.hooks = []

    def _post(self, module, scale, bits=8) -> None:
        s = torch.as_tensor(scale, dtype=torch.float32)

        def hook(mod, args, out):
            return fake_quant(out, s, bits)
        self.hooks.append(module.register_forward_hook(hook))

    def _pre(self, module, scale, bits=8) -> None:
        s = torch.as_tensor(scale, dtype=torch.float32)

        def hook(mod, args, kwargs):
            if args:
                return (fake_quant(args[0], s, bits), *args[1:]), kwargs
            key = "hidden_states" if "hidden_states" in kwargs else "input"
            if key not in kwargs:
                raise TypeError(f"{type(mod).__name__} called without its input tensor")
            return args, {**kwargs, key: fake_quant(kwargs[key], s, bits)}
        self.hooks.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def _attach_layer(self, layer, ql) -> None:
        att, lin = layer.attention, ql.linears
        res = ql.add1.out_bits
        self._pre(layer, ql.in_scale)  # x int8
        self._post(att.self.query, lin["q"].out_scale)  # per-head scales, one per channel
        self._post(att.self.key, lin["k"].out_scale)
        self._post(att.self.value, lin["v"].out_scale)
        self._pre(att.output.dense, lin["ao"].in_scale)  # the context after P.V
        self._post(att.output.dense, lin["ao"].out_scale)
        self._pre(att.output.LayerNorm, ql.add1.scale_out, res)  # h1 = a + x
        self._post(att.output.LayerNorm, ql.ln1.scale_out)  # l1
        self._post(layer.intermediate.dense, lin["inter"].out_scale)  # GELU input
        self._post(layer.intermediate, ql.gelu.scale_out)  # GELU output
        self._post(layer.output.dense, lin["out"].out_scale, lin["out"].requant.out_bits)
        self._pre(layer.output.LayerNorm, ql.add2.scale_out, ql.add2.out_bits)  # h2 = o + l1
        self._post(layer.output.LayerNorm, ql.ln2.scale_out)  # y


def _weight_quant_of(linear) -> WeightFakeQuant | None:
    if parametrize.is_parametrized(linear, "weight"):
        for p in linear.parametrizations.weight:
            if isinstance(p, WeightFakeQuant):
                return p
    return None


def prepare_qat(model, plan: NMPlan) -> None:
    """Fix the masks (the current non-zeros, which must satisfy ``plan``) as
    :class:`NMMask` parametrizations and add :class:`WeightFakeQuant` after them on every
    encoder Linear (planned or dense)."""
    _squash(model)
    check_model(model, plan)
    linears = encoder_linears(model)
    apply_masks(model, plan, parents={name: lin.weight.detach() != 0
                                      for name, lin in linears.items()})
    for linear in linears.values():
        parametrize.register_parametrization(linear, "weight", WeightFakeQuant())


def finish_qat(model, acts: ActivationQuant | None = None) -> None:
    """Remove the activation hooks and bake masks and weight fake-quant into plain weights
    (each exactly on its int8 grid, zeros kept)."""
    if acts is not None:
        acts.detach()
    _squash(model)


def _calibrate(model, tok, calib, seq, acts: ActivationQuant):
    from .int8eval import calibrate_int8

    was_training = model.training
    acts.detach()
    model.eval()
    try:
        qe = calibrate_int8(model, tok, calib, seq=seq)
    finally:
        model.train(was_training)
    acts.attach(qe)
    return qe


def qat_finetune(model, tok, train, calib, plan: NMPlan, *, epochs: float, lr: float = 1e-5,
                 seq: int = 64, seed: int = 0, teacher=None, kd_hidden: float = 1.0,
                 bucket: bool = False, refresh_every: int = 100, batch_size: int = 32,
                 on_step=None, progress: bool = True) -> dict:
    """Quantization-aware fine-tuning of an N:M ``BertForSequenceClassification`` in place.

    ``calib``: the calibration sentences of the int8 conversion (the same ones must be used to
    convert). The model ends as plain Linears whose weights are on their int8 grids and still
    N:M per ``plan``. Returns the training stats plus ``scale_refreshes``.
    """
    from .train import finetune

    if not epochs > 0:
        raise ValueError(f"QAT needs epochs > 0, got {epochs!r}")
    if refresh_every < 1:
        raise ValueError(f"refresh_every must be >= 1, got {refresh_every!r}")
    if not calib:
        raise ValueError("QAT needs calibration sentences")
    prepare_qat(model, plan)
    acts = ActivationQuant(model)
    refreshes = 0
    try:
        _calibrate(model, tok, calib, seq, acts)
        refreshes += 1

        def step(i: int) -> None:
            nonlocal refreshes
            if on_step is not None:
                on_step(i)
            if i % refresh_every == 0:
                _calibrate(model, tok, calib, seq, acts)
                refreshes += 1

        stats = finetune(model, tok, train, epochs=epochs, batch_size=batch_size, seq=seq,
                         lr=lr, seed=seed, teacher=teacher, kd_hidden=kd_hidden, bucket=bucket,
                         on_step=step, progress=progress)
    finally:
        finish_qat(model, acts)
    check_model(model, plan)
    return {**stats, "scale_refreshes": refreshes, "refresh_every": refresh_every}


def has_weight_fake_quant(model) -> bool:
    """Whether any encoder Linear still carries :class:`WeightFakeQuant`."""
    return any(_weight_quant_of(lin) is not None for lin in encoder_linears(model).values())

