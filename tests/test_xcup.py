"""UltraScale+ estimates by slices (bitstreams/xcup.py): fit, composition, a real slice."""

import json

import pytest

from bitstreams import xcup
from hw.config import ConfigError, preset

pytestmark = pytest.mark.synth


def test_fit_reproduces_a_bilinear_toy_exactly():
    def f(r, c):
        return 3 + 2 * r + 5 * c + 7 * r * c

    points = [{"R": r, "C": c} for r, c in xcup.ENGINE_SHAPES]
    model = xcup.fit_linear(points, [f(p["R"], p["C"]) for p in points],
                            ["1", "R", "C", "R*C"])
    assert model["coef"] == pytest.approx([3, 2, 5, 7])
    assert model["max_residual"] == pytest.approx(0, abs=1e-9)
    for p in points:
        assert xcup.predict(model, p) == pytest.approx(f(p["R"], p["C"]))
    assert xcup.predict(model, {"R": 96, "C": 128}) == pytest.approx(f(96, 128))


def test_fit_refuses_points_that_do_not_determine_the_terms():
    with pytest.raises(ValueError, match="cannot fit"):
        xcup.fit_linear([{"L": 2}], [1.0], ["1", "L"])
    with pytest.raises(ValueError, match="do not determine"):
        xcup.fit_linear([{"R": 2, "C": 2}, {"R": 2, "C": 4}, {"R": 2, "C": 8}], [1, 2, 3],
                        ["1", "R", "C"])


def test_cell_classes():
    cls = xcup.cell_classes({"LUT1": 1, "LUT6": 4, "FDRE": 5, "FDSE": 1, "CARRY8": 2,
                             "RAMB36E2": 3, "RAMB18E2": 3, "RAM64M8": 2, "SRLC32E": 1,
                             "DSP48E2": 7, "URAM288": 1, "BUFG": 1, "INV": 9})
    assert cls == {"LUT": 5, "FF": 6, "CARRY": 2, "DSP48E2": 7, "BRAM36": 4.5, "URAM": 1,
                   "LUTRAM": 16, "SRL": 1, "MUXF": 0}
    with pytest.raises(ValueError, match="'GTYE4_CHANNEL' has no resource class"):
        xcup.cell_classes({"GTYE4_CHANNEL": 1})


def _fake_cells(part, cfg):
    """Cell counts linear in the parameters each part depends on (a stand-in for Yosys)."""
    r, c, lanes = cfg.pe_rows, cfg.pe_cols, cfg.vector_lanes
    if part == "engine":
        return {"LUT6": 500 + 30 * r + 40 * c + 60 * r * c, "DSP48E2": 70 + 3 * r + r * c,
                "RAMB36E2": 2 * r + c, "FDRE": 1000 + 17 * r * c}
    if part == "vector":
        return {"LUT6": 300 + 90 * lanes, "DSP48E2": 11 * lanes, "RAMB18E2": 2 * lanes}
    assert part == "accel"
    glue = {"LUT6": 1500, "RAMB36E2": 1024, "FDRE": 400}
    out = {}
    for d in (glue, _fake_cells("engine", cfg), _fake_cells("vector", cfg)):
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


@pytest.fixture
def fake_yosys(monkeypatch):
    calls = []

    def synth_part(part, cfg, workdir, *, log=print):
        calls.append((part, cfg.pe_rows, cfg.pe_cols, cfg.vector_lanes))
        return {"part": part, "pe_rows": cfg.pe_rows, "pe_cols": cfg.pe_cols,
                "vector_lanes": cfg.vector_lanes, "cells": _fake_cells(part, cfg),
                "wall_s": 10.0 * len(calls)}

    monkeypatch.setattr(xcup, "synth_part", synth_part)
    monkeypatch.setattr(xcup, "yosys_version", lambda: "Yosys test")
    return calls


def test_estimate_composes_engine_vector_and_glue(fake_yosys, tmp_path):
    cfg = preset("u200")
    est = xcup.estimate(cfg, tmp_path, log=lambda m: None)
    assert est["method"] == "slices" and est["label"].startswith("Yosys estimate")
    whole = xcup.cell_classes(_fake_cells("accel", cfg))
    assert est["utilisation"] == {k: round(v) for k, v in whole.items()}
    assert est["percent"]["DSP48E2"] == round(100 * whole["DSP48E2"] / 6840, 1)
    # every slice is small: nothing near the preset's own shape or lane count was synthesized
    assert max(r * c for _, r, c, _ in fake_yosys) <= 64
    assert max(n for *_, n in fake_yosys) <= max(xcup.LANES)
    # the syntheses' own time (the fake's k-th call took 10 k s), not this pass's
    assert est["synth_s"] == sum(rec["wall_s"] for rec in est["slices"]) > est["wall_s"]
    assert est["synth_s"] == 10.0 * sum(range(1, len(fake_yosys) + 1))
    json.dumps(est)  # JSON-able


def test_validate_excludes_the_mid_shape_and_lanes(fake_yosys, tmp_path):
    val = xcup.validate(xcup.mid_config(preset("u200")), tmp_path, log=lambda m: None)
    assert val["ok"]
    assert all(abs(v["rel_error"]) < 1e-9 for v in val["total"].values())
    engine_shapes = {(r, c) for p, r, c, _ in fake_yosys if p == "engine"}
    vector_lanes = {n for p, *_, n in fake_yosys if p == "vector"}
    # the predictions use slices other than the mid shape (16 x 16) and lane count (8) ...
    assert (16, 16) not in set(map(tuple, val["slices_shapes"]))
    assert val["slices_lanes"] == [2, 4]
    # ... which are then synthesized only for the comparison
    assert (16, 16) in engine_shapes and 8 in vector_lanes


@pytest.mark.parametrize("name", ["u200", "u280", "tiny"])
def test_plan_lists_what_estimate_and_validate_synthesize(monkeypatch, tmp_path, name):
    """`make bitstream --jobs N` runs the plan side by side first; the serial estimate must
    then find every synthesis it asks for in the cache (none missing, none extra)."""
    asked = []

    def synth_part(part, cfg, workdir, *, log=print):
        asked.append((part, cfg))
        return {"part": part, "pe_rows": cfg.pe_rows, "pe_cols": cfg.pe_cols,
                "vector_lanes": cfg.vector_lanes, "cells": _fake_cells(part, cfg),
                "wall_s": 0.0}

    monkeypatch.setattr(xcup, "synth_part", synth_part)
    monkeypatch.setattr(xcup, "yosys_version", lambda: "Yosys test")
    cfg = preset(name)
    xcup.estimate(cfg, tmp_path, log=lambda m: None)
    assert asked == xcup.plan(cfg)
    if name != "tiny":
        asked.clear()
        mid = xcup.mid_config(cfg)
        xcup.validate(mid, tmp_path, log=lambda m: None)
        assert asked == xcup.plan(mid, validating=True)


def test_prefetch_submits_each_missing_synthesis_once(monkeypatch, tmp_path):
    import concurrent.futures as cf

    monkeypatch.setattr(xcup, "rtl_digest", lambda module="hw.top.accelerator": "0" * 16)
    jobs = xcup.plan(preset("u200"))
    cached = xcup._cache_path(*jobs[0], tmp_path)
    cached.parent.mkdir(parents=True)
    cached.write_text("{}")
    ran = []
    monkeypatch.setattr(xcup, "synth_part", lambda part, cfg, workdir: ran.append((part, cfg)))
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        futures = xcup.prefetch(jobs + jobs, tmp_path, pool=pool, log=lambda m: None)
        assert all(label.startswith("xcup ") for label in futures.values())
        cf.wait(futures)
    # the glue's engine and vector slices coincide with a 2 x 2 engine and a 2-lane vector one
    unique = {xcup._cache_path(*j, tmp_path): j for j in jobs[1:]}
    assert len(unique) < len(jobs) - 1
    assert len(futures) == len(unique) - (cached in unique)
    assert sorted(map(repr, ran)) == sorted(repr(j) for k, j in unique.items() if k != cached)


def test_a_slice_cache_key_follows_only_the_sources_of_its_part(monkeypatch, tmp_path):
    """An edit to the LayerNorm keeps the engine's slices, one to the softmax the vector unit's;
    the whole Accelerator's (the glue, the validation) follow every source."""
    engine, vector = xcup.rtl_sources("hw.top.engine_ops"), xcup.rtl_sources("hw.top.vector_ops")
    accel = xcup.rtl_sources()
    assert "hw/vector/softmax.py" in engine and "hw/vector/softmax.py" not in vector
    assert "hw/vector/layernorm.py" in vector and "hw/vector/layernorm.py" not in engine
    assert set(engine) | set(vector) <= set(accel)
    assert {"hw/top/accelerator.py", "hw/top/control.py"} <= set(accel) - set(engine) - set(vector)

    cfg = preset("u200")
    jobs = {part: (part, xcup.engine_config(cfg, 2, 2) if part == "engine" else
                   xcup.vector_config(cfg, 2) if part == "vector" else xcup.neutral(cfg))
            for part in ("engine", "vector", "accel")}
    edited: set[str] = set()
    monkeypatch.setattr(xcup, "rtl_digest", lambda module="hw.top.accelerator":
                        ("edited" if any(f in edited for f in xcup.rtl_sources(module))
                         else "before"))
    before = {part: xcup._cache_path(*job, tmp_path) for part, job in jobs.items()}
    edited.add("hw/vector/layernorm.py")
    after = {part: xcup._cache_path(*job, tmp_path) for part, job in jobs.items()}
    assert after["engine"] == before["engine"]
    assert after["vector"] != before["vector"] and after["accel"] != before["accel"]


def test_the_rtl_digest_follows_code_not_docstrings_or_comments(tmp_path):
    """An edited docstring or comment leaves a source's code (and so the digests and slice
    cache keys) as it was; an edited constant changes it."""
    src = ('"""A module."""\n\nWIDTH = 8  # bits\n\n\nclass Unit:\n    """A unit."""\n\n'
           '    def elaborate(self, platform):\n        """Its hardware."""\n'
           '        return WIDTH + 1\n')
    path = tmp_path / "unit.py"

    def code(text):
        path.write_text(text)
        return xcup.source_code(path)

    base = code(src)
    assert code(src.replace("A unit.", "A unit, documented at length.")) == base
    assert code(src.replace("Its hardware.", "Its RTL.").replace("# bits", "# bytes")) == base
    assert code(src.replace('"""A module."""\n', "")) == base
    assert code(src.replace("WIDTH + 1", "WIDTH + 2")) != base
    assert code(src.replace("return", "x = 'Its hardware.'\n        return")) != base


def test_bad_preset_name_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as e:
        xcup.main(["--preset", "u999"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown preset 'u999'" in err and "u200" in err and "u280" in err


@pytest.mark.parametrize("macs_per_dsp", [1, 2])
def test_engine_slice_maps_r_c_over_macs_per_dsp_dsp48e2(tmp_path, macs_per_dsp):
    cfg = xcup.neutral(preset("tiny"), pe_rows=2, pe_cols=4, macs_per_dsp=macs_per_dsp)
    logs = []
    rec = xcup.synth_part("spmm", cfg, tmp_path, log=logs.append)
    assert rec["pe_rows"] == 2 and rec["pe_cols"] == 4 and rec["cells"]["FDRE"] > 0
    # a second call is served from the cache
    assert xcup.synth_part("spmm", cfg, tmp_path, log=logs.append) == rec
    assert "cached" in logs[-1]
    assert rec["cells"].get("DSP48E2") == cfg.dsps == 8 // macs_per_dsp


def test_rescale_matches_the_accelerator_at_another_array_size(fake_yosys, tmp_path):
    """A sliced estimate re-evaluated at another R x C is the whole Accelerator's count there
    (the fake cells are exactly linear), its percentages of the part those estimate() gives;
    max_rows is the last R under 100 % of every class."""
    from types import SimpleNamespace

    est = xcup.estimate(preset("u200"), tmp_path, log=lambda m: None)
    for rows, cols in ((96, 128), (48, 64), (7, 3)):
        got = xcup.rescale(est, rows, cols)
        shape = SimpleNamespace(pe_rows=rows, pe_cols=cols, vector_lanes=64)
        whole = xcup.cell_classes(_fake_cells("accel", shape))
        assert got["utilisation"] == {k: round(v) for k, v in whole.items()}, (rows, cols)
        assert got["percent"]["DSP48E2"] == round(100 * whole["DSP48E2"] / 6840, 1)
    assert xcup.rescale(est, 96, 128)["percent"] == est["percent"]
    most = xcup.max_rows(est, 128)
    assert 0 < most < 96  # the fake engine puts 96 x 128 far over the part
    assert max(xcup.rescale(est, most, 128)["percent"].values()) <= 100
    assert max(xcup.rescale(est, most + 1, 128)["percent"].values()) > 100
    table = xcup.fit_report(est, [32], 128)
    assert f"{most} x 128" in table and "32 x 128" in table and "the most within 100 %" in table


def test_fitting_config_is_the_largest_array_the_config_rules_allow_within_the_part(
        fake_yosys, tmp_path):
    """The variant changes the rows (and ports, and name) only, fits by the same estimate,
    and every larger array that would fit is one the config rules refuse; a preset that fits
    has none."""
    cfg = preset("u200")
    est = xcup.estimate(cfg, tmp_path, log=lambda m: None)
    most = xcup.max_rows(est, 128)
    v = xcup.fitting_config(cfg, est)
    assert v is not None and 0 < v.pe_rows <= most < cfg.pe_rows
    assert v.name == f"u200-{v.pe_rows}x128" and v.port_rows >= cfg.port_rows
    assert v.replace(name="u200", pe_rows=96, weight_ports=cfg.weight_ports) == cfg
    assert max(xcup.rescale(est, v.pe_rows, 128)["percent"].values()) <= 100
    for rows in range(v.pe_rows + 1, most + 1):
        for ports in range(1, 5):
            with pytest.raises(ConfigError):
                cfg.replace(pe_rows=rows, weight_ports=ports)
    fits = {**est, "percent": dict.fromkeys(est["percent"], 50.0)}
    assert xcup.fitting_config(cfg, fits) is None
    with pytest.raises(ValueError, match="not a sliced xcup estimate"):
        xcup.fitting_config(cfg, {**est, "method": "routed"})


def test_rescale_refuses_what_it_cannot_rescale(fake_yosys, tmp_path):
    est = xcup.estimate(preset("u200"), tmp_path, log=lambda m: None)
    with pytest.raises(ValueError, match="at least 1 x 1, got 0 x 128"):
        xcup.rescale(est, 0, 128)
    for bad in ({"method": "full"}, [], {**est, "method": "routed"}):
        with pytest.raises(ValueError, match="not a sliced xcup estimate"):
            xcup.rescale(bad, 8, 8)


def test_fit_command_reads_a_summary_and_names_bad_input(fake_yosys, tmp_path, capsys):
    est = xcup.estimate(preset("u200"), tmp_path, log=lambda m: None)
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({**est, "preset": "u200"}))
    assert xcup.main(["--fit", str(path), "--rows", "16,32"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("u200 (xcu200") and "16 x 128" in out and "32 x 128" in out
    (tmp_path / "notjson.json").write_text("no")
    for argv, msg in ((["--fit", str(tmp_path / "missing.json")], "No such file"),
                      (["--fit", str(tmp_path / "notjson.json")], "not a JSON summary"),
                      (["--fit", str(path), "--rows", "a,b"], "expected comma-separated"),
                      (["--fit", str(path), "--cols", "-4"], "at least 1 x 1")):
        with pytest.raises(SystemExit) as e:
            xcup.main(argv)
        assert e.value.code == 2
        assert msg in capsys.readouterr().err, argv
