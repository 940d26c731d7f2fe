"""cocotb benches of the LayerNorm unit: bit-exact against sw/ref, cycle-exact against sw/perf."""

import pytest

from hw.config import preset
from hw.vector.layernorm import LayerNormUnit
from sim.runner import run_bench
from sw.perf import vector as model

pytestmark = pytest.mark.sim

KINDS = ["random", "low_var", "equal", "huge", "alternating", "spike", "spike", "random"]


@pytest.mark.parametrize(("lanes", "hidden", "saturate", "in_bits"),
                         [(4, 24, False, 8), (3, 17, True, 8), (8, 384, False, 8),
                          (8, 768, False, 8), (4, 40, False, 16), (8, 384, False, 16)])
def test_layernorm_bench(lanes, hidden, saturate, in_bits):
    cfg = preset("tiny").replace(name=f"ln-lanes{lanes}-h{hidden}-in{in_bits}",
                                 vector_lanes=lanes, max_hidden=max(hidden, 32))
    if hidden == 768:
        tokens = [{"kind": k, "seed": i} for i, k in enumerate(["random", "alternating", "spike"])]
    else:
        tokens = [{"kind": k, "seed": 10 * lanes + i} for i, k in enumerate(KINDS)]
    report = run_bench(component=LayerNormUnit(config=cfg, in_bits=in_bits),
                       bench="sim.benches.layernorm", case=cfg.name,
                       params={"config": cfg.to_dict(), "hidden": hidden, "tokens": tokens,
                               "saturate": saturate, "eps": 1e-5 if saturate else 1e-12,
                               "seed": lanes, "in_bits": in_bits})
    assert report["no_stalls"]["rtl_cycles"] == report["no_stalls"]["model_cycles"]
    assert len(report) == 4


@pytest.mark.parametrize("in_bits", [8, 16])
def test_model_constants_match_the_hardware(in_bits):
    unit = LayerNormUnit(config=preset("tiny"), in_bits=in_bits)
    assert (unit.PIPE, unit.VAR_CYCLES, unit.ROOT_CYCLES, unit.div_cycles, unit.out_delay) == (
        model.LAYERNORM_PIPE, model.LAYERNORM_VAR_CYCLES, model.LAYERNORM_ROOT_CYCLES,
        model.layernorm_div_cycles(in_bits), model.layernorm_out_delay(in_bits))
    assert unit.ROWS == model.ROWS
    unit._MustUse__silence = True  # built only to read its timing constants


@pytest.mark.parametrize("lanes", [0, 3, 8, 2.0])
def test_load_lanes_must_divide_the_vector_lanes(lanes):
    with pytest.raises(ValueError, match=rf"load_lanes must be a power of two dividing "
                                         rf"vector_lanes = 4, got {lanes!r}"):
        LayerNormUnit(config=preset("tiny"), load_lanes=lanes)


def test_tokens_the_unit_cannot_hold_are_refused():
    cfg = preset("tiny")  # max_hidden 768
    with pytest.raises(ValueError, match=r"LayerNorm token 0 has length 1024; config 'tiny' "
                                         r"holds 1..768"):
        model.layernorm_cycles(cfg, [1024])


@pytest.mark.parametrize(("hidden", "in_bits"), [(4, 8), (7, 16)])
def test_layernorm_bench_many_short_tokens(hidden, in_bits):
    """40 tokens of one or two beats: the unit holds its 16 tokens, the ring's addresses
    wrap, and tokens overlap (far fewer cycles than one token at a time)."""
    cfg = preset("tiny").replace(name=f"ln-short-h{hidden}-in{in_bits}", vector_lanes=4,
                                 max_hidden=32)
    tokens = [{"kind": KINDS[i % len(KINDS)], "seed": 500 + i} for i in range(40)]
    report = run_bench(component=LayerNormUnit(config=cfg, in_bits=in_bits),
                       bench="sim.benches.layernorm", case=cfg.name,
                       params={"config": cfg.to_dict(), "hidden": hidden, "tokens": tokens,
                               "saturate": False, "eps": 1e-12, "seed": 3, "in_bits": in_bits})
    assert report["no_stalls"]["rtl_cycles"] == report["no_stalls"]["model_cycles"]
    nb = -(-hidden // 4)
    alone = 40 * (2 * nb + model.layernorm_out_delay(in_bits))
    assert report["no_stalls"]["rtl_cycles"] * 4 < alone
