"""The CPU baseline harness: fresh processes, interleaved rounds, a complete report.
(No time is asserted: the machines are shared.)"""

import json

import pytest

from sw.perf.cpu import run_cpu_bench


def test_cpu_bench_reports_every_case(tmp_path):
    out = tmp_path / "cpu.json"
    r = run_cpu_bench(models=["minilm"], backends=["torch-fp32", "torch-int8"], seq=8,
                      rounds=2, iters=2, warmup=1, out=out, progress=lambda *_: None)
    assert json.loads(out.read_text()) == r
    assert set(r["cases"]) == {"minilm/torch-fp32", "minilm/torch-int8"}
    for case in r["cases"].values():
        assert case["n"] == 4 and case["threads"] >= 1
        assert 0 < case["min_ms"] <= case["p10_ms"] <= case["median_ms"] <= case["p90_ms"]
    assert r["cpu"] and r["rounds"] == 2


def test_cpu_bench_refuses_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="unknown backend 'tvm'"):
        run_cpu_bench(backends=["tvm"], out=tmp_path / "x.json")
    with pytest.raises(ValueError, match="unknown model 'gpt2'"):
        run_cpu_bench(models=["gpt2"], out=tmp_path / "x.json")
