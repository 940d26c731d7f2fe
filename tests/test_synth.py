"""Synthesis keeps the engine's multipliers: one MULT18X18D (ECP5) or DSP48E2 (xcup) per PE, or
one DSP48E2 per packed pair of PEs with ``macs_per_dsp = 2``."""

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


def test_tiny_engine_maps_one_dsp48e2_per_pe_on_ultrascale_plus(tmp_path):
    cfg = preset("tiny")
    cells = synth_stats(SpmmEngine(config=cfg), "xcup", tmp_path)
    assert cells.get("DSP48E2") == cfg.num_pes == 16
    assert cells.get("FDRE", 0) >= 2 * cfg.num_pes * 32
    assert sum(n for cell, n in cells.items() if cell.startswith("LUT")) > 0


def test_packed_engine_maps_one_dsp48e2_per_pe_pair(tmp_path):
    """macs_per_dsp = 2 halves the DSP48E2: each pair's packed int8 x int27 multiply stays one
    block (not split in two), and the config's dsps count agrees."""
    one = preset("tiny")
    two = one.replace(macs_per_dsp=2)
    dsps = {cfg.macs_per_dsp: synth_stats(SpmmEngine(config=cfg), "xcup",
                                          tmp_path / f"x{cfg.macs_per_dsp}").get("DSP48E2")
            for cfg in (one, two)}
    assert dsps == {1: one.dsps, 2: two.dsps} == {1: 16, 2: 8}
