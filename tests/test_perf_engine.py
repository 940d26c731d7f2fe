"""The engine cycle model's closed forms and the refusal of operations the config cannot run."""

import numpy as np
import pytest

from hw.config import preset
from sw.perf.engine import GemmShape, engine_cycles, gemm_cycles, ideal_cycles, tile_ends


def test_back_to_back_tiles_follow_the_docstring_formula():
    cfg = preset("tiny")  # C = 4
    for steps in (4, 5, 64, 384):  # G * N >= C: no freeze
        for tiles in (1, 2, 7):
            assert engine_cycles(cfg, [steps] * tiles) == tiles * steps + cfg.pe_cols + 1


def test_short_tiles_wait_for_the_drain():
    cfg = preset("tiny").replace(pe_cols=8)
    # G * N = 2 < C = 8: every tile after the first waits for the previous drain (C cycles)
    assert engine_cycles(cfg, [2]) == 2 + 8 + 1
    assert engine_cycles(cfg, [2, 2, 2]) == 2 + 1 + 3 * 8
    assert engine_cycles(cfg, []) == 0
    # each tile's last output beat: the first after its steps, capture and drain, the others
    # a drain (C) after it; a long tile after short ones ends its own steps later
    assert tile_ends(cfg, [2, 2, 2]) == [2 + 1 + 8, 2 + 1 + 16, 2 + 1 + 24]
    assert tile_ends(cfg, [2, 20]) == [11, 11 + (20 - 8) + 8]
    assert tile_ends(cfg, []) == []
    with pytest.raises(ValueError, match="at least one step"):
        engine_cycles(cfg, [0])


def test_gemm_cycles_and_ideal():
    cfg = preset("tiny").replace(pe_rows=8, pe_cols=8)  # an 8 x 8 array, whatever the presets
    shape = GemmShape(rows=768, k=768, tokens=128, n=2, m=4)
    tiles = (768 // 8) * (128 // 8)
    assert gemm_cycles(cfg, shape) == tiles * 384 + 8 + 1
    assert ideal_cycles(cfg, shape) == 768 * 768 * 128 / (64 * 2)
    assert ideal_cycles(cfg, shape) / gemm_cycles(cfg, shape) > 0.99


def test_refuses_what_the_config_cannot_run():
    cfg = preset("tiny").replace(n_max=2)
    with pytest.raises(ValueError, match="N = 3"):
        gemm_cycles(cfg, GemmShape(rows=4, k=8, tokens=4, n=3, m=4))
    with pytest.raises(ValueError, match="GemmShape.rows must be an int >= 1, got 0"):
        GemmShape(rows=0, k=8, tokens=4, n=2, m=4)
    with pytest.raises(ValueError, match="N = 5 exceeds M = 4"):
        GemmShape(rows=1, k=8, tokens=4, n=5, m=4)
    assert np.isfinite(gemm_cycles(cfg, GemmShape(rows=4, k=8, tokens=4, n=4, m=4)))


def test_model_constant_matches_the_hardware():
    from hw.spmm.engine import SpmmEngine
    from sw.perf.engine import CAPTURE_LATENCY

    assert SpmmEngine.CAPTURE_LATENCY == CAPTURE_LATENCY
