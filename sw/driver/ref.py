"""The ``ref`` backend: device memory in host RAM, the golden command processor
(:mod:`sw.driver.executor`) as the kernel. Fast, bit-exact, and its cycles are the RTL kernel's
(:mod:`sw.perf.top`)."""

from __future__ import annotations

from hw.config import AcceleratorConfig

from .device import Buffer, Device, RunResult
from .executor import execute

__all__ = ["RefDevice"]


class RefDevice(Device):
    def __init__(self, config: AcceleratorConfig):
        super().__init__(config)
        self.memory = bytearray()
        self.spm = bytearray(config.spm_bytes)

    def _on_allocate(self, buf: Buffer) -> None:
        need = buf.addr + buf.size
        if need > len(self.memory):
            self.memory.extend(bytes(need - len(self.memory)))

    def _write(self, addr: int, data: bytes) -> None:
        self.memory[addr: addr + len(data)] = data

    def _read(self, addr: int, size: int) -> bytes:
        return bytes(self.memory[addr: addr + size])

    def _start(self, buffers: dict[str, Buffer]):
        view = memoryview(self.memory)
        mem = {k: view[b.addr: b.addr + b.size] for k, b in buffers.items()}
        for k in mem:
            if k != "output":
                mem[k] = mem[k].toreadonly()
        try:
            status, index, detail, per_op = execute(self.config, mem, self.spm)
        finally:
            for v in mem.values():
                v.release()
            view.release()
        return RunResult(status=status, command=index, cycles=sum(per_op.values()),
                         detail=detail, per_op=per_op)

    def _wait(self, handle: RunResult, timeout: float) -> RunResult:
        return handle  # the run finished inside run()
