"""Recovery helpers: cubic N:M schedule, gradual pruning, SR-STE, distillation loss."""

import pytest
import torch
from transformers import BertConfig, BertModel

from sw.nm import is_nm
from sw.prune.recovery import (
    GradualPruner,
    apply_srste,
    cubic_density,
    distillation_loss,
    refresh_srste_masks,
    scheduled_n,
)
from sw.prune.sparsify import NMPlan, check_model, current_masks, encoder_linears

SEED = 77


def tiny_bert():
    torch.manual_seed(SEED)
    return BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64, vocab_size=50)).train()


def batch():
    g = torch.Generator().manual_seed(SEED)
    return {"input_ids": torch.randint(0, 50, (2, 8), generator=g)}


def test_cubic_schedule():
    assert cubic_density(0, 100, 0.25) == 1.0
    assert cubic_density(100, 100, 0.25) == 0.25 == cubic_density(500, 100, 0.25)
    ns = [scheduled_n(s, 100, 1, 8) for s in range(0, 101, 5)]
    assert ns[0] == 8 and ns[-1] == 1
    assert all(a >= b for a, b in zip(ns, ns[1:]))  # monotone: never re-densifies
    with pytest.raises(ValueError, match="final density must be in"):
        cubic_density(1, 10, 0.0)


def test_gradual_pruner_walks_to_the_target_with_nested_masks():
    model = tiny_bert()
    pruner = GradualPruner(model, NMPlan.uniform(model, "1:4"), total_steps=20, update_every=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    previous, seen_n = None, []
    for _ in range(24):
        plan = pruner.step()
        seen_n.append(next(iter(plan.layers.values()))[0])
        opt.zero_grad()
        model(**batch()).last_hidden_state.pow(2).mean().backward()
        opt.step()
        masks = current_masks(model)
        if previous is not None:
            for name, mask in masks.items():
                assert not (mask & ~previous[name]).any(), "a mask grew back"
        previous = masks
        check_model(model, NMPlan(dict(pruner.current)))  # effective weights follow the masks
    assert seen_n[0] == 4 and seen_n[-1] == 1 and sorted(seen_n, reverse=True) == seen_n
    check_model(model, NMPlan.uniform(model, "1:4"))


def test_srste_straight_through_and_regrowth():
    model = tiny_bert()
    apply_srste(model, NMPlan.uniform(model, "2:4"), decay=0.5)
    lin = encoder_linears(model)["layer.0.intermediate.dense"]
    mask = lin.parametrizations.weight[0].mask.clone()
    dense = lin.parametrizations.weight.original
    model(**batch()).last_hidden_state.pow(2).mean().backward()
    # straight-through: pruned weights get gradient too (not only the decay)
    assert (dense.grad[~mask] - 0.5 * dense.detach()[~mask]).abs().max() > 0
    # regrowth: make a pruned weight the largest of its group, refresh, and it is kept
    r, c = (~mask).nonzero()[0].tolist()
    with torch.no_grad():
        dense[r, c] = 100.0
    assert refresh_srste_masks(model) > 0
    assert lin.parametrizations.weight[0].mask[r, c]
    assert is_nm(lin.weight.detach(), 2, 4)


def test_srste_decay_term_exact():
    """With a zero upstream gradient, the dense gradient is exactly decay * (~mask) * W."""
    from sw.prune.recovery import SRSTEMask

    w = torch.randn(4, 8, requires_grad=True)
    m = SRSTEMask(torch.rand(4, 8) > 0.5, 2, 4, decay=0.3)
    (m(w) * 0).sum().backward()
    assert torch.allclose(w.grad, 0.3 * (~m.mask) * w.detach())


def test_distillation_loss():
    logits = torch.randn(4, 2)
    hidden = [torch.randn(4, 8, 16)]
    assert distillation_loss(logits, logits, student_hidden=hidden,
                             teacher_hidden=hidden).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(logits, -logits).item() > 0
    with pytest.raises(ValueError, match="1 student vs 2 teacher"):
        distillation_loss(logits, logits, student_hidden=hidden, teacher_hidden=hidden * 2)
