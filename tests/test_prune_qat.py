"""Quantization-aware fine-tuning: fake-quant + STE in the integer encoder's terms.

A tiny random BERT classifier on a few hundred Rotten Tomatoes sentences, so it runs in CI.
"""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from hw.config import preset
from sw.compiler.encoder import compile_encoder, quantize_step
from sw.compiler.qlayer import layer_int
from sw.driver.device import open_device
from sw.driver.encoder_run import run_on_device
from sw.nm import unpack
from sw.prune.data import rt_split
from sw.prune.experiment import _minilm_path
from sw.prune.int8eval import calibrate_int8
from sw.prune.qat import (
    ActivationQuant,
    WeightFakeQuant,
    fake_quant,
    has_weight_fake_quant,
    prepare_qat,
    qat_finetune,
)
from sw.prune.sparsify import NMPlan, apply_masks, check_model, encoder_linears, squash
from sw.ref.quant import quantize_weights

SEED = 5
SEQ = 24


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(_minilm_path())


@pytest.fixture(scope="module")
def data():
    train, test, _ = rt_split(seed=0)
    return train[:192], train[:16], test[:12]


def tiny_classifier(tok, nm="2:4"):
    torch.manual_seed(SEED)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, num_labels=2, max_position_embeddings=64)).eval()
    plan = NMPlan.uniform(model, nm)
    apply_masks(model, plan)
    squash(model)
    return model, plan


def test_fake_quant_grid_and_straight_through_gradient():
    x = torch.tensor([-3.0, -0.26, 0.0, 0.24, 0.76, 2.0], requires_grad=True)
    y = fake_quant(x, 0.01)  # int8 grid: [-1.28, 1.27]
    assert torch.equal(y.detach(), torch.tensor([-1.28, -0.26, 0.0, 0.24, 0.76, 1.27]))
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]  # clipped values: no gradient
    assert float(fake_quant(torch.tensor([1000.0]), 0.05, bits=16)) == 1000.0
    per_channel = fake_quant(torch.tensor([[0.33, 0.33]]), torch.tensor([0.1, 0.2]))
    assert torch.allclose(per_channel, torch.tensor([[0.3, 0.4]]))
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        fake_quant(x, 0.0)
    with pytest.raises(ValueError, match="int8 or int16"):
        fake_quant(x, 0.1, bits=4)


def test_weight_fake_quant_is_the_contracts_per_channel_int8():
    torch.manual_seed(SEED)
    w = torch.randn(16, 32)
    w[3] = 0.0  # an all-zero row (scale 1.0 by the contract)
    q, s = quantize_weights(w)
    want = (q.double() * s[:, None]).float()
    w.requires_grad_(True)
    got = WeightFakeQuant()(w)
    assert torch.equal(got.detach(), want)
    got.pow(2).sum().backward()
    assert torch.allclose(w.grad, 2 * got.detach())  # straight through


def test_fake_quant_model_tracks_the_integer_encoder(tok, data):
    """With the conversion's scales, the fake-quant float model gives the integer encoder's
    output to within 2 LSB, most values exactly; the float model is far off."""
    _, calib, test = data
    model, plan = tiny_classifier(tok)
    qe = calibrate_int8(model, tok, calib, seq=SEQ)
    prepare_qat(model, plan)
    acts = ActivationQuant(model)
    exact, total, worst, fq_err, float_err = 0, 0, 0.0, 0.0, 0.0
    for e in test:
        enc = tok(e.text, truncation=True, max_length=SEQ, return_tensors="pt")
        with torch.no_grad():
            emb = model.bert.embeddings(input_ids=enc["input_ids"])[0]
            x = np.clip(np.round(emb.numpy() / qe.in_scale), -128, 127).astype(np.int64)
            for ql in qe.layers:
                x = layer_int(ql, x)
            hf = model.bert(**enc).last_hidden_state[0].numpy() / qe.out_scale
            acts.attach(qe)
            h = model.bert(**enc).last_hidden_state[0].numpy() / qe.out_scale
            acts.detach()
        d = np.abs(h - x)
        assert np.allclose(h, np.round(h), atol=1e-3)  # on the output grid
        exact += int((d < 1e-3).sum())
        total += d.size
        worst = max(worst, float(d.max()))
        fq_err += float(d.mean())
        float_err += float(np.abs(hf - x).mean())
    assert worst <= 2.0 + 1e-3, worst
    assert exact >= 0.9 * total, exact / total
    assert float_err > 5 * fq_err, (float_err, fq_err)


def test_qat_keeps_nm_and_converts_bit_exactly(tok, data):
    train, calib, _ = data
    model, plan = tiny_classifier(tok)
    before = {n: lin.weight.detach().clone() for n, lin in encoder_linears(model).items()}
    seen = []

    def on_step(step):
        check_model(model, plan)  # the effective weights are N:M at every step
        for name, lin in encoder_linears(model).items():
            assert not ((lin.weight.detach() != 0) & (before[name] == 0)).any(), name
        assert has_weight_fake_quant(model)
        seen.append(step)

    stats = qat_finetune(model, tok, train, calib, plan, epochs=1.0, lr=1e-3, seq=SEQ,
                         refresh_every=3, on_step=on_step, progress=False)
    assert seen == list(range(1, 7)) and stats["steps"] == 6
    assert stats["scale_refreshes"] == 3  # at the start, after steps 3 and 6
    assert not has_weight_fake_quant(model)
    check_model(model, plan)
    changed = 0
    for name, lin in encoder_linears(model).items():
        w = lin.weight.detach()
        assert not hasattr(lin, "parametrizations")
        assert not ((w != 0) & (before[name] == 0)).any(), f"{name}: a pruned weight came back"
        q, s = quantize_weights(w)
        assert torch.equal((q.double() * s[:, None]).float(), w), f"{name} is off its int8 grid"
        changed += int(not torch.equal(w, before[name]))
    assert changed == len(before)  # QAT trained every Linear

    # conversion: the ordinary int8 path, which keeps the trained int8 weights as they are
    qe = calibrate_int8(model, tok, calib, seq=SEQ)
    for i, ql in enumerate(qe.layers):
        for key, path in (("q", "attention.self.query"), ("inter", "intermediate.dense")):
            lq = ql.linears[key]
            assert (lq.n, lq.m) == (2, 4)
            w = encoder_linears(model)[f"layer.{i}.{path}"].weight.detach().double().numpy()
            assert np.allclose(unpack(lq.weight) * lq.w_scale[:, None], w, rtol=1e-6, atol=0)

    # the compiled Program on the ref backend equals the golden integer layers bit for bit
    enc = tok([e.text for e in calib[:4]], padding="max_length", truncation=True,
              max_length=SEQ, return_tensors="pt")
    with torch.no_grad():
        emb = model.bert.embeddings(input_ids=enc["input_ids"])
    masks = enc["attention_mask"].bool()
    comp = compile_encoder(model.bert, preset("tiny"), emb[:3], masks[:3])
    xq = np.clip(np.round(emb[3].numpy() / comp.in_scale), -128, 127).astype(np.int8)
    y, _ = run_on_device(open_device("ref", comp.config), comp, xq, masks[3].numpy())
    want = xq.astype(np.int64)
    for ql in quantize_step(model.bert, emb[:3], masks[:3], preset("tiny")).layers:
        want = layer_int(ql, want, masks[3].numpy())
    assert np.array_equal(y, want)


def test_qat_refuses_bad_input(tok, data):
    train, calib, _ = data
    model, plan = tiny_classifier(tok)
    with pytest.raises(ValueError, match="QAT needs epochs > 0"):
        qat_finetune(model, tok, train, calib, plan, epochs=0, progress=False)
    with pytest.raises(ValueError, match="calibration sentences"):
        qat_finetune(model, tok, train, [], plan, epochs=1, progress=False)
    with pytest.raises(ValueError, match="breaks its 1:4"):
        qat_finetune(model, tok, train, calib, NMPlan.uniform(model, "1:4"), epochs=1,
                     progress=False)
    acts = ActivationQuant(model)
    with pytest.raises(ValueError, match="has 1 layers, the model 2"):
        qe = calibrate_int8(model, tok, calib, seq=SEQ)
        qe.layers = qe.layers[:1]
        acts.attach(qe)


@pytest.mark.parametrize("argv, message", [
    (["--lr", "0"], "lr must be a finite number > 0"),
    (["--qat-epochs", "-1"], "qat_epochs must be a finite number >= 0"),
    (["--method", "gradual", "--prune-end", "1.5"], "prune_end must be in"),
    (["--method", "srste", "--from", "some/parent"], "work with --method oneshot or gradual"),
    (["--qat-from", "/nonexistent/model", "--qat-epochs", "0.25"],
     "not a saved model directory"),
    (["--threads", "0"], "--threads must be >= 1"),
])
def test_prune_command_refuses_bad_recipes_before_any_work(argv, message, capsys):
    from sw.cli import main

    assert main(["prune", "--nm", "2:4", *argv]) == 2
    assert message in capsys.readouterr().err
