"""`make accuracy`: the table generator (on fake results) and the orchestrator (tiny model)."""

import json

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

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


def test_orchestrator_runs_every_case_on_a_tiny_model_and_resumes(tiny_base, tmp_path):
    recipe = {**RECIPE, "recovery_epochs": 1.0, "qat_epochs": 0.5, "lr": 1e-3}
    dirs = {"models_dir": tmp_path / "models", "results_dir": tmp_path / "results"}
    log = []
    results = run_all(recipe=recipe, base_factory=lambda: tiny_base, progress=log.append,
                      **dirs)
    assert list(results) == [c.name for c in cases()]
    for c in cases():
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
