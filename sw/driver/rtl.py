"""The ``rtl`` backend: the generated Verilog of :class:`hw.top.accelerator.Accelerator` under
Icarus or Verilator (``SIM``), driven through cocotbext-axi (``sim/benches/top.py``).

Device memory lives on the host between runs; each :meth:`run` simulates one kernel run: the
memory image goes into an AXI RAM model, the bench programs the AXI4-Lite registers, starts
the kernel, polls ap_done (giving up after ``max_cycles``) and hands back memory, status,
command index and the kernel's own cycle counter.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from pathlib import Path

from hw.config import AcceleratorConfig
from sw.compiler.isa import Status

from .device import Buffer, DeviceTimeout, RunResult
from .ref import RefDevice

__all__ = ["RtlDevice"]


class RtlDevice(RefDevice):
    """Host-side memory as :class:`~sw.driver.ref.RefDevice`; runs go through the RTL."""

    def __init__(self, config: AcceleratorConfig, *, max_cycles: int = 50_000_000,
                 stall: bool = False, seed: int = 1, reset_at: int | None = None,
                 trace: bool = False, build_root: str | Path | None = None,
                 progress=None, progress_every: int = 200_000,
                 prerun: dict[int, bytes] | None = None,
                 bus_error: dict[str, tuple[int, int]] | None = None):
        """``progress``: called as ``progress(cycles, command)`` (from a helper thread) with
        the kernel's cycle counter and command index, sampled every ``progress_every``
        simulated cycles, while a run simulates. ``prerun`` (for tests): each run first runs
        on device memory with these bytes at these addresses, then again on the memory as it
        is, without a reset in between; the result is the second run's. ``bus_error`` (for
        tests): device memory answers every read or write of a bus word that meets one of
        these byte ranges, ``{buffer name: (lo, hi)}`` with offsets into that run argument's
        buffer, with an AXI SLVERR response (and does not write it)."""
        if progress_every < 1:
            raise ValueError(f"progress_every must be a positive number of cycles, got "
                             f"{progress_every}")
        super().__init__(config)
        self.max_cycles, self.stall, self.seed, self.reset_at = max_cycles, stall, seed, reset_at
        self.trace, self.prerun, self.bus_error = trace, prerun, dict(bus_error or {})
        self.progress, self.progress_every = progress, progress_every
        self.build_root = Path(build_root) if build_root else None
        self.runs = 0

    def _start(self, buffers: dict[str, Buffer]):
        from sim.runner import REPO_ROOT

        self.runs += 1
        root = self.build_root or REPO_ROOT / "build" / "sim"
        digest = hashlib.sha256(self.config.to_json().encode()).hexdigest()[:8]
        # one build per config and per process that may run at the same time (pytest-xdist
        # workers): concurrent runs must not share a simulator build or the memory images
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        case = f"{self.config.name}-{digest}-{worker}"
        work = root / "top-runs" / case
        work.mkdir(parents=True, exist_ok=True)
        # two runs of one config from two shells would share that build and these images:
        # the second waits for the first
        with open(work / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._run_locked(buffers, root, case, work)

    def _run_locked(self, buffers: dict[str, Buffer], root: Path, case: str, work: Path):
        from hw.top.accelerator import Accelerator
        from sim.runner import run_bench

        image, image_out = work / "image.bin", work / "image_out.bin"
        image.write_bytes(bytes(self.memory))
        unknown = sorted(set(self.bus_error) - set(buffers))
        if unknown:
            raise ValueError(f"bus_error names {unknown}, not buffers of this run "
                             f"({sorted(buffers)})")
        params = {"image": str(image), "image_out": str(image_out),
                  "buffers": {k: [b.addr, b.size] for k, b in buffers.items()},
                  "max_cycles": self.max_cycles, "stall": self.stall, "seed": self.seed,
                  "reset_at": self.reset_at, "trace": self.trace,
                  "prerun": [[a, bytes(d).hex()] for a, d in (self.prerun or {}).items()],
                  "bus_error": [[buffers[k].addr + lo, buffers[k].addr + hi]
                                for k, (lo, hi) in self.bus_error.items()],
                  "weight_port": bool(self.config.weight_port_bytes),
                  "weight_ports": self.config.weight_ports,
                  "weight_writes": self.config.wide_store,
                  "mem_delay": self.config.mem_read_delay}
        with self._progress_watch(work, params):
            report = run_bench(component=lambda: Accelerator(config=self.config),
                               bench="sim.benches.top", case=case, params=params,
                               build_root=root, cache_key=f"Accelerator {self.config.to_json()}")
        self.memory[:] = image_out.read_bytes()
        if report["timed_out"]:
            return RunResult(status=Status.TIMEOUT, command=-1, cycles=self.max_cycles,
                             detail=f"no ap_done within {self.max_cycles} cycles")
        command = report["command"]
        return RunResult(status=Status(report["status"]),
                         command=-1 if command == 0xFFFF_FFFF else command,
                         cycles=report["cycles"], detail=json.dumps(report))

    def _progress_watch(self, work: Path, params: dict):
        """While the simulation runs, hand the bench's progress samples to ``progress``."""
        import contextlib

        if self.progress is None:
            return contextlib.nullcontext()
        path = work / "progress.txt"
        path.unlink(missing_ok=True)
        params.update(progress=str(path), progress_every=self.progress_every)
        stop = threading.Event()
        seen = [None]

        def poll():
            try:
                text = path.read_text().split()
                sample = (int(text[0]), int(text[1]))
            except (OSError, ValueError, IndexError):
                return  # not written yet, or caught mid-write
            if sample != seen[0]:
                seen[0] = sample
                self.progress(*sample)

        failed: list[BaseException] = []

        def watch():
            try:
                while not stop.wait(1.0):
                    poll()
                poll()  # the last sample, however short the run
            except BaseException as e:  # the callback's error: raised in the caller's thread
                failed.append(e)

        @contextlib.contextmanager
        def running():
            thread = threading.Thread(target=watch, name="rtl-progress", daemon=True)
            thread.start()
            try:
                yield
            finally:
                stop.set()
                thread.join()
            if failed:
                raise failed[0]
        return running()

    def _wait(self, handle: RunResult, timeout: float) -> RunResult:
        if handle.status == Status.TIMEOUT:
            raise DeviceTimeout(timeout, handle.detail)
        return handle
