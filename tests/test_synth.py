"""Synthesis keeps the engine's multipliers: one ECP5 MULT18X18D per PE (Yosys, YoWASP)."""

import pytest

from bitstreams.synth import synth_stats
from hw.config import preset
from hw.spmm.engine import SpmmEngine

pytestmark = pytest.mark.synth


def test_tiny_engine_maps_one_mult18_per_pe(tmp_path):
    cfg = preset("tiny")
    cells = synth_stats(SpmmEngine(config=cfg), "ecp5", tmp_path)
    # int8 x int9 fits one 18x18 multiplier; nothing was optimised away or split
    assert cells.get("MULT18X18D") == cfg.num_pes == 16
    assert cells.get("TRELLIS_FF", 0) >= 2 * cfg.num_pes * 32  # accumulators + shadow buffer


def test_unknown_target_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown synthesis target 'virtex2'"):
        synth_stats(None, "virtex2", tmp_path)
