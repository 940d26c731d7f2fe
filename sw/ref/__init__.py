"""Golden models: each op as a float reference (PyTorch) and a bit-exact integer version.

Modules: :mod:`~sw.ref.fixedpoint` (the rounding rule, multipliers), :mod:`~sw.ref.quant`
(quantize, requantize, residual add), :mod:`~sw.ref.gemm` (N:M sparse and dense integer
GEMMs), :mod:`~sw.ref.softmax`. Hardware tests compare against the integer versions with
``==``; the integer versions are tested against the float ones within their stated bounds.
The integer paths import only numpy, so simulator processes stay light.
"""
