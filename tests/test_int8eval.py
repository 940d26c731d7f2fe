"""int8 evaluation through the integer encoder, on a small random classifier."""

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from sw.prune.data import rt_split
from sw.prune.experiment import _minilm_path
from sw.prune.int8eval import calibrate_int8, int8_accuracy, int8_logits
from sw.prune.sparsify import NMPlan, apply_masks, squash

SEED = 3


@pytest.fixture(scope="module")
def setup():
    tok = AutoTokenizer.from_pretrained(_minilm_path())
    torch.manual_seed(SEED)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, num_labels=2)).eval()
    apply_masks(model, NMPlan.uniform(model, "2:4"))
    squash(model)
    train, test, _ = rt_split(seed=0)
    return model, tok, train[:32], test[:40]


def test_int8_logits_track_the_float_model(setup):
    model, tok, calib, test = setup
    qe = calibrate_int8(model, tok, calib, seq=32)
    agree, worst = 0, 0.0
    for e in test:
        enc = tok(e.text, truncation=True, max_length=32, return_tensors="pt")
        with torch.no_grad():
            ref = model(**enc).logits[0]
        got = int8_logits(model, tok, qe, e.text, seq=32)
        worst = max(worst, float((got - ref).abs().max() / ref.abs().max()))
        agree += int(got.argmax() == ref.argmax())
    # stated bound: logits within 10 % of their magnitude; predictions agree on >= 90 %
    assert worst < 0.10, worst
    assert agree >= 0.9 * len(test)


def test_int8_accuracy_stays_near_the_float_accuracy(setup):
    """Predictions agree on >= 90 % of sentences (above), so the two accuracies on the same
    sentences can differ by at most the disagreement rate."""
    model, tok, calib, test = setup
    acc8 = int8_accuracy(model, tok, test, calib, seq=32, progress=False)
    correct = 0
    for e in test:
        enc = tok(e.text, truncation=True, max_length=32, return_tensors="pt")
        with torch.no_grad():
            correct += int(int(model(**enc).logits[0].argmax()) == e.label)
    assert 0.0 <= acc8 <= 1.0
    assert abs(acc8 - correct / len(test)) <= 0.10
