"""GELU on int8 activations: a 256-entry table, and its float reference.

Why a table and not I-BERT's polynomial erf: the input is int8, so GELU has exactly 256
possible inputs per (input scale, output scale) pair. The host evaluates the exact float GELU
once per layer and rounds it; the hardware looks it up (one 256 x 8-bit ROM/LUTRAM per lane,
no multiplier). This is exact to the output rounding, i.e. strictly better than any polynomial
(I-BERT's second-order erf is off by up to about 1.8e-2 in erf, which is a few LSB of int8 at
typical scales), cheaper in hardware, and just as bit-exact: hardware and ``sw/ref`` read the
same table.

Integer path: ``y = TABLE[x + 128]`` with ``TABLE[j] = sat8(round((j - 128) * s_in * Phi(.) /
s_out))``, ``Phi`` the normal CDF (``gelu(v) = v * Phi(v)``, the exact erf form). Ties of the
rounding go away from zero (``torch.round`` would go to even; the table fixes one rule and
both paths use it).

Error bound against :func:`gelu_float` (the float GELU of the dequantized input, in LSBs of
``s_out``): :data:`GELU_BOUND` = 0.5 LSB, the output rounding alone, wherever the result is
inside the int8 range (outside it saturates, like every int8 output of the contract).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .fixedpoint import INT8_MAX, INT8_MIN, as_int_array

__all__ = ["GELU_BOUND", "GeluParams", "gelu_params", "gelu_int", "gelu_float"]

GELU_BOUND = 0.5  #: LSBs of s_out


@dataclass(frozen=True)
class GeluParams:
    """The 256-entry table (index ``x + 128``) and the scales it was made for."""

    table: np.ndarray  # int64 [256], values in [-128, 127]
    scale_in: float
    scale_out: float


def _gelu64(v: np.ndarray) -> np.ndarray:
    return v * 0.5 * (1.0 + np.vectorize(math.erf)(v / math.sqrt(2.0)))


def gelu_params(scale_in: float, scale_out: float, fn=None) -> GeluParams:
    """Build the table for int8 input scale ``scale_in`` and output scale ``scale_out``.

    ``fn``: the function the table holds, mapping a float64 array of the 256 dequantized
    inputs to their outputs (default: GELU, the exact erf form). The unit is a table, so any
    elementwise activation runs on it: the compiler passes the model's own (``gelu_new``,
    ``relu``, ...), and the table is then exact to the output rounding for that function."""
    for name, v in (("scale_in", scale_in), ("scale_out", scale_out)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"GELU {name} must be finite and > 0, got {v!r}")
    v = np.arange(-128, 128, dtype=np.float64) * scale_in
    y = (_gelu64(v) if fn is None else np.asarray(fn(v), dtype=np.float64)) / scale_out
    if y.shape != (256,) or not np.isfinite(y).all():
        raise ValueError(f"the activation gave {y.shape} values, not 256 finite ones, for the "
                         f"256 int8 inputs at scale {scale_in!r}")
    table = np.clip(np.sign(y) * np.floor(np.abs(y) + 0.5), INT8_MIN, INT8_MAX).astype(np.int64)
    return GeluParams(table=table, scale_in=float(scale_in), scale_out=float(scale_out))


def gelu_int(x, params: GeluParams) -> np.ndarray:
    """Bit-exact GELU of int8 ``x`` (any shape) -> int8: a table lookup."""
    xi = as_int_array(x, "GELU input", lo=INT8_MIN, hi=INT8_MAX)
    return params.table[xi + 128].astype(np.int8)


def gelu_float(x, params: GeluParams) -> np.ndarray:
    """``torch.nn.functional.gelu`` (erf form, float64) of the dequantized input, in units of
    ``s_out`` (not rounded, not clipped)."""
    import torch

    xt = torch.as_tensor(np.asarray(x, dtype=np.float64) * params.scale_in)
    return torch.nn.functional.gelu(xt).numpy() / params.scale_out
