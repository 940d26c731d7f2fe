"""The Device API every backend implements: allocate, write, read, run, wait.

```python
dev = open_device("ref", config)
bufs = {name: dev.allocate(len(data), name) for name, data in compiled.buffers().items()}
bufs["input"] = dev.allocate(compiled.input_bytes, "input")
bufs["output"] = dev.allocate(compiled.output_bytes, "output")
for name, data in compiled.buffers().items():  # program, params, the weight banks
    dev.write(bufs[name], data)
dev.write(bufs["input"], input_bytes)
result = dev.wait(dev.run(**bufs), timeout=60)
y = dev.read(bufs["output"])
```

Buffers are named after the kernel argument they are for (the ``xrt`` backend places each in
its argument's memory bank; a config with several weight ports has a bank per port).

Buffers are device-memory ranges the host declares; the kernel gets their addresses and sizes
as arguments and may touch nothing else. :meth:`Device.wait` raises :class:`DeviceError` (with
the device's status and the failing command's index) when the run stops on an error, and
:class:`DeviceTimeout` when it does not finish in time: it never hangs.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from hw.config import AcceleratorConfig
from sw.compiler.isa import BUFFERS, Status, buffers

__all__ = ["Buffer", "RunResult", "Device", "DeviceError", "DeviceTimeout", "open_device",
           "BACKENDS", "PAGE"]

PAGE = 4096  #: allocation granularity (bytes)


class DeviceError(RuntimeError):
    """A run that stopped with an error status (``status``, ``command``, ``detail``)."""

    def __init__(self, status: Status, command: int, detail: str = ""):
        self.status, self.command, self.detail = Status(status), command, detail
        where = f" at command {command}" if command >= 0 else ""
        super().__init__(f"device stopped with {self.status.name}{where}"
                         + (f": {detail}" if detail else ""))


class DeviceTimeout(DeviceError):
    def __init__(self, timeout: float, detail: str = ""):
        super().__init__(Status.TIMEOUT, -1, detail or f"no done after {timeout:g} s")


@dataclass(frozen=True)
class Buffer:
    addr: int
    size: int
    name: str = ""


@dataclass
class RunResult:
    status: Status
    command: int  # index of the command that stopped the run, or the END command
    cycles: int  # clock cycles from start to done
    detail: str = ""
    per_op: dict[str, int] = field(default_factory=dict)  # cycles by opcode name, if known


class Device(abc.ABC):
    """A device with a flat byte-addressed memory and one accelerator kernel."""

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        self._buffers: list[Buffer] = []
        self._next = PAGE  # address 0 is never handed out

    # -- memory ---------------------------------------------------------------------------------
    def allocate(self, size: int, name: str = "") -> Buffer:
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size < 2**32:
            raise ValueError(f"buffer size must be an int of 1..2**32 - 1 bytes (the kernel's "
                             f"SIZE registers are 32-bit), got {size!r}")
        buf = Buffer(self._next, size, name)
        self._next += -(-size // PAGE) * PAGE + PAGE  # a guard page between buffers
        self._buffers.append(buf)
        self._on_allocate(buf)
        return buf

    def _check(self, buf: Buffer, offset: int, size: int) -> None:
        if not isinstance(buf, Buffer):
            raise TypeError(f"expected a Buffer from allocate(), got {type(buf).__name__} "
                            f"{buf!r}")
        if buf not in self._buffers:
            raise ValueError(f"{buf} was not allocated on this device")
        if offset < 0 or size < 0 or offset + size > buf.size:
            raise ValueError(f"bytes [{offset}, {offset + size}) are outside {buf.name or 'the'}"
                             f" buffer of {buf.size} bytes")

    def write(self, buf: Buffer, data: bytes, offset: int = 0) -> None:
        if isinstance(data, (int, str)):  # bytes(5) would be five zero bytes, bytes("") fails
            raise TypeError(f"data must be bytes-like (bytes, bytearray, a uint8 array), got "
                            f"{type(data).__name__}")
        data = bytes(data)
        self._check(buf, offset, len(data))
        self._write(buf.addr + offset, data)

    def read(self, buf: Buffer, size: int | None = None, offset: int = 0) -> bytes:
        self._check(buf, 0, 0)
        size = buf.size - offset if size is None else size
        self._check(buf, offset, size)
        return self._read(buf.addr + offset, size)

    # -- kernel ---------------------------------------------------------------------------------
    def run(self, *, program: Buffer, params: Buffer, input: Buffer, output: Buffer,  # noqa: A002
            **banks: Buffer):
        """Start the kernel; returns a handle for :meth:`wait`. A config with several weight
        ports also takes its weight banks ``params1=``, ... (:func:`sw.compiler.isa.buffers`)."""
        want = buffers(self.config)[len(BUFFERS):]
        if set(banks) != set(want):
            raise ValueError(f"config {self.config.name!r} has {self.config.weight_ports} "
                             f"weight port(s): run() takes the weight banks "
                             f"{list(want) or 'none'}, got {sorted(banks) or 'none'}")
        args = {"program": program, "params": params, "input": input, "output": output,
                **{k: banks[k] for k in want}}
        for b in args.values():
            self._check(b, 0, b.size)
        names = {}
        for k, b in args.items():  # one buffer as two arguments: the output would overwrite it
            if id(b) in names:
                raise ValueError(f"run(): {names[id(b)]} and {k} are the same buffer")
            names[id(b)] = k
        return self._start(args)

    def wait(self, handle, timeout: float = 60.0) -> RunResult:
        """Wait for done; raise :class:`DeviceError` / :class:`DeviceTimeout` on failure."""
        if handle is None or isinstance(handle, (str, bytes, int, float, Buffer)):
            raise TypeError(f"wait() takes the handle run() returned, got {handle!r}")
        result = self._wait(handle, timeout)
        if result.status != Status.OK:
            raise DeviceError(result.status, result.command, result.detail)
        return result

    @abc.abstractmethod
    def _on_allocate(self, buf: Buffer) -> None: ...

    @abc.abstractmethod
    def _write(self, addr: int, data: bytes) -> None: ...

    @abc.abstractmethod
    def _read(self, addr: int, size: int) -> bytes: ...

    @abc.abstractmethod
    def _start(self, buffers: dict[str, Buffer]): ...

    @abc.abstractmethod
    def _wait(self, handle, timeout: float) -> RunResult: ...

    def close(self) -> None:  # noqa: B027 - optional hook; most backends hold nothing
        """Release the device (backends with resources override this)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


BACKENDS = ("ref", "rtl", "xrt")


def open_device(kind: str, config: AcceleratorConfig, **kwargs) -> Device:
    """A device of the given backend: ``ref`` (the golden model), ``rtl`` (the generated
    Verilog in simulation) or ``xrt`` (an Alveo card)."""
    if kind == "ref":
        from .ref import RefDevice

        return RefDevice(config, **kwargs)
    if kind == "rtl":
        from .rtl import RtlDevice

        return RtlDevice(config, **kwargs)
    if kind == "xrt":
        from .xrt import XrtDevice

        return XrtDevice(config, **kwargs)
    raise ValueError(f"unknown device backend {kind!r}; known: {', '.join(BACKENDS)}")
