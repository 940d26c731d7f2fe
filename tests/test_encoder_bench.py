"""The encoder benchmark's arithmetic and report (``sw/perf/encoder_bench.py``): the floor, the
bandwidth-bound flag, "does not fit", speed-ups, the RTL-check path (on the ``ref`` backend),
the README table and the plot. Tiny shapes, CPU timing stubbed; no time is asserted."""

import copy
import json
import math

import pytest

from hw.config import preset
from sw.compiler.isa import FIELDS, RQ_RECORD, Command, Op
from sw.perf import builds, encoder_bench
from sw.perf.encoder_bench import (
    BEGIN,
    BUDGET,
    END,
    ModelShape,
    budget_plot_path,
    command_stream_bytes,
    encoder_macs,
    floor_cycles,
    main,
    parse_sparsity,
    preset_clock,
    preset_nm,
    preset_resources,
    pruned_nm,
    readme_table,
    run_encoder_bench,
    run_rtl_check,
    update_readme,
    write_budget_plot,
    write_plot,
)

SEQ = 8


@pytest.fixture(scope="module")
def tiny_bert(tiny_bert_dir):
    return tiny_bert_dir


def _fake_cpu(calls):
    def bench(*, models, seq, out, **kw):
        calls.append({"models": list(models), "seq": seq, **kw})
        cases = {}
        for m in models:
            for b, ms in (("torch-fp32", 5.0), ("ort-fp32", 3.0), ("torch-int8", 4.0),
                          ("ort-int8", 2.0)):
                cases[f"{m}/{b}"] = {"median_ms": ms, "p10_ms": ms * 0.9, "p90_ms": ms * 1.2,
                                     "min_ms": ms * 0.8, "n": 1, "threads": 2}
        return {"seq": seq, "cases": cases, "cpu": "stub", "logical_cpus": 2}
    return bench


@pytest.fixture(scope="module")
def bench(tmp_path_factory, tiny_bert):
    """The benchmark on the tiny BERT, seq 8, over the tiny preset and four variants of it:
    slow and fast device memory, a 1 KiB scratchpad, and an ECP5 part without a measured
    Fmax; the RTL check on the ref backend."""
    tmp = tmp_path_factory.mktemp("bench")
    tiny = preset("tiny")
    presets = [tiny, tiny.replace(name="slowmem", mem_bandwidth_gbps=0.001),
               tiny.replace(name="fastmem", mem_bandwidth_gbps=1000.0),
               tiny.replace(name="smallspm", spm_kib=1),
               tiny.replace(name="noclock", part="LFE5U-85F", mem_bandwidth_gbps=0.8)]
    calls, msgs = [], []
    report = run_encoder_bench(models=[tiny_bert], presets=presets, sparsities=["dense", "2:4"],
                               seq=SEQ, rounds=1, cpu_bench=_fake_cpu(calls), rtl_check=True,
                               rtl_presets=["tiny"], rtl_model=tiny_bert, rtl_sparsity="2:4",
                               rtl_seq=SEQ, rtl_layers=2, rtl_device="ref",
                               ecp5_summary=tmp / "absent.json", out=tmp / "encoder.json",
                               plot=tmp / "encoder.png", onnx_dir=tmp / "onnx",
                               progress=msgs.append)
    return report, tmp, calls, msgs


def _case(report, preset_name, sparsity):
    (c,) = [c for c in report["cases"]
            if c["preset"] == preset_name and c["sparsity"] == sparsity]
    return c


# -- arithmetic --------------------------------------------------------------------------------
def test_floor_by_hand():
    # hidden 32, FFN 64, 2 layers, seq 8: weight MACs 2 * 8 * (4*32*32 + 2*32*64) = 131072,
    # attention 2 * 2 * 8*8 * 32 = 8192; at 2:4 on 10 DSPs x 2 MACs: (65536 + 8192) / 20
    macs = encoder_macs(ModelShape(layers=2, hidden=32, heads=2, ffn=64), seq=8)
    assert macs == {"weight": 131072, "attention": 8192}
    assert floor_cycles(macs, 0.5, 20) == pytest.approx(3686.4)
    assert floor_cycles(macs, 1.0, 16) == pytest.approx((131072 + 8192) / 16)
    with pytest.raises(ValueError, match="density"):
        floor_cycles(macs, 0.0, 16)


def test_floor_matches_the_anchor_table():
    """research/anchors.md: BERT-base, seq 128, 12 layers, 2 MACs per DSP48E2 at 300 MHz."""
    macs = encoder_macs(ModelShape(layers=12, hidden=768, heads=12, ffn=3072), seq=128)
    assert macs["weight"] / 12 == 905_969_664 and macs["attention"] / 12 == 25_165_824
    for name, dsps, want in (("u200", 6840, (2.72, 1.40, 0.74)),
                             ("u280", 9024, (2.06, 1.06, 0.56))):
        cfg = preset(name)
        assert cfg.part_dsps == dsps and cfg.macs_per_dsp == 2
        for density, ms in zip((1.0, 0.5, 0.25), want, strict=True):
            got = floor_cycles(macs, density, dsps * 2) / (300.0 * 1e3)
            assert got == pytest.approx(ms, abs=0.006), (name, density)


def test_sparsity_names_and_preset_m():
    assert parse_sparsity("dense") == ("dense", 1, 1)
    assert parse_sparsity("2:4") == ("2:4", 2, 4)
    assert parse_sparsity("4:4")[0] == "dense"
    for bad in ("3:5", "half", "0:4", "5:4"):
        with pytest.raises(ValueError, match=f"unknown sparsity '{bad}'"):
            parse_sparsity(bad)
    assert preset_nm(preset("u200"), 2, 4) == (4, 8)
    assert preset_nm(preset("u280"), 1, 4) == (2, 8)
    assert preset_nm(preset("ecp5"), 1, 1) == (4, 4)
    with pytest.raises(ValueError, match="no equivalent"):
        preset_nm(preset("tiny"), 1, 8)


def test_a_case_prunes_to_the_sparsity_asked_where_the_presets_m_holds_it(tiny_bert,
                                                                           monkeypatch):
    """2:4 on an M = 8 preset prunes to 2:4 (the weights every preset runs), compiled as 4:8;
    2:8 on an M = 4 preset, which 2:8 weights need not satisfy, prunes to 1:4."""
    import sw.driver.encoder_run as er
    from sw.nm import is_nm
    from sw.prune.sparsify import encoder_linears

    assert pruned_nm(preset("u200"), 2, 4) == "2:4" and pruned_nm(preset("u280"), 1, 4) == "1:4"
    assert pruned_nm(preset("tiny"), 2, 8) == "1:4" and pruned_nm(preset("u200"), 1, 1) == "8:8"
    pruned, prune = [], er.prune_oneshot

    def spy(net, nm, layers):
        out = prune(net, nm, layers)
        pruned.append((nm, all(is_nm(lin.weight.detach(), *map(int, nm.split(":")))
                               for lin in encoder_linears(net).values())))
        return out

    monkeypatch.setattr(er, "prune_oneshot", spy)
    tiny = preset("tiny")
    tiny8 = tiny.replace(name="tiny8", m=8, n_max=8)
    cases = encoder_bench._compile_cases([tiny_bert], [tiny, tiny8], ["2:4", "2:8"], SEQ, None,
                                         {c.name: {"mhz": 100.0} for c in (tiny, tiny8)}, 4,
                                         lambda *_: None)
    assert pruned == [("2:4", True), ("2:4", True), ("1:4", True), ("2:8", True)]
    got = {(c["preset"], c["sparsity"]): (c["pruned"], c["nm"], c["status"]) for c in cases}
    assert got == {("tiny", "2:4"): ("2:4", "2:4", "ok"), ("tiny8", "2:4"): ("2:4", "4:8", "ok"),
                   ("tiny", "2:8"): ("1:4", "1:4", "ok"), ("tiny8", "2:8"): ("2:8", "2:8", "ok")}


def test_clocks(tmp_path):
    ecp5 = preset("ecp5")
    none = preset_clock(ecp5, ecp5_summary=tmp_path / "absent.json")
    assert none["mhz"] is None and none["label"].startswith("no Fmax measured")
    s = tmp_path / "summary.json"
    s.write_text(json.dumps({"fmax_mhz": 41.5, "meets_clock": False, "config": ecp5.to_dict()}))
    got = preset_clock(ecp5, ecp5_summary=s)
    assert got["mhz"] == 41.5 and got["source"] == "nextpnr Fmax" and got["config_matches"]
    u200 = preset_clock(preset("u200"), ecp5_summary=s)
    assert u200["mhz"] == 300.0 and "assumed" in u200["label"]
    assert preset_clock(preset("u280"), alveo_clock_mhz=250)["mhz"] == 250


def _cmd(op, **args):
    return Command(op, {**dict.fromkeys(FIELDS[op], 0), **args})


def test_stream_bytes_by_hand():
    cfg = preset("tiny")  # 4 token columns
    lin = _cmd(Op.LINEAR, rows=8, k=16, tokens=8, n=2, m=4)
    # 4 groups x 2 values + ceil(4 * 2 * 2 bits / 8) = 2 index bytes + a requant record, per
    # row, fetched again for each of the 2 token blocks
    assert command_stream_bytes(lin, cfg) == 8 * (8 + 2 + RQ_RECORD) * 2
    dense = _cmd(Op.LINEAR, rows=8, k=16, tokens=3, n=4, m=4)
    assert command_stream_bytes(dense, cfg) == 8 * (16 + RQ_RECORD)
    assert command_stream_bytes(_cmd(Op.LOAD, bytes=100), cfg) == 100
    assert command_stream_bytes(_cmd(Op.ADD, tokens=8, width=32), cfg) == 0
    assert command_stream_bytes(_cmd(Op.PV, tokens=8, d=16), cfg) == 16 * RQ_RECORD * 2


# -- the benchmark -----------------------------------------------------------------------------
def test_report_written_and_complete(bench, tiny_bert):
    report, tmp, calls, msgs = bench
    assert json.loads((tmp / "encoder.json").read_text()) == json.loads(json.dumps(report))
    assert len(report["cases"]) == 5 * 2
    assert [c["preset"] for c in report["cases"][::2]] == ["tiny", "slowmem", "fastmem",
                                                          "smallspm", "noclock"]
    assert calls and calls[0]["models"] == [tiny_bert] and calls[0]["seq"] == SEQ
    assert calls[0]["rounds"] == 1 and calls[0]["onnx_dir"] == tmp / "onnx"
    assert report["cpu_source"] == "measured in this run"
    assert any("wrote" in m for m in msgs)


def test_floor_and_utilisation_in_the_report(bench):
    report, *_ = bench
    c = _case(report, "tiny", "2:4")
    assert c["status"] == "ok" and c["nm"] == "2:4"
    assert c["floor_cycles"] == pytest.approx((131072 * 0.5 + 8192) / 16)  # tiny: 16 PEs
    assert c["clock_mhz"] == 100.0 and "assumed" in c["clock_label"]
    assert c["floor_ms"] == pytest.approx(c["floor_cycles"] / 1e5)
    assert c["latency_ms"] == pytest.approx(c["projected_cycles"] / 1e5)
    assert c["utilisation"] == pytest.approx(c["floor_cycles"] / c["projected_cycles"])
    assert 0 < c["utilisation"] <= 1 and c["model_cycles"] > 0
    # the kernel as built, against the same floor: slower than the block model on tiny
    assert c["kernel_utilisation"] == pytest.approx(c["floor_cycles"] / c["kernel_cycles"])
    assert 0 < c["kernel_utilisation"] < c["utilisation"]
    # over the preset's own PEs (tiny has no part DSP count: the same floor but for padding)
    assert c["kernel_array_utilisation"] == pytest.approx(c["array_floor_cycles"]
                                                          / c["kernel_cycles"])
    assert c["kernel_array_utilisation"] >= c["kernel_utilisation"]
    # the ceiling: the units' busy time, below every schedule's cycles
    busy = c["busy_cycles"]
    assert busy["total"] == busy["array"] + busy["vector"] + busy["io"]
    assert busy["array"] >= c["array_floor_cycles"] and busy["vector"] > 0
    assert c["busy_utilisation"] == pytest.approx(c["floor_cycles"] / busy["total"])
    assert c["kernel_utilisation"] < c["busy_utilisation"] and c["utilisation"] < c[
        "busy_utilisation"]
    assert c["model_cycles"] == sum(c["model_cycles_by_op"].values())
    assert c["model_cycles"] < _case(report, "tiny", "dense")["model_cycles"]
    # the cycle budget: the kernel's cycles split floor first, term by term
    b = c["cycle_budget"]
    assert list(b) == list(BUDGET)
    assert sum(b.values()) == pytest.approx(c["kernel_cycles"])
    assert b["floor"] / c["kernel_cycles"] == pytest.approx(c["kernel_utilisation"])
    assert b["array_size"] == pytest.approx(0)  # tiny: no part DSPs, the floor is its PEs'
    assert sum(b[f"tiles_{op}"] for op in ("LINEAR", "QK_SOFTMAX", "PV")) == pytest.approx(
        busy["array"] - c["array_floor_cycles"])
    assert all(b[f"tiles_{op}"] >= 0 for op in ("LINEAR", "QK_SOFTMAX", "PV"))
    assert (b["vector"], b["io"]) == (busy["vector"], busy["io"]) and b["overhead"] > 0
    assert sum(c["array_floor_by_op"].values()) == pytest.approx(c["array_floor_cycles"])


def test_bandwidth_bound_flag(bench):
    report, *_ = bench
    tiny, slow, fast = (_case(report, p, "2:4") for p in ("tiny", "slowmem", "fastmem"))
    assert tiny["bandwidth_bound"] is None and tiny["projected_cycles"] == tiny["model_cycles"]
    assert tiny["bound"].startswith("compute")
    assert fast["bandwidth_bound"] is False and fast["bound"] == "compute"
    assert fast["projected_cycles"] == fast["model_cycles"]
    assert slow["bandwidth_bound"] is True and slow["bound"] == "bandwidth"
    assert slow["bandwidth_bound_commands"] > 0
    assert slow["projected_cycles"] > slow["model_cycles"] == fast["model_cycles"]
    # 0.001 GB/s at 100 MHz: 0.01 bytes per cycle
    assert slow["memory_cycles"] == pytest.approx(
        (slow["weight_bytes_streamed"] + slow["io_bytes"]) / 0.01)
    assert slow["weight_stream_ms"] == pytest.approx(slow["weight_bytes_streamed"] / 1e3)


def test_does_not_fit_is_recorded(bench):
    report, *_ = bench
    for sp in ("dense", "2:4"):
        c = _case(report, "smallspm", sp)
        assert c["status"] == "does not fit"
        assert "scratchpad" in c["reason"] and "1024" in c["reason"]
        assert "latency_ms" not in c and c.get("speedup") is None
        assert c["floor_cycles"] > 0  # the floor does not depend on fitting


def test_no_fmax_means_no_latency(bench):
    report, *_ = bench
    c = _case(report, "noclock", "2:4")
    assert c["status"] == "ok" and c["model_cycles"] == _case(report, "tiny", "2:4")[
        "model_cycles"]
    assert c["clock_mhz"] is None and c["clock_label"].startswith("no Fmax measured")
    for key in ("latency_ms", "floor_ms", "utilisation", "speedup", "projected_cycles",
                "bandwidth_bound"):
        assert c[key] is None, key
    assert c["bound"] == "unknown: no clock" and c["weight_stream_ms"] > 0
    assert c["compute_utilisation"] == pytest.approx(c["floor_cycles"] / c["model_cycles"])
    table = readme_table(report)
    assert f"| noclock | 2:4 | {c['model_cycles']:,} | no clock | {c['floor_cycles']:,.0f} " \
        "cycles | - |" in table


def test_speedup_over_the_best_cpu_baseline(bench):
    report, *_ = bench
    c = _case(report, "fastmem", "2:4")
    assert c["best_cpu"] == {"backend": "ort-int8", "median_ms": 2.0}
    assert c["speedup"] == pytest.approx(2.0 / c["latency_ms"])
    assert c["kernel_speedup"] == pytest.approx(2.0 / c["kernel_ms"])
    row = next(line for line in readme_table(report).splitlines()
               if line.startswith("| ") and "| fastmem | 2:4 |" in line)
    assert row.split("|")[-2].strip() == f"{2.0 / c['kernel_ms']:.2f}x"


def test_rtl_check_path_on_ref(bench):
    """On the ref backend the "RTL" is the kernel model: kernel ratio 1, bit-exact, and the
    check's cycles (32 calibration sequences) equal the bench's (2): calibration never moves
    cycles. ``ratio`` is the kernel's cycles over the block model's."""
    report, *_ = bench
    (r,) = report["rtl_checks"]
    assert r["status"] == "OK" and r["bit_exact"] and r["mismatches"] == 0
    assert r["kernel_ratio"] == 1.0 and r["rtl_cycles"] == r["kernel_model_cycles"]
    c = _case(report, "tiny", "2:4")
    assert r["model_cycles"] == c["model_cycles"] and r["rtl_cycles"] == c["kernel_cycles"]
    assert r["ratio"] == c["kernel_cycles"] / c["model_cycles"] > 1
    assert c["rtl_kernel_ratio"] == 1.0
    assert c["kernel_ms"] == pytest.approx(c["kernel_cycles"] / 1e5)
    assert "rtl_kernel_ratio" not in _case(report, "fastmem", "2:4")  # not checked there


def test_plot_written(bench):
    _, tmp, *_ = bench
    data = (tmp / "encoder.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    data = (tmp / "encoder-budget.png").read_bytes()  # beside it: the cycle budgets
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert budget_plot_path(tmp / "encoder.png") == tmp / "encoder-budget.png"
    assert not write_budget_plot({"cases": [{"status": "does not fit"}], "seq": 8},
                                 tmp / "none.png")
    assert not (tmp / "none.png").exists()


def test_the_plot_legend_names_only_what_it_shows(bench, tmp_path):
    """The legend lists the series some panel draws: here the CPU bars, dense and 2:4, the
    floor and the kernel. Without CPU figures and with one sparsity only that one remains;
    a sparsity other than dense, 2:4 and 1:4 gets its own entry."""
    report, *_ = bench
    assert write_plot(report, tmp_path / "all.png") == [
        "CPU (median, p10-p90)", "accelerator dense", "accelerator 2:4", "compute floor",
        "RTL kernel as built (sw/perf/top.py)"]
    one = copy.deepcopy(report)
    one["cpu"] = None
    one["cases"] = [c for c in one["cases"] if c["sparsity"] == "2:4"]
    other = copy.deepcopy(one["cases"][0])
    other.update(sparsity="2:8", kernel_ms=None)
    one["cases"].append(other)
    assert write_plot(one, tmp_path / "one.png") == [
        "accelerator 2:4", "accelerator 2:8", "compute floor",
        "RTL kernel as built (sw/perf/top.py)"]
    assert (tmp_path / "one.png").read_bytes()[:4] == b"\x89PNG"


def test_resources_say_whether_the_preset_fits(tmp_path):
    cfg = preset("u200")
    assert preset_resources(cfg, bitstreams=tmp_path)["fits"] is None  # no summary yet
    (tmp_path / "u200-xcup").mkdir()
    summary = {"label": "Yosys estimate", "config": cfg.to_dict(),
               "percent": {"LUT": 150.0, "FF": 60.0, "DSP48E2": 101.0}}
    (tmp_path / "u200-xcup" / "summary.json").write_text(json.dumps(summary))
    r = preset_resources(cfg, bitstreams=tmp_path)
    assert r["fits"] is False and r["over"] == {"LUT": 150.0, "DSP48E2": 101.0}
    assert "does not fit the part (LUT 150 %, DSP48E2 101 %)" in r["label"]
    summary.update(percent={"LUT": 80.0, "DSP48E2": 100.0}, config={"name": "older"})
    (tmp_path / "u200-xcup" / "summary.json").write_text(json.dumps(summary))
    r = preset_resources(cfg, bitstreams=tmp_path)
    assert r["fits"] is True and "for a different config: fits the part (at most 100 %)" in \
        r["label"]
    assert r["config_matches"] is False and r["rtl_matches"] is None  # no digest recorded
    report = _fake_report()
    report["presets"]["u200"]["resources"] = r
    assert f"u200: {r['label']}." in readme_table(report)


def test_resources_and_clock_say_when_the_rtl_changed_since_the_build(tmp_path, monkeypatch):
    """A summary built from other RTL (its ``rtl_digest`` is not the sources' digest now) says
    so in the label; one built from this RTL says nothing more."""
    monkeypatch.setattr(builds, "_rtl_digest", lambda: "a" * 16)
    for name, target in (("u200", "xcup"), ("ecp5", "ecp5")):
        cfg = preset(name)
        (tmp_path / f"{name}-{target}").mkdir()
        summary = {"label": "Yosys estimate", "config": cfg.to_dict(), "fmax_mhz": 31.0,
                   "percent": {"LUT": 150.0}, "rtl_digest": "b" * 16}
        path = tmp_path / f"{name}-{target}" / "summary.json"
        path.write_text(json.dumps(summary))
        r = preset_resources(cfg, bitstreams=tmp_path)
        assert r["config_matches"] and r["rtl_matches"] is False
        assert f"from other RTL (digest {'b' * 16}; the sources' now {'a' * 16})" in r["label"]
        if name == "ecp5":
            clock = preset_clock(cfg, ecp5_summary=path)
            assert clock["rtl_matches"] is False and clock["label"] == (
                "31.0 MHz (nextpnr Fmax), measured on other RTL")
        path.write_text(json.dumps({**summary, "rtl_digest": "a" * 16}))
        r = preset_resources(cfg, bitstreams=tmp_path)
        assert r["rtl_matches"] is True and "RTL" not in r["label"]
        if name == "ecp5":
            assert preset_clock(cfg, ecp5_summary=path)["label"] == "31.0 MHz (nextpnr Fmax)"


def _sliced_summary(cfg, lut_per_pe: int, glue_luts: int, part_luts: int) -> dict:
    """A sliced estimate of ``cfg`` whose LUTs are ``glue_luts + lut_per_pe R C`` of a part
    with ``part_luts`` (every other class zero), as bitstreams.xcup writes one."""
    from bitstreams.xcup import CLASSES

    engine = {k: {"terms": ["1", "R", "C", "R*C"],
                  "coef": [0.0, 0.0, 0.0, float(lut_per_pe if k == "LUT" else 0)]}
              for k in CLASSES}
    luts = glue_luts + lut_per_pe * cfg.pe_rows * cfg.pe_cols
    return {"method": "slices", "label": "Yosys estimate", "config": cfg.to_dict(),
            "part": cfg.part, "pe_rows": cfg.pe_rows, "pe_cols": cfg.pe_cols,
            "model": {"engine": engine},
            "parts": {"vector": dict.fromkeys(CLASSES, 0),
                      "glue": {**dict.fromkeys(CLASSES, 0), "LUT": glue_luts}},
            "part_capacity": {"LUT": part_luts},
            "percent": {"LUT": round(100 * luts / part_luts, 1)}}


def test_a_preset_too_large_for_its_part_gets_the_largest_variant_that_fits(tmp_path,
                                                                           tiny_bert):
    """Beside a preset whose estimate is over its part, the bench projects the largest array
    of its columns the same estimate fits (here 2 of the 4 rows: 100 + 100 R C LUTs of
    1,000), labelled as such; ``fit_variants=False`` leaves it out."""
    cfg = preset("tiny").replace(name="part16", part_dsps=16)  # the floor: 16 DSPs' MACs
    (tmp_path / "part16-xcup").mkdir()
    (tmp_path / "part16-xcup" / "summary.json").write_text(
        json.dumps(_sliced_summary(cfg, 100, 100, 1000)))
    kw = dict(models=[tiny_bert], presets=[cfg], sparsities=["2:4"], seq=SEQ, cpu="none",
              rtl_check=False, bitstreams=tmp_path, ecp5_summary=tmp_path / "absent.json",
              out=tmp_path / "e.json", plot=None, progress=lambda m: None)
    report = run_encoder_bench(**kw)
    assert [c["preset"] for c in report["cases"]] == ["part16", "part16-2x4"]
    assert report["presets"]["part16"]["resources"]["fits"] is False
    res = report["presets"]["part16-2x4"]["resources"]
    assert res["fits"] is True and res["variant_of"] == "part16"
    assert res["percent"] == {"LUT": 90.0}  # 100 + 100 x 2 x 4 of 1,000
    assert "re-evaluated at 2 x 4 PEs" in res["label"] and "fits the part" in res["label"]
    config = report["presets"]["part16-2x4"]["config"]
    assert config == {**cfg.to_dict(), "name": "part16-2x4", "pe_rows": 2}
    small, full = _case(report, "part16-2x4", "2:4"), _case(report, "part16", "2:4")
    assert small["status"] == full["status"] == "ok"
    assert small["kernel_cycles"] > full["kernel_cycles"]  # half the PEs
    assert small["floor_cycles"] == full["floor_cycles"]  # the same part
    table = readme_table(report)
    assert "| part16-2x4 | 2:4 |" in table and f"part16-2x4: {res['label']}" in table
    report = run_encoder_bench(**kw, fit_variants=False)
    assert [c["preset"] for c in report["cases"]] == ["part16"]


# -- README table ------------------------------------------------------------------------------
def _fake_report():
    return {
        "generated": "2026-01-01 00:00 UTC", "seq": 128, "models": ["bert-base"],
        "presets": {"u200": {"clock": {"label": "300 MHz (assumed Alveo kernel clock)"}},
                    "ecp5": {"clock": {"label": "no Fmax measured"}}},
        "rtl_checks": [{"status": "OK", "preset": "tiny", "model": "minilm", "layers": 1,
                        "seq": 16, "sparsity": "2:4", "simulator": "verilator",
                        "rtl_cycles": 1_734_288, "model_cycles": 923_342,
                        "ratio": 1_734_288 / 923_342, "kernel_model_cycles": 1_734_288,
                        "kernel_ratio": 1.0, "bit_exact": True}],
        "cases": [
            {"model": "bert-base", "preset": "u200", "sparsity": "2:4", "nm": "4:8",
             "status": "ok", "model_cycles": 1_627_226, "latency_ms": 5.424, "floor_ms": 1.398,
             "kernel_cycles": 3_000_000, "kernel_ms": 10.0, "kernel_utilisation": 0.1398,
             "cycle_budget": {"floor": 419_430.4, "array_size": 150_000, "tiles_LINEAR": 0,
                              "tiles_QK_SOFTMAX": 30_000, "tiles_PV": 0, "vector": 2_000_000,
                              "io": 3_000, "overhead": 397_569.6},
             "utilisation": 0.258, "bound": "compute", "best_cpu": {"backend": "ort-int8",
                                                                    "median_ms": 240.9},
             "speedup": 44.4},
            {"model": "bert-base", "preset": "ecp5", "sparsity": "dense", "nm": "4:4",
             "status": "does not fit", "reason": "the encoder needs 1 bytes", "floor_ms": None},
        ],
        "cpu": {"seq": 128, "cpu": "stub", "logical_cpus": 2, "cases": {
            "bert-base/ort-int8": {"median_ms": 240.9, "p10_ms": 183.4, "p90_ms": 270.9}}},
        "cpu_source": "measured in this run",
    }


def test_readme_table_between_markers(tmp_path):
    report = _fake_report()
    table = readme_table(report)
    assert "| BERT-base (random weights) | u200 | 2:4 (as 4:8) | 1,627,226 | 5.4 ms |" in table
    assert "44.4x" in table and "240.9 ms (ort-int8)" in table
    assert "does not fit: the encoder needs 1 bytes" in table
    assert "1.0000 x the kernel model** (1,734,288) and 1.88 x the block model" in table
    assert "| 10.0 ms (3,000,000 cycles) | 0.14 |" in table and "no Fmax measured" in table
    assert "unless a config's `mem_read_delay` says later;" in table
    report["presets"]["u200"]["config"] = {"mem_read_delay": 30}
    assert "says later (u200: 30 cycles more);" in readme_table(report)
    del report["presets"]["u200"]["config"]
    assert ("| BERT-base (random weights) | u200 | 2:4 (as 4:8) | 14.0 % | 5.0 % | 0.0 % | "
            "1.0 % | 0.0 % | 66.7 % | 0.1 % | 13.3 % |") in table
    before, after = "# Title\n\nintro text\n", "\n\n## Next\nmore text\n"
    readme = tmp_path / "README.md"
    readme.write_text(f"{before}{BEGIN}\nold table\n{END}{after}")
    update_readme(readme, report)
    text = readme.read_text()
    assert text.startswith(before + BEGIN + "\n") and text.endswith(END + after)
    assert "old table" not in text and table in text
    update_readme(readme, report)  # idempotent
    assert readme.read_text() == text
    readme.write_text("no markers here\n")
    with pytest.raises(ValueError, match="bench:begin"):
        update_readme(readme, report)
    assert readme.read_text() == "no markers here\n"


# -- the command line --------------------------------------------------------------------------
@pytest.mark.parametrize("args, bad", [(["--presets", "nope"], "unknown preset 'nope'"),
                                       (["--models", "gpt9"], "unknown model 'gpt9'"),
                                       (["--sparsity", "3:7"], "unknown sparsity '3:7'"),
                                       (["--rtl-presets", "x"], "unknown preset 'x'"),
                                       (["--readme", "/nonexistent/README.md"], "bench:begin"),
                                       (["--models", ""], "--models: nothing selected"),
                                       (["--presets", " , "], "--presets: nothing selected"),
                                       (["--sparsity", ""], "--sparsity: nothing selected"),
                                       (["--models", "bert-base,bert-base"], "named twice"),
                                       (["--sparsity", "dense,2:4,8:8"],
                                        "dense and 8:8 are the same case (dense)"),
                                       (["--seq", "0"], "--seq 0: takes >= 1 tokens"),
                                       (["--alveo-clock-mhz", "-300"],
                                        "--alveo-clock-mhz must be a finite number > 0"),
                                       (["--alveo-clock-mhz", "nan"], "got nan"),
                                       (["--rounds", "0"], "--rounds must be an integer >= 1"),
                                       (["--cpu-iters", "0"], "--cpu-iters must be"),
                                       (["--cpu-warmup", "-1"], "--cpu-warmup must be"),
                                       (["--threads", "0"], "--threads must be"),
                                       (["--rtl-model", "gpt9"], "unknown model 'gpt9'"),
                                       (["--rtl-sparsity", "3:7"], "unknown sparsity '3:7'"),
                                       (["--rtl-seq", "0"], "--rtl-seq 0: takes >= 1"),
                                       (["--rtl-layers", "0"], "--rtl-layers must be")])
def test_cli_names_bad_input(capsys, tmp_path, args, bad):
    """A one-line error naming the problem (no usage block), exit status 2, nothing written
    (an empty selection would have emptied the README's table), before any compiling: the
    CPU and RTL options too, which are used last (a negative clock gave negative latencies;
    ``--rtl-seq 0`` failed the RTL check after minutes of compiling)."""
    assert main([*args, "--no-cpu", "--out", str(tmp_path / "e.json")]) == 2
    err = capsys.readouterr().err
    assert bad in err and "usage:" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "e.json").exists()


def test_an_unknown_simulator_is_refused_before_compiling(capsys, tmp_path, monkeypatch):
    """SIM=<unknown> failed the RTL check after every case had compiled."""
    monkeypatch.setenv("SIM", "modelsim")
    monkeypatch.setattr(encoder_bench, "_compile_cases", lambda *a: pytest.fail("compiled"))
    assert main(["--no-cpu", "--out", str(tmp_path / "e.json")]) == 2
    assert "SIM='modelsim' is not supported" in capsys.readouterr().err


def test_nmaccel_bench_encoder_names_itself(capsys, tmp_path):
    """Through ``nmaccel bench encoder`` its errors (and usage) carry that name, not the
    module's."""
    from sw.cli import main as nmaccel

    assert nmaccel(["bench", "encoder", "--seq", "0", "--out", str(tmp_path / "e.json")]) == 2
    assert capsys.readouterr().err.startswith("nmaccel bench encoder: error: --seq 0")


def test_corrupt_summaries_and_reports_are_named(capsys, tmp_path):
    """A build summary or reused CPU report that is not a JSON object stops the run with an
    error that names the file, not a traceback."""
    for text, what in (("{ not json", "not a readable build summary"),
                       ("[1, 2]", r"not a build summary .*\(a JSON list, not an object\)")):
        for name, target in (("u200", "xcup"), ("ecp5", "ecp5")):
            (tmp_path / f"{name}-{target}").mkdir(exist_ok=True)
            path = tmp_path / f"{name}-{target}" / "summary.json"
            path.write_text(text)
            with pytest.raises(ValueError, match=what) as e:
                preset_resources(preset(name), bitstreams=tmp_path)
            assert str(path) in str(e.value)
        with pytest.raises(ValueError, match=what):
            encoder_bench.fit_variant(preset("u200"), bitstreams=tmp_path)
        with pytest.raises(ValueError, match=what):
            preset_clock(preset("ecp5"), ecp5_summary=tmp_path / "ecp5-ecp5" / "summary.json")
    bad = tmp_path / "cpu.json"
    bad.write_text("nope")
    assert main(["--cpu-json", str(bad), "--out", str(tmp_path / "e.json")]) == 2  # at once
    err = capsys.readouterr().err
    assert f"{bad}: not a readable CPU report" in err
    assert not (tmp_path / "e.json").exists()


def test_cli_quick_run(capsys, tmp_path, tiny_bert):
    readme = tmp_path / "README.md"
    readme.write_text(f"top\n{BEGIN}\n{END}\nbottom\n")
    cpu = tmp_path / "cpu.json"
    cpu.write_text(json.dumps({"seq": SEQ, "cases": {
        f"{tiny_bert}/ort-fp32": {"median_ms": 1.5, "p10_ms": 1.0, "p90_ms": 2.0}}}))
    out = tmp_path / "e.json"
    assert main(["--models", tiny_bert, "--presets", "tiny", "--sparsity", "1:4",
                 "--seq", str(SEQ), "--no-rtl-check", "--cpu-json", str(cpu), "--out", str(out),
                 "--plot", "", "--readme", str(readme)]) == 0
    r = json.loads(out.read_text())
    (c,) = r["cases"]
    assert c["sparsity"] == "1:4" and c["status"] == "ok" and r["rtl_checks"] == []
    assert r["cpu_source"].startswith("reused from")
    assert c["speedup"] == pytest.approx(1.5 / c["latency_ms"])
    assert not math.isnan(c["utilisation"])
    text = readme.read_text()
    assert text.startswith("top\n") and text.endswith("bottom\n") and "| tiny | 1:4 |" in text
    assert "RTL check: not run" in text
    out = capsys.readouterr().out
    assert "1:4" in out
    losses = [ln for ln in out.splitlines() if "kernel's largest losses:" in ln]
    assert len(losses) == 1 and losses[0].count(" %") == 3, out


def test_cli_takes_config_files_as_presets(capsys, tmp_path, tiny_bert):
    """A config JSON file stands for a preset (what-if projections): its cases carry its
    name; two configs of one name in a run are refused, naming it."""
    wide = tmp_path / "wide.json"
    preset("tiny").replace(name="tiny-wide", vector_lanes=8).to_json(wide)
    out = tmp_path / "e.json"
    args = ["--models", tiny_bert, "--sparsity", "2:4", "--seq", str(SEQ), "--layers", "1",
            "--no-rtl-check", "--no-cpu", "--out", str(out), "--plot", ""]
    assert main([*args, "--presets", f"tiny,{wide}"]) == 0
    tiny, w = json.loads(out.read_text())["cases"]
    assert (tiny["preset"], w["preset"]) == ("tiny", "tiny-wide")
    assert w["busy_cycles"]["vector"] < tiny["busy_cycles"]["vector"]  # 8 lanes, not 4
    assert w["busy_cycles"]["array"] == tiny["busy_cycles"]["array"]
    preset("tiny").to_json(wide)
    for presets, err in ((f"tiny,{wide}", "two configs named 'tiny'"),
                         (str(tmp_path / "absent.json"), "absent.json': no such file"),
                         (str(out), "unknown config field(s)")):  # a file, not a config
        assert main([*args, "--presets", presets]) == 2
        assert err in capsys.readouterr().err
    wide.write_text("{not json")
    assert main([*args, "--presets", str(wide)]) == 2
    assert "malformed config JSON in" in capsys.readouterr().err


def test_rtl_check_halves_the_sequence_until_the_layer_fits_the_scratchpad(tiny_bert):
    """1 KiB cannot hold the tiny BERT's layer at seq 8 (1,408 bytes at its peak): the
    check runs it at seq 4 and says so."""
    msgs = []
    r = run_rtl_check(preset("tiny").replace(spm_kib=1), model=tiny_bert, seq=8, device="ref",
                      progress=msgs.append)
    assert r["seq"] == 4 and r["bit_exact"] and r["kernel_ratio"] == 1.0
    assert any("seq 8 does not fit" in m and "scratchpad" in m for m in msgs), msgs
