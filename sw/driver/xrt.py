"""The ``xrt`` backend: an Alveo card through XRT's Python bindings (``pyxrt``).

The kernel is the Vitis RTL kernel packaged from ``hw/top`` (``python -m bitstreams.vitis``): its
arguments are the buffers' addresses and sizes in the order of :func:`kernel_args` (the four
buffers of :data:`KERNEL_ARGS`, then, with ``config.weight_ports = P > 1``, the weight banks
``params1`` .. ``params<P-1>``, :func:`sw.compiler.isa.buffers`). Each buffer is allocated in
the memory bank of the kernel argument its name names (``dev.allocate(size, "params1")``), so
a weight bank lands on the bank its own ``m_axi_wgt<p>`` master is linked to; an unnamed
buffer goes to the first argument's bank. This backend needs XRT installed
(``source /opt/xilinx/xrt/setup.sh``) and an ``.xclbin`` built for the config; without them
it fails at open with a message that says which (importing this module does not need them).
"""

from __future__ import annotations

import os
import time

from hw.config import AcceleratorConfig
from sw.compiler.isa import BUFFERS, REGISTERS, Status
from sw.compiler.isa import buffers as buffer_names

from .device import Buffer, Device, DeviceTimeout, RunResult

__all__ = ["XrtDevice", "KERNEL_ARGS", "KERNEL_NAME", "kernel_args"]

KERNEL_NAME = "nmaccel"
#: The kernel's arguments with one weight port (``kernel_args`` of a config with
#: ``weight_ports = 1``).
KERNEL_ARGS = ("program", "program_size", "params", "params_size", "input", "input_size",
               "output", "output_size")


def kernel_args(config: AcceleratorConfig) -> tuple[str, ...]:
    """The names of ``config``'s kernel arguments in order: for each buffer of
    :func:`sw.compiler.isa.buffers`, its address ``name`` then its size ``name_size``."""
    return tuple(a for b in buffer_names(config) for a in (b, f"{b}_size"))


def _pyxrt():
    try:
        import pyxrt
    except ImportError:
        raise RuntimeError(
            "the xrt backend needs Xilinx XRT's Python bindings (pyxrt), which are not "
            "installed here: install XRT (https://xilinx.github.io/XRT) and run "
            "'source /opt/xilinx/xrt/setup.sh', or use --device ref / rtl") from None
    return pyxrt


class XrtDevice(Device):
    def __init__(self, config: AcceleratorConfig, *, xclbin: str | None = None, index: int = 0):
        pyxrt = _pyxrt()
        xclbin = xclbin or os.environ.get("NMACCEL_XCLBIN")
        if not xclbin or not os.path.isfile(xclbin):
            raise RuntimeError(f"the xrt backend needs the kernel's .xclbin for config "
                               f"{config.name!r}: pass xclbin= or set NMACCEL_XCLBIN "
                               f"(got {xclbin!r})")
        super().__init__(config)
        self._dev = pyxrt.device(index)
        uuid = self._dev.load_xclbin(xclbin)
        self._kernel = pyxrt.kernel(self._dev, uuid, KERNEL_NAME)
        self._args = kernel_args(config)
        self._bos: dict[Buffer, object] = {}
        self._pyxrt = pyxrt

    def _on_allocate(self, buf: Buffer) -> None:
        # the memory bank of the argument the buffer is named for (a weight bank's own DDR/HBM
        # bank); unnamed or otherwise named buffers go to the first argument's
        arg = self._args.index(buf.name) if buf.name in buffer_names(self.config) else 0
        bo = self._pyxrt.bo(self._dev, buf.size, self._pyxrt.bo.normal,
                            self._kernel.group_id(arg))
        # the address first: a Buffer hashes by its fields, so it is a key only once it is final
        object.__setattr__(buf, "addr", bo.address())
        self._bos[buf] = bo

    def _bo(self, addr: int):
        for b, bo in self._bos.items():
            if b.addr <= addr < b.addr + b.size:
                return b, bo
        raise ValueError(f"address {addr:#x} is in no buffer")

    def _write(self, addr: int, data: bytes) -> None:
        b, bo = self._bo(addr)
        bo.write(data, addr - b.addr)
        bo.sync(self._pyxrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE, len(data), addr - b.addr)

    def _read(self, addr: int, size: int) -> bytes:
        b, bo = self._bo(addr)
        bo.sync(self._pyxrt.xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE, size, addr - b.addr)
        return bytes(bo.read(size, addr - b.addr))

    def _start(self, buffers: dict[str, Buffer]):
        for name in buffer_names(self.config)[len(BUFFERS):]:  # each weight bank must be in
            # its own port's memory bank (_on_allocate picks it by the buffer's name)
            if buffers[name].name != name:
                raise ValueError(f"the {name!r} buffer must be allocated with name={name!r} so "
                                 f"it lands in its weight port's memory bank, got "
                                 f"{buffers[name].name!r}")
        args = []
        for name in buffer_names(self.config):
            args += [self._bos[buffers[name]], buffers[name].size]
        return self._kernel(*args), time.monotonic()

    def _wait(self, handle, timeout: float) -> RunResult:
        run, _ = handle
        state = run.wait(int(timeout * 1000))
        if state != self._pyxrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED:
            raise DeviceTimeout(timeout, f"kernel state {state}")
        status = Status(self._kernel.read_register(REGISTERS["STATUS"]) & 0xFF)
        command = self._kernel.read_register(REGISTERS["COMMAND"])
        cycles = self._kernel.read_register(REGISTERS["CYCLES"])
        return RunResult(status=status, command=-1 if command == 0xFFFF_FFFF else command,
                         cycles=cycles)
