"""`make bitstream` / `nmaccel synth`: builds, their summaries and the README table.

Each build writes ``bitstreams/<preset>-<target>/summary.json`` (config, tool versions,
utilisation, Fmax where the tool gives one, the bitstream and its sha256, wall time); tool
work directories live under ``build/bitstreams/``. Targets:

* ``ecp5``: a real bitstream of the self-test board top (:mod:`bitstreams.ecp5`);
* ``xcup``: UltraScale+ utilisation, a Yosys estimate (:mod:`bitstreams.xcup`).

``python -m bitstreams.build --table README.md`` regenerates the README's table from the
summaries present (between the ``bitstreams:begin`` / ``bitstreams:end`` markers).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

from hw.config import PRESETS, preset

__all__ = ["synth", "table", "update_readme", "DEFAULT_BUILDS", "BOARD_CLOCK_MHZ", "main"]

TARGETS = ("ecp5", "xcup")
#: What `make bitstream` builds.
DEFAULT_BUILDS = (("ecp5", "ecp5"), ("u200", "xcup"), ("u280", "xcup"))
#: The PLL clock a preset's ECP5 bitstream runs at unless ``--clock-mhz`` says otherwise: the
#: board must run at a clock the routed design meets (the EHXPLLL makes multiples of 12.5 MHz
#: from the ULX3S's 25 MHz), while the summary reports nextpnr's Fmax against the preset's own
#: ``clock_mhz`` target separately.
BOARD_CLOCK_MHZ = {"ecp5": 25.0}
OUT_ROOT = Path("bitstreams")
WORK_ROOT = Path("build/bitstreams")
BEGIN, END = "<!-- bitstreams:begin -->", "<!-- bitstreams:end -->"


def synth(name: str, target: str, *, out_root: Path = OUT_ROOT, work_root: Path = WORK_ROOT,
          clock_mhz: float | None = None, log=print) -> dict:
    """Build ``name`` for ``target``; write and return its summary (the file already there
    is kept, and returned, when only its ``wall_s`` would change)."""
    from sw import checks

    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {list(TARGETS)}")
    if clock_mhz is not None:  # before the minutes of synthesis
        checks.finite(clock_mhz, "--clock-mhz", strict=True)
        if target != "ecp5":
            raise ValueError(f"--clock-mhz {clock_mhz:g}: the ECP5 bitstream's PLL clock; the "
                             f"{target} estimate has no clock (its projections assume one)")
    cfg = preset(name)
    key = f"{name}-{target}"
    out_dir, work_dir = Path(out_root) / key, Path(work_root) / key
    started = time.monotonic()
    log(f"== {key}")
    if target == "ecp5":
        from bitstreams.ecp5 import build

        summary = build(cfg, out_dir, work_dir, clock_mhz=clock_mhz or BOARD_CLOCK_MHZ.get(name),
                        log=log)
    else:
        from bitstreams.xcup import estimate, mid_config, validate

        cache = Path(work_root) / "xcup"  # one slice cache for every preset
        # the slice model checked against a whole synthesis of the 16 x 16, 8-lane variant
        check = validate(mid_config(cfg), cache, log=log)
        summary = {"preset": name, "target": "xcup", **estimate(cfg, cache, log=log),
                   "validation": {"config": check["config"]["name"], "ok": check["ok"],
                                  "tolerance": check["tolerance"],
                                  "rel_error": {k: v["rel_error"]
                                                for k, v in check["total"].items()}},
                   "config": cfg.to_dict()}
    summary["wall_s"] = round(time.monotonic() - started, 1)
    path = out_dir / "summary.json"
    synth_s = (f"; its syntheses took {summary['synth_s']:.0f} s when they ran"
               if "synth_s" in summary else "")
    if _same_but_wall(path, summary):  # all from the caches: the committed file stays as is
        log(f"   {path} unchanged ({summary['wall_s']:.0f} s{synth_s})")
        return json.loads(path.read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    log(f"   wrote {path} ({summary['wall_s']:.0f} s{synth_s})")
    return summary


def _same_but_wall(path: Path, summary: dict) -> bool:
    """Whether the summary at ``path`` says everything ``summary`` says but its ``wall_s``."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    def text(d: dict) -> str:  # (as JSON writes it: 1 and 1.0 differ, tuples are lists)
        return json.dumps({k: v for k, v in d.items() if k != "wall_s"}, sort_keys=True)

    return isinstance(old, dict) and text(old) == text(summary)


def _fmt(n) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def table(out_root: Path = OUT_ROOT) -> str:
    """A Markdown table of every ``summary.json`` under ``out_root``."""
    rows = ["| preset | target | logic | FF | DSP | block RAM | Fmax | source |",
            "|---|---|---|---|---|---|---|---|"]
    for path in sorted(Path(out_root).glob("*/summary.json")):
        s = json.loads(path.read_text())
        if s["target"] == "ecp5":
            u = {k: v["used"] for k, v in s["utilisation"].items()}
            cap = {k: v["available"] for k, v in s["utilisation"].items()}
            logic = f"{_fmt(u.get('TRELLIS_COMB', 0))} LUT4 / {_fmt(cap.get('TRELLIS_COMB', 0))}"
            ff = f"{_fmt(u.get('TRELLIS_FF', 0))}"
            dsp = f"{u.get('MULT18X18D', 0)} MULT18X18D / {cap.get('MULT18X18D', 0)}"
            ram = f"{u.get('DP16KD', 0)} DP16KD / {cap.get('DP16KD', 0)}"
            verdict = "meets" if s["meets_clock"] else "misses"
            fmax = f"{s['fmax_mhz']:.1f} MHz ({verdict} {s['clock_mhz']:g})"
            source = "nextpnr (placed and routed)"
        else:
            u, cap = s["utilisation"], s.get("part_capacity", {})

            def of(k, u=u, cap=cap):
                return f"{_fmt(u.get(k, 0))}" + (f" / {_fmt(cap[k])}" if k in cap else "")
            logic, ff = f"{of('LUT')} LUT6", of("FF")
            dsp = f"{of('DSP48E2')} DSP48E2"
            ram = f"{of('BRAM36')} BRAM36, {of('URAM')} URAM"
            fmax = "n/a (no timing)"
            source = s.get("label", "Yosys estimate")
        rows.append(f"| {s['preset']} | {s['target']} | {logic} | {ff} | {dsp} | {ram} | "
                    f"{fmax} | {source} |")
    return "\n".join(rows)


def update_readme(readme: Path, text: str) -> None:
    body = Path(readme).read_text()
    if BEGIN not in body or END not in body:
        raise ValueError(f"{readme} has no {BEGIN} ... {END} markers for the bitstream table")
    head, rest = body.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    Path(readme).write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def _own_group() -> None:
    """Pool worker initializer: a process group of its own, so that a stopped run can stop a
    worker together with the Yosys / nextpnr process it waits on (:func:`_stop`)."""
    os.setpgrp()


def _stop(pool) -> None:
    """Stop ``pool``'s workers' process groups, the tools they run included (a worker leads a
    group of its own, :func:`_own_group`, so neither a Ctrl-C in the terminal nor a signal to
    this process reaches it), wait for the workers to end, then cancel the jobs not started.

    The workers go first: the pool then breaks (its jobs fail, none is handed out again) before
    ``shutdown`` resets its state; a ``shutdown(wait=False)`` before the workers die races the
    pool's manager thread over them in CPython 3.11 (python/cpython#132969), the likely cause
    of a stopped run in the test suite that once did not exit within 120 s."""
    from multiprocessing.connection import wait

    procs = list((getattr(pool, "_processes", None) or {}).values())
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    pending = [proc.sentinel for proc in procs]
    deadline = time.monotonic() + 30
    while pending and time.monotonic() < deadline:
        done = wait(pending, timeout=max(0.0, deadline - time.monotonic()))
        pending = [s for s in pending if s not in done]
    pool.shutdown(wait=False, cancel_futures=True)


def _interrupt(signum, frame) -> None:
    """SIGTERM handler of a build run: stop as a Ctrl-C does, so that the tools are stopped."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _side_by_side(builds, jobs: int, clock_mhz) -> set:
    """Run the ECP5 builds and every xcup synthesis the builds need in ``jobs`` processes;
    returns the builds finished (the ECP5 ones: the xcup summaries then come from the cache).
    The first failure stops the others (their tools too) and raises :class:`SynthFailed`
    naming the job."""
    import concurrent.futures as cf
    import multiprocessing

    from bitstreams import xcup
    from bitstreams.synth import SynthFailed

    ecp5 = [(n, t) for n, t in builds if t == "ecp5"]
    wanted = []
    for name, target in builds:
        if target == "xcup":
            cfg = preset(name)
            wanted += xcup.plan(xcup.mid_config(cfg), validating=True) + xcup.plan(cfg)
    started = time.monotonic()
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding Amaranth state
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx,
                                initializer=_own_group) as pool:
        futures = {pool.submit(synth, n, t, clock_mhz=clock_mhz): f"{n}-{t}" for n, t in ecp5}
        futures.update(xcup.prefetch(wanted, WORK_ROOT / "xcup", pool=pool))
        print(f"{len(futures)} jobs on {jobs} processes", flush=True)
        try:
            for i, fut in enumerate(cf.as_completed(futures), 1):
                try:
                    fut.result()
                except Exception as exc:  # a tool's failure, a worker killed (out of memory)
                    raise SynthFailed(f"{futures[fut]}: {type(exc).__name__}: {exc}") from exc
                print(f"[{i}/{len(futures)}] {futures[fut]} done, "
                      f"{time.monotonic() - started:.0f} s", flush=True)
        except BaseException:  # that failure, a Ctrl-C, a SIGTERM (main): stop the others
            _stop(pool)
            raise
    return set(ecp5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bitstreams.build", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), help="one build (with --target)")
    ap.add_argument("--target", choices=TARGETS)
    ap.add_argument("--all", action="store_true",
                    help="the default set: " + ", ".join(f"{p}-{t}" for p, t in DEFAULT_BUILDS))
    ap.add_argument("--clock-mhz", type=float,
                    help="ECP5 kernel clock (default: the board clock of BOARD_CLOCK_MHZ, else "
                         "the preset's clock_mhz)")
    ap.add_argument("--table", metavar="README", help="regenerate this README's table")
    ap.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="run up to N tool processes side by side (each Yosys run is "
                         "single-threaded and needs up to 5 GB; default 1)")
    args = ap.parse_args(argv)
    builds = list(DEFAULT_BUILDS) if args.all else []
    if args.preset or args.target:
        if not (args.preset and args.target):
            ap.error("--preset and --target go together")
        builds.append((args.preset, args.target))
    if args.jobs < 1:
        ap.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.clock_mhz is not None:
        if not (math.isfinite(args.clock_mhz) and args.clock_mhz > 0):
            ap.error(f"--clock-mhz must be a finite number > 0, got {args.clock_mhz}")
        if not any(t == "ecp5" for _, t in builds):
            ap.error("--clock-mhz sets the ECP5 bitstream's PLL clock; no ECP5 build here")
    if not builds and not args.table:
        ap.error("nothing to do: give --preset and --target, --all, or --table")
    from bitstreams.ecp5 import BuildFailed
    from bitstreams.synth import SynthFailed

    # a SIGTERM stops the run as a Ctrl-C does: the tools it started are stopped too
    # (the side-by-side workers' by _stop, those this process waits on by run_tool or
    # subprocess.run)
    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        done = _side_by_side(builds, args.jobs, args.clock_mhz) if args.jobs > 1 else set()
        for name, target in builds:
            if (name, target) in done:
                continue
            try:
                synth(name, target, clock_mhz=args.clock_mhz if target == "ecp5" else None)
            except (BuildFailed, SynthFailed) as exc:
                print(f"error: {name}-{target}: {exc}", file=sys.stderr)
                return 1
    except (BuildFailed, SynthFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"error: interrupted ({str(exc) or 'SIGINT'}); the tools started were stopped, the "
              "finished builds' summaries and the xcup slice cache kept", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old)
    if args.table:
        update_readme(Path(args.table), table())
        print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
