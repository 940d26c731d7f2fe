"""Fixtures shared by several test modules."""

import pytest


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A 2-layer random BERT (hidden 32, 2 heads, FFN 64) saved as a model directory (what
    ``sw.driver.encoder_run.load_encoder`` and the benches accept as a model path)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, vocab_size=100, max_position_embeddings=32)
    path = tmp_path_factory.mktemp("tiny") / "bert"
    BertModel(cfg).save_pretrained(path)
    return str(path)
