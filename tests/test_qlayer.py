"""The integer golden model of a BERT encoder layer against the float HF layer."""

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from sw.compiler.qlayer import cosine, layer_float, layer_int, quantize_bert_layer
from sw.prune.sparsify import NMPlan, apply_masks, squash

SEED = 5


@pytest.mark.parametrize("nm", [None, (2, 4), (1, 4)])
def test_int8_layer_tracks_the_float_layer(nm):
    torch.manual_seed(SEED)
    model = BertModel(BertConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=128, vocab_size=100)).eval()
    if nm is not None:
        apply_masks(model, NMPlan.uniform(model, f"{nm[0]}:{nm[1]}"))
        squash(model)
    layer = model.encoder.layer[0]
    g = torch.Generator().manual_seed(SEED)
    xs = [model.embeddings(torch.randint(0, 100, (1, 16), generator=g)).detach()
          for _ in range(5)]
    masks = [torch.ones(1, 16, dtype=torch.bool) for _ in xs]
    names = ("q", "k", "v", "ao", "inter", "out")
    ql = quantize_bert_layer(layer, xs[:4], masks[:4],
                             nm={k: nm for k in names} if nm else None)
    xi = np.clip(np.round(xs[4][0].numpy() / ql.in_scale), -128, 127).astype(np.int64)
    key_mask = np.arange(16) < 12  # four padding keys
    y = layer_int(ql, xi, key_mask)
    assert y.dtype == np.int8 and y.shape == (16, 64)
    ref = layer_float(layer, torch.from_numpy(xi * ql.in_scale), key_mask).numpy()
    # measured 0.9999 on this seeded layer; real BERT activations need more (see README)
    assert cosine(y * ql.out_scale, ref) > 0.999
    assert np.array_equal(layer_int(ql, xi, key_mask), y)  # deterministic
    with pytest.raises(ValueError, match=r"layer input must be \[tokens, 64\]"):
        layer_int(ql, xi[:, :32])
