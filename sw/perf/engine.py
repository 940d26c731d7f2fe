"""Cycle model of the spmm engine (:class:`hw.spmm.engine.SpmmEngine`): exact, not a fit.

The compiler and the benchmarks use it; the cocotb benches check it against the RTL cycle for
cycle. Counting convention: from the rising edge that takes the operation's first weight beat
to the edge that takes its last output beat, with inputs always valid and the output always
ready (stalls on the streams only add cycles).

Model: steps are taken one per cycle except while the array is frozen. A tile's sums reach
the shadow buffer ``CAPTURE_LATENCY`` advancing edges after its last step, but not before the
previous tile's ``C`` output beats have drained (the array freezes until then).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hw.config import AcceleratorConfig

__all__ = ["CAPTURE_LATENCY", "GemmShape", "check_gemm", "tile_steps", "engine_cycles",
           "tile_ends", "gemm_cycles", "ideal_cycles", "device_macs_per_cycle"]

#: edges from a tile's last step to its capture (hw.spmm.engine.SpmmEngine.CAPTURE_LATENCY)
CAPTURE_LATENCY = 2


@dataclass(frozen=True)
class GemmShape:
    """``out[tokens, rows] = x[tokens, k] . w[rows, k]^T`` at N:M (``n == m``: dense)."""

    rows: int
    k: int
    tokens: int
    n: int
    m: int

    def __post_init__(self):
        for name in ("rows", "k", "tokens", "n", "m"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"GemmShape.{name} must be an int >= 1, got {v!r}")
        if self.n > self.m:
            raise ValueError(f"GemmShape N = {self.n} exceeds M = {self.m}")

    @property
    def groups(self) -> int:
        return math.ceil(self.k / self.m)

    @property
    def macs(self) -> int:
        """Dense multiply-accumulates of the product (rows * k * tokens)."""
        return self.rows * self.k * self.tokens


def tile_steps(config: AcceleratorConfig, shape: GemmShape) -> int:
    """Cycles one tile of ``shape`` keeps the array busy: ``G * N``."""
    return shape.groups * shape.n


def engine_cycles(config: AcceleratorConfig, steps: list[int]) -> int:
    """Cycles of a sequence of tiles with ``steps[j]`` steps each (see module docstring)."""
    ends = tile_ends(config, steps)
    return ends[-1] if ends else 0


def tile_ends(config: AcceleratorConfig, steps: list[int]) -> list[int]:
    """For a sequence of tiles with ``steps[j]`` steps each, the edge (counted as
    :func:`engine_cycles` does) of each tile's last output beat: tile ``j`` accounts for
    ``ends[j] - ends[j - 1]`` of the sequence's cycles."""
    C = config.pe_cols
    taken = 0  # steps taken so far (advance-time)
    frozen = 0  # edges the array spent frozen
    drained = -math.inf  # edge of the previous tile's last output beat
    ends = []
    for s in steps:
        if s < 1:
            raise ValueError(f"a tile needs at least one step, got {s}")
        taken += s
        ready = taken - 1 + CAPTURE_LATENCY + frozen  # edge its capture would happen
        capture = max(ready, drained)
        frozen += capture - ready
        drained = capture + C
        ends.append(int(drained))
    return ends


def check_gemm(config: AcceleratorConfig, shape: GemmShape) -> None:
    """Refuse, naming the reason, a GEMM the config cannot run (N:M, or K beyond max_k)."""
    config.check_nm(shape.n, shape.m)
    if shape.k > config.max_k:
        raise ValueError(f"K = {shape.k} exceeds the config's longest reduction max_k = "
                         f"{config.max_k} ({config.name!r})")


def gemm_cycles(config: AcceleratorConfig, shape: GemmShape) -> int:
    """Cycles of a whole GEMM: ``ceil(rows/R) * ceil(tokens/C)`` tiles of ``G * N`` steps."""
    check_gemm(config, shape)
    tiles = math.ceil(shape.rows / config.pe_rows) * math.ceil(shape.tokens / config.pe_cols)
    return engine_cycles(config, [tile_steps(config, shape)] * tiles)


def ideal_cycles(config: AcceleratorConfig, shape: GemmShape) -> float:
    """Compute floor of the array: ``MACs / (R * C * M / N)``."""
    return shape.macs / (config.num_pes * shape.m / shape.n)


def device_macs_per_cycle(config: AcceleratorConfig) -> tuple[int, str]:
    """``(MACs per cycle, what it counts)``: the part's DSPs x MACs per DSP (the silicon's
    compute floor, which ``make bench`` measures against), or the PE count for a preset
    without a part DSP count."""
    if config.part_dsps:
        return (config.part_dsps * config.macs_per_dsp,
                f"{config.part_dsps} DSPs of {config.part} x {config.macs_per_dsp} MAC/DSP")
    return config.num_pes, f"{config.num_pes} PEs (no part DSP count)"
