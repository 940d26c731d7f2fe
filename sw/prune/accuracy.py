"""``make accuracy``: the whole accuracy table of N:M MiniLM on Rotten Tomatoes, resumable.

``python -m sw.prune.accuracy`` runs every case of :func:`cases` in order, one after another,
and leaves for each a model directory ``build/models/<name>`` (loadable by ``nmaccel eval
PATH [--int8]`` and ``nmaccel run --model PATH``) and ``build/accuracy/<name>.json`` (dense
accuracy, accuracy, N:M per layer, method and recipe, wall times, threads, seed). The
directory of an ``-int8`` case also holds ``packed.safetensors`` (:mod:`sw.prune.packed`:
the int8 N:M Linears of the encoder that gave its accuracy, with source model, per-layer N:M,
calibration and accuracy as metadata). A case whose JSON already exists with the same
specification (recipe, N:M, source, seed) is skipped (an ``-int8`` case only when its packed
file is there too), so an interrupted run resumes where it stopped. At the end the markdown
table made from the JSONs (:func:`render_table`) replaces the text between
``<!-- accuracy:begin -->`` and ``<!-- accuracy:end -->`` in README.md.

The cases:

* ``minilm-rt-dense-fp32`` / ``-int8``: the fine-tuned dense baseline, and its post-training
  int8 (the integer encoder);
* ``minilm-rt-<N>of<M>-fp32`` for 4:8, 2:4, 2:8, 1:4, 1:8: pruned from the dense model with
  :data:`RECIPE` (gradual N:M schedule with distillation from the dense model), and
  ``-int8``: that model after :data:`RECIPE`'s quantization-aware fine-tuning, measured
  through the bit-exact integer encoder;
* the IDP family: ``minilm-rt-2of8-idp-fp32`` from ``minilm-rt-4of8-fp32`` and
  ``minilm-rt-1of8-idp-fp32`` from it (masks nested in the parent's, one-shot inside them,
  then the recipe's recovery), next to ``minilm-rt-2of8-oneshot-fp32`` and
  ``minilm-rt-1of8-oneshot-fp32``: one-shot from the dense model with the same recovery.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["RECIPE", "NMS", "Case", "cases", "run_all", "render_table", "update_readme",
           "BEGIN", "END", "main"]

BEGIN, END = "<!-- accuracy:begin -->", "<!-- accuracy:end -->"
NMS = ("4:8", "2:4", "2:8", "1:4", "1:8")
#: the recovery recipe of every pruned case (see the README for how it was chosen: lr 5e-4
#: is what 1:4 needed; 1e-4 left it at 77.75 % int8)
RECIPE = {"method": "gradual", "recovery_epochs": 3.0, "kd": True, "kd_hidden": 1.0,
          "lr": 5e-4, "prune_end": 0.75, "bucket": True, "qat_epochs": 0.25, "qat_lr": 1e-5}


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # dense, dense-int8, recipe, qat, idp, oneshot
    nm: str | None = None
    source: str | None = None  # the case this one starts from

    @property
    def precision(self) -> str:
        return self.name.rsplit("-", 1)[1]


def _tag(nm: str) -> str:
    return nm.replace(":", "of")


def cases(prefix: str = "minilm-rt", nms=NMS) -> list[Case]:
    """Every case in run order: the issue's targets (2:4, 1:4) right after the baseline."""
    order = sorted(nms, key=lambda nm: (nm not in ("2:4", "1:4"), nm not in ("2:4",)))
    out = [Case(f"{prefix}-dense-fp32", "dense"),
           Case(f"{prefix}-dense-int8", "dense-int8", source=f"{prefix}-dense-fp32")]
    for nm in order:
        fp32 = f"{prefix}-{_tag(nm)}-fp32"
        out += [Case(fp32, "recipe", nm), Case(f"{prefix}-{_tag(nm)}-int8", "qat", nm, fp32)]
    if {"4:8", "2:8", "1:8"} <= set(nms):
        out += [Case(f"{prefix}-2of8-idp-fp32", "idp", "2:8", f"{prefix}-4of8-fp32"),
                Case(f"{prefix}-1of8-idp-fp32", "idp", "1:8", f"{prefix}-2of8-idp-fp32"),
                Case(f"{prefix}-2of8-oneshot-fp32", "oneshot", "2:8"),
                Case(f"{prefix}-1of8-oneshot-fp32", "oneshot", "1:8")]
    return out


_QAT_KEYS = ("qat_epochs", "qat_lr")


def _spec(case: Case, recipe: dict, seed: int) -> dict:
    """What identifies a case's result: equal specs mean the JSON can be reused. An fp32 case
    does not depend on the QAT settings; a dense case on none of the recipe."""
    if case.kind in ("dense", "dense-int8"):
        used = {}
    elif case.kind == "qat":
        used = recipe
    else:
        used = {k: v for k, v in recipe.items() if k not in _QAT_KEYS}
    return _jsonable({**asdict(case), "recipe": used, "seed": seed})


def _done(case: Case, spec: dict, models_dir: Path, results_dir: Path) -> dict | None:
    from .packed import PACKED_FILE

    path = results_dir / f"{case.name}.json"
    if not path.is_file() or not (models_dir / case.name / "config.json").is_file():
        return None
    if case.precision == "int8" and not (models_dir / case.name / PACKED_FILE).is_file():
        return None  # from before int8 results were packed: redo it
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return result if result.get("case") == spec else None


def _jsonable(obj):
    return json.loads(json.dumps(obj))


def _run_case(case: Case, recipe: dict, base, models_dir: Path, results_dir: Path, spec: dict,
              progress) -> dict:
    from .experiment import prune_run, qat_run

    extra = {"case": spec}
    common = {"base": base, "models_dir": models_dir, "results_dir": results_dir,
              "extra": extra, "progress": progress}
    recovery = {k: recipe[k] for k in ("recovery_epochs", "kd", "kd_hidden", "lr", "bucket")}
    if case.kind == "dense":
        return _dense_case(case, base, models_dir, results_dir, extra, progress)
    if case.kind == "dense-int8":
        return qat_run(source=str(models_dir / case.source), nm="4:4", qat_epochs=0,
                       out=case.name, **common)
    if case.kind == "recipe":
        return prune_run(nm=case.nm, method=recipe["method"], prune_end=recipe["prune_end"],
                         out=case.name, **recovery, **common)
    if case.kind == "qat":
        return qat_run(source=str(models_dir / case.source), nm=case.nm,
                       qat_epochs=recipe["qat_epochs"], qat_lr=recipe["qat_lr"],
                       kd=recipe["kd"], kd_hidden=recipe["kd_hidden"], bucket=recipe["bucket"],
                       out=case.name, **common)
    if case.kind in ("idp", "oneshot"):
        parent = str(models_dir / case.source) if case.kind == "idp" else None
        return prune_run(nm=case.nm, method="oneshot", parent=parent, out=case.name,
                         **recovery, **common)
    raise ValueError(f"unknown case kind {case.kind!r}")


def _dense_case(case, base, models_dir, results_dir, extra, progress) -> dict:
    from .experiment import _save

    t0 = time.perf_counter()
    path = models_dir / case.name
    result = {"name": case.name, "model": base.model_name, "task": base.task, "nm": None,
              "method": "dense", "precision": "fp32", "dense_accuracy": base.dense["accuracy"],
              "accuracy": base.dense["accuracy"], "fp32_accuracy": base.dense["accuracy"],
              "train": base.dense.get("train"), "split": base.record, "seq": base.seq,
              "seed": base.seed, "recovery_wall_s": (base.dense.get("train") or {}).get("wall_s"),
              "threads": None, "layers": None, **extra}
    base.teacher.eval()
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    _save(base.teacher, base, path, result, results_dir)
    progress(f"{case.name}: accuracy {result['accuracy']:.4f} (the fine-tuned dense model)")
    return result


def run_all(*, recipe: dict | None = None, only=None, seed: int = 0, base_factory=None,
            models_dir="build/models", results_dir="build/accuracy", case_list=None,
            progress=print) -> dict[str, dict]:
    """Run (or skip, when already done) every case; returns ``{name: result}``.

    ``base_factory()`` returns the :class:`~sw.prune.experiment.Base` (default: the dense
    MiniLM with ``seed``), called once, only when a case has to run."""
    recipe = dict(RECIPE if recipe is None else recipe)
    models_dir, results_dir = Path(models_dir), Path(results_dir)
    todo = case_list if case_list is not None else cases()
    names = [c.name for c in todo]
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"unknown case(s) {unknown}; the cases are: {', '.join(names)}")
        todo = [c for c in todo if c.name in only]
    if base_factory is None:
        from .experiment import minilm_base

        def base_factory():
            return minilm_base(seed=seed, progress=progress)
    base, results, t_all = None, {}, time.perf_counter()
    for i, case in enumerate(todo, 1):
        head = f"[{i}/{len(todo)}] {case.name}"
        spec = _spec(case, recipe, seed)
        done = _done(case, spec, models_dir, results_dir)
        if done is not None:
            results[case.name] = done
            progress(f"{head}: done already ({_pct(done.get('accuracy'))}), skipped")
            continue
        if case.source and not (models_dir / case.source / "config.json").is_file():
            raise ValueError(f"{case.name} starts from {case.source}, which is not in "
                             f"{models_dir}: run that case first")
        if base is None:
            base = base_factory()
            if base.seed != seed:
                raise ValueError(f"the base has seed {base.seed}, the run {seed}")
        progress(f"{head}: running ({case.kind}{'' if not case.nm else ' ' + case.nm}"
                 f"{'' if not case.source else ', from ' + case.source}); "
                 f"{time.perf_counter() - t_all:.0f} s so far")
        t0 = time.perf_counter()
        results[case.name] = _run_case(case, recipe, base, models_dir, results_dir, spec,
                                       progress)
        progress(f"{head}: {_pct(results[case.name].get('accuracy'))} in "
                 f"{time.perf_counter() - t0:.0f} s")
    return results


def _pct(acc) -> str:
    return "-" if acc is None else f"{100 * acc:.2f} %"


def _minutes(s) -> str:
    return "-" if s is None else f"{s / 60:.1f} min"


def load_results(results_dir="build/accuracy", prefix: str = "minilm-rt") -> dict[str, dict]:
    """Every ``<prefix>-*.json`` result in ``results_dir`` by name."""
    out = {}
    for path in sorted(Path(results_dir).glob(f"{prefix}-*.json")):
        try:
            out[path.stem] = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: malformed result JSON ({e})") from None
    return out


def render_table(results: dict[str, dict], prefix: str = "minilm-rt") -> str:
    """The markdown accuracy tables made from result JSONs. Only results this orchestrator
    wrote count (they carry their ``case``); missing cases show ``-``."""
    results = {k: v for k, v in results.items() if isinstance(v.get("case"), dict)}
    dense = results.get(f"{prefix}-dense-fp32", {})
    dense_acc = dense.get("accuracy")

    def recipe_of(kind):
        return next((r["case"]["recipe"] for r in results.values()
                     if r["case"].get("kind") == kind and r["case"].get("recipe")), None)

    def delta(acc):
        if acc is None or dense_acc is None:
            return "-"
        return f"{100 * (acc - dense_acc):+.2f}"

    def how(r):
        return f" ({r['int8_method'].upper()})" if r.get("int8_method") else ""

    lines = ["| model | N:M | fp32 | int8 | int8 vs dense fp32 (points) | recovery (+ QAT) "
             "| threads |", "|---|---|---|---|---|---|---|"]
    d8 = results.get(f"{prefix}-dense-int8", {})
    lines.append(f"| `{prefix}-dense-fp32` / `-int8` | dense | {_pct(dense_acc)} | "
                 f"{_pct(d8.get('accuracy'))}{how(d8)} | {delta(d8.get('accuracy'))} | "
                 f"{_minutes(dense.get('recovery_wall_s'))} (fine-tuning) | "
                 f"{d8.get('threads') or '-'} |")
    for nm in sorted(NMS, key=lambda nm: -int(nm.split(":")[0]) / int(nm.split(":")[1])):
        f32 = results.get(f"{prefix}-{_tag(nm)}-fp32", {})
        i8 = results.get(f"{prefix}-{_tag(nm)}-int8", {})
        wall = f"{_minutes(f32.get('recovery_wall_s'))}"
        if i8.get("qat_wall_s") is not None:
            wall += f" + {_minutes(i8['qat_wall_s'])}"
        lines.append(f"| `{prefix}-{_tag(nm)}-fp32` / `-int8` | {nm} | "
                     f"{_pct(f32.get('accuracy'))} | {_pct(i8.get('accuracy'))}{how(i8)} | "
                     f"{delta(i8.get('accuracy'))} | {wall} | {f32.get('threads') or '-'} |")
    recipe, qat = recipe_of("recipe"), recipe_of("qat")
    split = next((r["split"] for r in results.values() if r.get("split")), {})
    seed = next((r["seed"] for r in results.values() if r.get("seed") is not None), "-")
    head = []
    if recipe:
        head = [f"Recipe: {_describe(recipe, qat)}; seed {seed}, test split of "
                f"{split.get('test', '-')} sentences.", ""]
    idp = ["", "IDP family (each member from its parent, masks nested, one-shot inside them, "
           "then the same recovery) against one-shot from the dense model with the same "
           "recovery (fp32):", "",
           "| N:M | family member (from its parent) | one-shot from dense |", "|---|---|---|",
           f"| 4:8 | {_pct(results.get(f'{prefix}-4of8-fp32', {}).get('accuracy'))} (the root: "
           f"the recipe's 4:8) | - |"]
    for nm in ("2:8", "1:8"):
        a = results.get(f"{prefix}-{_tag(nm)}-idp-fp32", {}).get("accuracy")
        b = results.get(f"{prefix}-{_tag(nm)}-oneshot-fp32", {}).get("accuracy")
        idp.append(f"| {nm} | {_pct(a)} | {_pct(b)} |")
    return "\n".join(head + lines + idp) + "\n"


def _describe(r: dict, qat: dict | None = None) -> str:
    text = f"{r['method']}"
    if r.get("method") == "gradual":
        text += f" (target reached at {r['prune_end']:g} of the steps)"
    text += f", {r['recovery_epochs']:g} recovery epochs at lr {r['lr']:g}"
    if r.get("kd"):
        text += f", distillation from the dense model (hidden-state weight {r['kd_hidden']:g})"
    if r.get("bucket"):
        text += ", length-bucketed batches"
    if qat and qat.get("qat_epochs"):
        text += f"; int8: {qat['qat_epochs']:g} epoch(s) of QAT at lr {qat['qat_lr']:g}"
    elif qat is not None:
        text += "; int8: post-training"
    return text


def _markers_ok(path: Path) -> str:
    if not path.is_file():
        raise ValueError(f"{path}: no such file (the table goes between {BEGIN} and {END})")
    text = path.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{path} needs exactly one {BEGIN} followed by one {END}")
    return text


def update_readme(readme, table: str) -> bool:
    """Replace the text between the markers in ``readme``; returns whether it changed."""
    path = Path(readme)
    text = _markers_ok(path)
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    new = f"{head}{BEGIN}\n{table.rstrip()}\n{END}{tail}"
    if new == text:
        return False
    path.write_text(new)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sw.prune.accuracy",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these cases")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--table", action="store_true",
                        help="only regenerate the table from the existing JSONs")
    parser.add_argument("--readme", default="README.md", help="file with the table markers")
    parser.add_argument("--no-readme", action="store_true", help="print the table instead")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--models", default="build/models")
    parser.add_argument("--results", default="build/accuracy")
    args = parser.parse_args(argv)
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise ValueError(f"--threads must be >= 1, got {args.threads}")
            import torch

            torch.set_num_threads(args.threads)
        if args.list:
            for c in cases():
                print(f"{c.name:32s} {c.kind:10s} {c.nm or '':4s} {c.source or ''}")
            return 0
        names = [c.name for c in cases()]
        unknown = sorted(set(args.only or ()) - set(names))
        if unknown:
            raise ValueError(f"unknown case(s) {unknown}; the cases are: {', '.join(names)}")
        if not args.no_readme:
            _markers_ok(Path(args.readme))  # before hours of training, not after
        if not args.table:
            run_all(only=args.only, models_dir=args.models, results_dir=args.results)
        table = render_table(load_results(args.results))
        if args.no_readme:
            print(table)
        else:
            changed = update_readme(args.readme, table)
            print(f"{args.readme}: accuracy table {'updated' if changed else 'unchanged'}")
    except (ValueError, RuntimeError, OSError) as e:
        print(f"accuracy: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
