"""`make accuracy`: the table generator (on fake results) and the orchestrator (tiny model)."""

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from sw.nm import pack, unpack
from sw.prune.accuracy import (
    BEGIN,
    END,
    RECIPE,
    cases,
    load_results,
    main,
    render_table,
    run_all,
    update_readme,
)
from sw.prune.data import rt_split
from sw.prune.experiment import Base, _minilm_path, load_minilm_classifier
from sw.prune.packed import PackedModelError, load_packed, save_packed
from sw.prune.sparsify import NMPlan, check_model, encoder_linears
from sw.ref.quant import quantize_weights


def fake(name, acc, **kw):
    kind = kw.pop("kind", "recipe")
    recipe = {} if kind.startswith("dense") else RECIPE
    return {"name": name, "accuracy": acc, "case": {"kind": kind, "recipe": recipe},
            "threads": 2, **kw}


def test_table_from_fake_results_and_readme_markers(tmp_path):
    results = {
        "minilm-rt-dense-fp32": fake("minilm-rt-dense-fp32", 0.846, kind="dense", seed=0,
                                     recovery_wall_s=294.0, split={"test": 2000}),
        "minilm-rt-dense-int8": fake("minilm-rt-dense-int8", 0.849, kind="dense-int8",
                                     int8_method="ptq"),
        "minilm-rt-2of4-fp32": fake("minilm-rt-2of4-fp32", 0.8405, recovery_wall_s=1500.0),
        "minilm-rt-2of4-int8": fake("minilm-rt-2of4-int8", 0.8375, kind="qat", int8_method="qat",
                                    qat_wall_s=120.0),
        "minilm-rt-2of8-idp-fp32": fake("minilm-rt-2of8-idp-fp32", 0.7375, kind="idp"),
        "minilm-rt-1of8-idp-fp32": {"name": "from an older run, not by the orchestrator",
                                    "accuracy": 0.5},
    }
    for name, r in results.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(r))
    (tmp_path / "other-model.json").write_text("{}")  # another prefix: ignored
    loaded = load_results(tmp_path)
    assert set(loaded) == set(results)
    table = render_table(loaded)
    assert "| `minilm-rt-2of4-fp32` / `-int8` | 2:4 | 84.05 % | 83.75 % (QAT) | -0.85 | " \
           "25.0 min + 2.0 min | 2 |" in table
    assert "| `minilm-rt-dense-fp32` / `-int8` | dense | 84.60 % | 84.90 % (PTQ) | +0.30 |" \
        in table
    assert "| `minilm-rt-1of4-fp32` / `-int8` | 1:4 | - | - | - | - | - |" in table
    assert "| 2:8 | 73.75 % | - |" in table
    assert "| 1:8 | - | - |" in table  # results without their case are not the recipe's
    assert "Recipe: gradual" in table and "test split of 2000 sentences" in table
    assert "int8: 0.25 epoch(s) of QAT at lr 1e-05" in table
    # the rows go from dense to sparse
    assert table.index("| 4:8 |") < table.index("| 2:4 |") < table.index("| 1:8 |")

    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{BEGIN}\nold table\n{END}\nafter\n")
    assert update_readme(readme, table)
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n" + BEGIN + "\n| ") or \
        text.startswith("# title\n\nbefore\n" + BEGIN + "\nRecipe:")
    assert "old table" not in text and text.endswith(f"{END}\nafter\n")
    assert table.strip() in text
    assert not update_readme(readme, table)  # idempotent
    readme.write_text("no markers here\n")
    with pytest.raises(ValueError, match="needs exactly one <!-- accuracy:begin -->"):
        update_readme(readme, table)
    (tmp_path / "minilm-rt-broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="malformed result JSON"):
        load_results(tmp_path)


def test_case_list_and_cli_errors(tmp_path, capsys):
    names = [c.name for c in cases()]
    assert names[:6] == ["minilm-rt-dense-fp32", "minilm-rt-dense-int8", "minilm-rt-2of4-fp32",
                         "minilm-rt-2of4-int8", "minilm-rt-1of4-fp32", "minilm-rt-1of4-int8"]
    for nm in ("4of8", "2of4", "2of8", "1of4", "1of8"):
        assert f"minilm-rt-{nm}-fp32" in names and f"minilm-rt-{nm}-int8" in names
    by_name = {c.name: c for c in cases()}
    assert by_name["minilm-rt-1of8-idp-fp32"].source == "minilm-rt-2of8-idp-fp32"
    assert by_name["minilm-rt-2of8-idp-fp32"].source == "minilm-rt-4of8-fp32"
    assert main(["--only", "minilm-rt-3of4-fp32", "--results", str(tmp_path)]) == 2
    assert "unknown case(s) ['minilm-rt-3of4-fp32']" in capsys.readouterr().err
    assert main(["--table", "--results", str(tmp_path), "--readme",
                 str(tmp_path / "missing.md")]) == 2
    assert "missing.md: no such file" in capsys.readouterr().err
    plain = tmp_path / "plain.md"
    plain.write_text("# no markers\n")
    # refused before any case runs (nothing is trained or written)
    assert main(["--only", "minilm-rt-dense-fp32", "--readme", str(plain), "--results",
                 str(tmp_path / "r"), "--models", str(tmp_path / "m")]) == 2
    assert "needs exactly one <!-- accuracy:begin -->" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and not (tmp_path / "m").exists()


#: the integer encoder's names for a layer's Linears -> the Hugging Face module paths
HF_PATHS = {"q": "attention.self.query", "k": "attention.self.key",
            "v": "attention.self.value", "ao": "attention.output.dense",
            "inter": "intermediate.dense", "out": "output.dense"}


def spy_int8(monkeypatch) -> list:
    """Record ``(accuracy, encoder)`` of every int8 evaluation the runs make."""
    import sw.prune.int8eval as int8eval

    calls, real = [], int8eval.int8_evaluate

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(out)
        return out
    monkeypatch.setattr(int8eval, "int8_evaluate", spy)
    return calls


def assert_packed_is(model_dir, result, acc8, encoder, base):
    """``model_dir/packed.safetensors`` loads, declares the result's N:M for every encoder
    Linear, and holds exactly ``encoder``'s integer parameters."""
    stored, info = load_packed(model_dir / "packed.safetensors")
    model, _ = load_minilm_classifier(model_dir)
    assert set(stored) == set(encoder_linears(model))
    for i, layer in enumerate(encoder.layers):
        for key, path in HF_PATHS.items():
            name, want, got = f"layer.{i}.{path}", layer.linears[key], stored[f"layer.{i}.{path}"]
            assert f"{got.n}:{got.m}" == result["layers"][name], name
            assert np.array_equal(unpack(got.weight), unpack(want.weight)), name
            for a, b in ((got.w_scale, want.w_scale), (got.in_scale, want.in_scale),
                         (got.out_scale, want.out_scale), (got.requant.m, want.requant.m),
                         (got.requant.s, want.requant.s), (got.requant.bias, want.requant.bias)):
                assert np.array_equal(a, b), name
            assert got.requant.out_bits == want.requant.out_bits, name
    assert info["accuracy"]["int8"] == result["int8_accuracy"] == acc8
    assert info["source_model"] == base.model_name and info["layers"] == result["layers"]
    assert info["calibration"]["sentences"] == len(base.calib)
    assert info["calibration"]["seq"] == base.seq
    assert info["calibration"]["split_seed"] == base.seed


@pytest.fixture(scope="module")
def tiny_base():
    tok = AutoTokenizer.from_pretrained(_minilm_path())
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(BertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=2, max_position_embeddings=32)).eval()
    train, test, record = rt_split(seed=0)
    return Base(teacher=teacher, tok=tok, dense={"accuracy": 0.5}, train=train[:64],
                test=test[:16], record=record, model_name="tiny-bert", prefix="minilm-rt",
                seq=16, seed=0)


def test_orchestrator_runs_every_case_on_a_tiny_model_and_resumes(tiny_base, tmp_path,
                                                                  monkeypatch):
    recipe = {**RECIPE, "recovery_epochs": 1.0, "qat_epochs": 0.5, "lr": 1e-3}
    dirs = {"models_dir": tmp_path / "models", "results_dir": tmp_path / "results"}
    log = []
    calls = spy_int8(monkeypatch)
    results = run_all(recipe=recipe, base_factory=lambda: tiny_base, progress=log.append,
                      **dirs)
    assert list(results) == [c.name for c in cases()]
    # one int8 evaluation per int8 case, in case order: its encoder is the one packed
    int8_cases = [c for c in cases() if c.precision == "int8"]
    assert len(calls) == len(int8_cases)
    for c, (acc8, encoder) in zip(int8_cases, calls, strict=True):
        assert_packed_is(dirs["models_dir"] / c.name, results[c.name], acc8, encoder,
                         tiny_base)
    for c in cases():
        has_packed = (dirs["models_dir"] / c.name / "packed.safetensors").is_file()
        assert has_packed == (c.precision == "int8"), c.name
        r = json.loads((dirs["results_dir"] / f"{c.name}.json").read_text())
        assert r["name"] == c.name and r["case"]["kind"] == c.kind and r["seed"] == 0
        assert 0 <= r["accuracy"] <= 1 and r["dense_accuracy"] == 0.5
        model, _ = load_minilm_classifier(dirs["models_dir"] / c.name)
        if c.nm:
            assert r["layers"]["layer.0.output.dense"] == c.nm
            check_model(model, NMPlan.uniform(model, c.nm))
        if c.precision == "int8":
            assert r["int8_accuracy"] == r["accuracy"]
        if c.kind == "qat":  # trained int8 weights, exactly on their grid
            assert r["int8_method"] == "qat" and r["qat"]["steps"] == 1
            for lin in encoder_linears(model).values():
                q, s = quantize_weights(lin.weight.detach())
                assert torch.equal((q.double() * s[:, None]).float(), lin.weight.detach())

    # the IDP family nests: 1:8 inside 2:8 inside 4:8
    def nonzeros(name):
        model, _ = load_minilm_classifier(dirs["models_dir"] / name)
        return {k: v.weight.detach() != 0 for k, v in encoder_linears(model).items()}
    m48, m28, m18 = (nonzeros(f"minilm-rt-{t}") for t in ("4of8-fp32", "2of8-idp-fp32",
                                                         "1of8-idp-fp32"))
    for k in m48:
        assert not (m28[k] & ~m48[k]).any() and not (m18[k] & ~m28[k]).any()

    # a rerun skips everything without building the base
    def no_base():
        raise AssertionError("nothing should run")
    log.clear()
    again = run_all(recipe=recipe, base_factory=no_base, progress=log.append, **dirs)
    assert again == results and all("skipped" in line for line in log)
    # an int8 case without its packed file (an earlier run's) is redone
    (dirs["models_dir"] / "minilm-rt-dense-int8" / "packed.safetensors").unlink()
    log.clear()
    run_all(recipe=recipe, only=["minilm-rt-dense-fp32", "minilm-rt-dense-int8"],
            base_factory=lambda: tiny_base, progress=log.append, **dirs)
    assert "skipped" in log[0] and "running" in log[1]
    assert (dirs["models_dir"] / "minilm-rt-dense-int8" / "packed.safetensors").is_file()
    # changed QAT settings rerun the int8 case only; a changed recovery recipe the fp32 case
    log.clear()
    run_all(recipe={**recipe, "qat_lr": 2e-5}, only=["minilm-rt-2of4-fp32", "minilm-rt-2of4-int8"],
            base_factory=lambda: tiny_base, progress=log.append, **dirs)
    assert "skipped" in log[0] and "running" in log[1]
    log.clear()
    run_all(recipe={**recipe, "lr": 2e-3}, only=["minilm-rt-2of4-fp32"],
            base_factory=lambda: tiny_base, progress=log.append, **dirs)
    assert "running" in log[0]


def test_gradual_from_a_parent_nests_inside_its_masks(tiny_base, tmp_path):
    from sw.prune.experiment import prune_run

    dirs = {"models_dir": tmp_path / "models", "results_dir": tmp_path / "results",
            "base": tiny_base, "progress": lambda *_: None}
    prune_run(nm="2:4", method="oneshot", recovery_epochs=1.0, lr=1e-3, out="p-2of4", **dirs)
    r = prune_run(nm="1:4", method="gradual", parent=str(tmp_path / "models" / "p-2of4"),
                  recovery_epochs=2.0, lr=1e-3, kd=True, out="c-1of4", **dirs)
    assert r["parent"].endswith("p-2of4") and r["recovery"]["steps"] == 4
    parent, _ = load_minilm_classifier(tmp_path / "models" / "p-2of4")
    child, _ = load_minilm_classifier(tmp_path / "models" / "c-1of4")
    check_model(child, NMPlan.uniform(child, "1:4"))
    p, c = encoder_linears(parent), encoder_linears(child)
    for name in p:
        assert not ((c[name].weight != 0) & (p[name].weight == 0)).any(), name


def test_prune_int8_leaves_a_packed_file_that_eval_checks(tiny_base, tmp_path, monkeypatch,
                                                          capsys):
    from sw.cli import main as nmaccel
    from sw.prune.experiment import eval_run, prune_run

    calls = spy_int8(monkeypatch)
    dirs = {"models_dir": tmp_path / "models", "results_dir": tmp_path / "results",
            "base": tiny_base, "progress": lambda *_: None}
    r = prune_run(nm="1:8", method="oneshot", recovery_epochs=0.5, lr=1e-3, int8=True,
                  out="p-1of8-int8", **dirs)
    d = tmp_path / "models" / "p-1of8-int8"
    assert len(calls) == 1 and set(r["layers"].values()) == {"1:8"}
    assert_packed_is(d, r, *calls[0], tiny_base)

    # eval recalibrates as the file records, finds the same layers, and reproduces the
    # run's int8 accuracy on the same sentences
    data = tmp_path / "test.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows([e.text, e.label] for e in tiny_base.test)
    quiet = {"data": str(data), "seq": tiny_base.seq, "int8": True, "progress": lambda *_: None}
    ev = eval_run(d, **quiet)
    assert ev["accuracy"] == r["int8_accuracy"] and ev["packed"] == str(d / "packed.safetensors")

    good = (d / "packed.safetensors").read_bytes()
    layers, info = load_packed(d / "packed.safetensors")

    def eval_error(*argv):
        assert nmaccel(["eval", str(d), "--int8", "--data", str(data), "--seq",
                     str(tiny_base.seq), *argv]) == 2
        return capsys.readouterr().err

    (d / "packed.safetensors").write_bytes(good[: len(good) // 2])
    assert "packed.safetensors: not a readable safetensors file" in eval_error()
    name = "layer.0.output.dense"
    bias = layers[name].requant.bias.copy()
    bias[3] += 1
    tampered = dict(layers)
    tampered[name] = dataclasses.replace(layers[name], requant=dataclasses.replace(
        layers[name].requant, bias=bias))
    save_packed(d / "packed.safetensors", tampered, info)
    with pytest.raises(PackedModelError, match=f"layer {name}: requantizer bias mismatch"):
        eval_run(d, **quiet)
    save_packed(d / "packed.safetensors", {k: v for k, v in layers.items() if k != name}, info)
    with pytest.raises(PackedModelError, match=rf"lacks layer\(s\) \['{name}'\]"):
        eval_run(d, **quiet)
    dense = dict(layers)
    dense[name] = dataclasses.replace(layers[name], weight=pack(unpack(layers[name].weight), 8, 8))
    save_packed(d / "packed.safetensors", dense, info)
    assert f"layer {name} is packed 8:8, the model declares 1:8" in eval_error()

    # without the file, eval calibrates as before (the built-in split, --seq)
    (d / "packed.safetensors").unlink()
    assert eval_run(d, **quiet)["packed"] is None
