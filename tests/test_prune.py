"""Pruning toolkit slice: parametrized N:M masks, inheritance, int8 PTQ, the packed file.

On a tiny random BERT (seeded), so it runs in CI in seconds.
"""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from transformers import BertConfig, BertModel

from sw.nm import is_nm, pack, unpack
from sw.prune.packed import PackedModelError, load_packed, save_packed
from sw.prune.quantize import calibrate, linear_int_torch, quantize_linear
from sw.prune.sparsify import (
    NMPlan,
    apply_masks,
    check_model,
    current_masks,
    encoder_linears,
    squash,
)
from sw.ref.gemm import spmm_int
from sw.ref.quant import requantize_int

SEED = 1234

def _file_parts(path):
    """A packed file's tensors and its decoded ``nmaccel`` header, to tamper with."""
    with safe_open(str(path), "np") as f:
        header = json.loads(f.metadata()["nmaccel"])
    return load_file(str(path)), header


def _rewrite(path, tensors, header):
    save_file(tensors, str(path), metadata={"nmaccel": json.dumps(header)})


def _refused(path, tensors, header, match):
    _rewrite(path, tensors, header)
    with pytest.raises(PackedModelError, match=match):
        load_packed(path)



@pytest.fixture
def bert():
    torch.manual_seed(SEED)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, vocab_size=100, max_position_embeddings=32)
    return BertModel(cfg).eval()


def batches(n=3, seq=12):
    g = torch.Generator().manual_seed(SEED)
    return [{"input_ids": torch.randint(0, 100, (2, seq), generator=g),
             "attention_mask": torch.ones(2, seq, dtype=torch.long)} for _ in range(n)]


@pytest.mark.parametrize("nm", ["2:4", "1:4", "2:8", "4:16"])
def test_masks_are_nm_and_survive_training(bert, nm):
    plan = NMPlan.uniform(bert, nm)
    assert len(plan.layers) == 12  # 6 Linears x 2 layers
    apply_masks(bert, plan)
    check_model(bert, plan)
    bert.train()
    opt = torch.optim.SGD(bert.parameters(), lr=0.5)
    for batch in batches():
        opt.zero_grad()
        bert(**batch).last_hidden_state.pow(2).mean().backward()
        opt.step()
    check_model(bert, plan)  # the parametrization keeps every step N:M
    squash(bert)
    check_model(bert, plan)
    assert all(not hasattr(lin, "parametrizations") for lin in encoder_linears(bert).values())


def test_inheritance_gives_nested_masks(bert):
    family = ["4:8", "2:8", "1:8"]
    parent = None
    for nm in family:
        plan = NMPlan.uniform(bert, nm)
        apply_masks(bert, plan, parents=parent)
        masks = current_masks(bert)
        if parent is not None:
            for name, mask in masks.items():
                assert not (mask & ~parent[name]).any(), f"{name}: {nm} mask leaves its parent"
        check_model(bert, plan)
        parent = masks


def test_plan_json_and_errors(bert):
    plan = NMPlan.uniform(bert, "2:4")
    plan.layers["layer.0.output.dense"] = None  # left dense
    assert NMPlan.from_json(plan.to_json()).layers == plan.layers
    with pytest.raises(ValueError, match="N:M must look like '2:4', got '2-4'"):
        NMPlan.uniform(bert, "2-4")
    with pytest.raises(ValueError, match="unsupported N:M 5:4"):
        NMPlan.uniform(bert, "5:4")
    with pytest.raises(ValueError, match="does not have"):
        apply_masks(bert, NMPlan({"layer.9.output.dense": (2, 4)}))
    with pytest.raises(TypeError, match="not a BERT encoder"):
        NMPlan.uniform(torch.nn.Linear(4, 4), "2:4")
    apply_masks(bert, NMPlan.uniform(bert, "2:4"))
    squash(bert)
    lin = encoder_linears(bert)["layer.1.intermediate.dense"]
    with torch.no_grad():
        lin.weight[0, :4] = 1.0
    with pytest.raises(ValueError, match=r"layer.1.intermediate.dense breaks its 2:4: row 0, "
                                         r"group 0"):
        check_model(bert, NMPlan.uniform(bert, "2:4"))


def quantized(bert, nm="2:4"):
    plan = NMPlan.uniform(bert, nm)
    apply_masks(bert, plan)
    squash(bert)
    stats = calibrate(bert, batches())
    lins = encoder_linears(bert)
    return {name: quantize_linear(lins[name], *stats[name], *plan.layers[name])
            for name in lins}


def test_int8_torch_path_equals_sw_ref_bit_for_bit(bert):
    layers = quantized(bert)
    rng = np.random.default_rng(SEED)
    for name, ql in layers.items():
        x = rng.integers(-128, 128, size=(9, ql.weight.k)).astype(np.int8)
        got = linear_int_torch(torch.from_numpy(x), ql).numpy()
        want = requantize_int(spmm_int(x, ql.weight), ql.requant)
        assert np.array_equal(got, want), name
        assert is_nm(unpack(ql.weight), ql.n, ql.m)  # quantization kept the zeros


def test_int8_linear_tracks_the_float_linear(bert):
    """Dequantized int8 outputs are within a stated error of the float Linear on real inputs:
    one output step plus the input's and weights' quantization propagated (loose: 4 steps)."""
    layers = quantized(bert)
    lin = encoder_linears(bert)["layer.0.attention.self.query"]
    ql = layers["layer.0.attention.self.query"]
    x = bert.embeddings(batches(1)[0]["input_ids"])[0].detach()
    xq = torch.clamp(torch.round(x / ql.in_scale), -128, 127).to(torch.int8)
    y = linear_int_torch(xq, ql).double() * ql.out_scale
    ref = lin(x).detach().double()
    assert (y - ref).abs().max() <= 4 * ql.out_scale


def test_packed_file_round_trips_and_refuses_bad_files(bert, tmp_path):
    layers = quantized(bert, "2:8")
    path = save_packed(tmp_path / "tiny-2of8-int8.safetensors", layers,
                       info={"source": "tiny random BERT", "seed": SEED})
    back, info = load_packed(path)
    assert info["seed"] == SEED and set(back) == set(layers)
    for name, ql in layers.items():
        b = back[name]
        assert np.array_equal(b.weight.values, ql.weight.values)
        assert np.array_equal(b.weight.indices, ql.weight.indices)
        assert np.array_equal(b.requant.m, ql.requant.m) and b.in_scale == ql.in_scale

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(PackedModelError, match="not a readable safetensors file"):
        load_packed(truncated)
    not_model = tmp_path / "notes.txt"
    not_model.write_text("hello")
    with pytest.raises(PackedModelError, match="not a readable safetensors file"):
        load_packed(not_model)
    with pytest.raises(PackedModelError, match="no such file"):
        load_packed(tmp_path / "missing.safetensors")

    # a layer that breaks its declared N:M
    name = "layer.0.output.dense"
    bad = dict(layers)
    dense = np.ones((layers[name].weight.rows, layers[name].weight.k), np.int8)
    bad[name] = type(layers[name])(weight=pack(dense, 8, 8), w_scale=layers[name].w_scale,
                                   in_scale=1.0, out_scale=1.0, requant=layers[name].requant)
    p2 = save_packed(tmp_path / "bad.safetensors", bad)
    t, header = _file_parts(p2)
    header["layers"][name]["n"], header["layers"][name]["m"] = 8, 8
    _rewrite(p2, t, header)
    load_packed(p2)  # dense and declared dense: fine
    header["layers"][name]["n"], header["layers"][name]["m"] = 2, 8
    t[f"{name}.values"] = t[f"{name}.values"][:, : layers[name].weight.groups * 2]
    t[f"{name}.indices"] = np.zeros((layers[name].weight.rows,
                                     layers[name].weight.groups * 2 * 3 // 8), np.uint8)
    _refused(p2, t, header, f"layer {name}: .*not strictly ascending")
    # a missing tensor and an undeclared one
    del t[f"{name}.mult"]
    _refused(p2, t, header, r"lacks tensors \['mult'\]")
    save_file({"x": np.zeros(2)}, str(p2))
    with pytest.raises(PackedModelError, match="without nmaccel metadata"):
        load_packed(p2)


def test_packed_file_keeps_per_channel_output_scales_and_widths(bert, tmp_path):
    """The integer encoder's Q/K Linears have one output scale per channel and its FFN output
    requantizes to int16: both survive the file; malformed ones are refused."""
    import dataclasses

    from sw.ref.quant import requant_params

    layers = quantized(bert, "2:4")
    name = "layer.1.attention.self.key"
    ql = layers[name]
    per_channel = np.linspace(0.01, 0.02, ql.weight.rows)
    layers[name] = dataclasses.replace(ql, out_scale=per_channel, requant=requant_params(
        ql.requant.real, ql.requant.bias, out_bits=16))
    path = save_packed(tmp_path / "p.safetensors", layers)
    back, _ = load_packed(path)
    assert np.array_equal(back[name].out_scale, per_channel)
    assert back[name].requant.out_bits == 16
    assert back["layer.0.output.dense"].requant.out_bits == 8
    assert back["layer.0.output.dense"].out_scale == layers["layer.0.output.dense"].out_scale

    t, header = _file_parts(path)
    t[f"{name}.out_scale"] = per_channel[:-1]
    _refused(path, t, header, f"layer {name}: out_scale has shape")
    del t[f"{name}.out_scale"]
    _refused(path, t, header, f"layer {name}: no out_scale")
    header["layers"][name]["out_scale"], header["layers"][name]["out_bits"] = 0.01, 12
    _refused(path, t, header, f"layer {name}: out_bits 12")
