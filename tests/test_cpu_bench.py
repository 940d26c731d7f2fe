"""The CPU baseline harness: fresh processes, interleaved rounds, a complete report.
(No time is asserted: the machines are shared.)"""

import json
import shutil

import numpy as np
import pytest

from sw.perf.cpu import BACKENDS, ORT_FP32_ATOL, _cache_dir, _ort_worker, main, run_cpu_bench

TIMING_FIELDS = {"median_ms", "p10_ms", "p90_ms", "min_ms", "n", "threads"}


def _check_timings(case, n):
    assert TIMING_FIELDS <= set(case)
    assert case["n"] == n and case["threads"] >= 1
    assert 0 < case["min_ms"] <= case["p10_ms"] <= case["median_ms"] <= case["p90_ms"]


@pytest.fixture(scope="module")
def tiny_bert(tiny_bert_dir):
    return tiny_bert_dir


def test_cpu_bench_reports_every_case(tmp_path, tiny_bert):
    out = tmp_path / "cpu.json"
    r = run_cpu_bench(models=[tiny_bert], backends=["torch-fp32", "torch-int8"], seq=8,
                      rounds=2, iters=2, warmup=1, out=out, onnx_dir=tmp_path / "onnx",
                      progress=lambda *_: None)
    assert json.loads(out.read_text()) == r
    assert set(r["cases"]) == {f"{tiny_bert}/torch-fp32", f"{tiny_bert}/torch-int8"}
    for case in r["cases"].values():
        _check_timings(case, 4)
    assert 0.9 < r["cases"][f"{tiny_bert}/torch-int8"]["check"]["cosine"] <= 1 + 1e-9
    assert r["cpu"] and r["rounds"] == 2
    assert not (tmp_path / "onnx").exists()  # no ORT backend: nothing exported


@pytest.fixture(scope="module")
def ort_run(tmp_path_factory, tiny_bert):
    """Both ORT backends on the tiny BERT, seq 16: (report, onnx dir, progress lines)."""
    tmp = tmp_path_factory.mktemp("ort")
    msgs = []
    r = run_cpu_bench(models=[tiny_bert], backends=["ort-fp32", "ort-int8"], seq=16,
                      rounds=1, iters=2, warmup=1, out=tmp / "cpu.json", onnx_dir=tmp / "onnx",
                      progress=msgs.append)
    return r, tmp / "onnx", msgs


def test_ort_backends(tmp_path, tiny_bert, ort_run):
    r, onnx_dir, msgs = ort_run
    seq = 16
    assert any("exporting" in m for m in msgs) and any("quantizing" in m for m in msgs)
    assert r["versions"]["onnxruntime"] and r["ort_fp32_atol"] == ORT_FP32_ATOL
    for b in ("ort-fp32", "ort-int8"):
        case = r["cases"][f"{tiny_bert}/{b}"]
        _check_timings(case, 2)
        assert case["onnxruntime"] == r["versions"]["onnxruntime"]
        assert case["providers"] == ["CPUExecutionProvider"]
        assert case["check"]["vs"] == "torch-fp32"
    assert r["cases"][f"{tiny_bert}/ort-fp32"]["check"]["max_abs_diff"] <= ORT_FP32_ATOL
    assert r["cases"][f"{tiny_bert}/ort-int8"]["check"]["cosine"] > 0.9
    info = r["onnx"][tiny_bert]
    assert info["int8_matmuls"] == 2 * 6 and info["float_matmuls"] == 2 * 2  # Linears; QK, PV
    assert not info["cached"]

    # Independently of the harness: the exported fp32 model vs the PyTorch encoder.
    import onnxruntime as ort
    import torch

    from sw.perf.cpu import _load

    d = _cache_dir(onnx_dir, tiny_bert, seq)
    ids = np.load(d / "input_ids.npy")
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    got = ort.InferenceSession(str(d / "fp32.onnx")).run(None, feeds)[0]
    with torch.inference_mode():
        want = _load(tiny_bert)(input_ids=torch.from_numpy(ids)).last_hidden_state.numpy()
    assert got.shape == want.shape == (1, seq, 32)
    assert np.abs(got - want).max() <= ORT_FP32_ATOL

    # The second run reuses the cache.
    msgs.clear()
    r = run_cpu_bench(models=[tiny_bert], backends=["ort-int8"], seq=seq, rounds=1, iters=1,
                      warmup=0, out=tmp_path / "cpu2.json", onnx_dir=onnx_dir,
                      progress=msgs.append)
    assert r["onnx"][tiny_bert]["cached"] and any("cached" in m for m in msgs)


def test_ort_fp32_mismatch_fails(tmp_path, tiny_bert, ort_run, capsys):
    src = _cache_dir(ort_run[1], tiny_bert, 16)
    d = _cache_dir(tmp_path, tiny_bert, 16)
    shutil.copytree(src, d)
    np.save(d / "torch_fp32_out.npy", np.load(d / "torch_fp32_out.npy") + 10 * ORT_FP32_ATOL)
    with pytest.raises(RuntimeError, match="ort-fp32 output differs from torch-fp32"):
        _ort_worker(tiny_bert, "ort-fp32", 16, 1, 0, 1, tmp_path)
    # the worker's input errors: exit status 2, one marked line for the parent
    assert main(["worker", "--model", tiny_bert, "--backend", "ort-fp32", "--onnx-dir",
                 str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("nmaccel-cpu input error: ort-fp32: --threads is "
                                       "required (PyTorch's thread count)\n")


def test_cpu_bench_refuses_unknown_names(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown backend 'tvm'"):
        run_cpu_bench(backends=["tvm"], out=tmp_path / "x.json")
    with pytest.raises(ValueError, match="unknown backend 'ort-fp16'; known: " +
                       ", ".join(BACKENDS)):
        run_cpu_bench(backends=["ort-fp32", "ort-fp16"], out=tmp_path / "x.json")
    with pytest.raises(ValueError, match="unknown model 'gpt2'"):
        run_cpu_bench(models=["gpt2"], out=tmp_path / "x.json")
    assert main(["worker", "--model", "bert-base", "--backend", "tvm"]) == 2
    assert "nmaccel-cpu input error: unknown backend 'tvm'" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_cpu_bench_counts_roberta_positions_after_the_padding_index(tmp_path, monkeypatch):
    """RoBERTa's first token sits at position padding_idx + 1: 20 position embeddings hold 18
    tokens, and a longer --seq is refused before any ONNX export or worker starts."""
    import torch
    from transformers import RobertaConfig, RobertaModel

    import sw.perf.cpu as cpu

    torch.manual_seed(0)
    path = tmp_path / "rob"
    RobertaModel(RobertaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, vocab_size=100,
                               max_position_embeddings=20)).save_pretrained(path)
    monkeypatch.setattr(cpu, "_run_prepare", lambda *a: pytest.fail("prepared"))
    monkeypatch.setattr(cpu.subprocess, "run", lambda *a, **k: pytest.fail("measured"))
    with pytest.raises(ValueError, match=r"1\.\.18"):
        run_cpu_bench(models=[str(path)], backends=["ort-fp32"], seq=19,
                      out=tmp_path / "x.json")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"model_type": "nonsense"}')
    with pytest.raises(ValueError, match="not a loadable Hugging Face model config"):
        run_cpu_bench(models=[str(tmp_path / "bad")], backends=["ort-fp32"], seq=8,
                      out=tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("backends", [["torch-fp32"], ["ort-fp32"]])
def test_a_model_that_does_not_load_is_one_line_not_a_child_traceback(tmp_path, tiny_bert,
                                                                       backends):
    """A corrupt weights file failed in the worker (or the ONNX export's process), whose
    whole traceback became the error: now the child's one-line input error is the parent's
    ValueError (``nmaccel`` prints it as one line)."""
    cut = tmp_path / "cut"
    shutil.copytree(tiny_bert, cut)
    (cut / "model.safetensors").write_bytes((cut / "model.safetensors").read_bytes()[:100])
    with pytest.raises(ValueError) as e:
        run_cpu_bench(models=[str(cut)], backends=backends, seq=8, rounds=1, iters=1,
                      warmup=0, out=tmp_path / "x.json", onnx_dir=tmp_path / "onnx",
                      progress=lambda *_: None)
    assert str(e.value) == (f"{cut}: not a loadable Hugging Face model (SafetensorError: "
                            "Error while deserializing header: invalid header length)")
    assert not (tmp_path / "x.json").exists()
