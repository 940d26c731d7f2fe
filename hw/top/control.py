"""AXI4-Lite control registers of the kernel (Vitis RTL-kernel convention)."""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sw.compiler.isa import BUFFERS, REGISTERS, WEIGHT_BANKS

from .axi import RESP_OKAY, AxiLiteSignature

__all__ = ["ControlRegs", "ADDR_WIDTH"]

ADDR_WIDTH = 8


class ControlRegs(wiring.Component):
    """The register map of :data:`sw.compiler.isa.REGISTERS`.

    CTRL (0x00): writing bit 0 (ap_start) while idle starts a run (``start`` pulses); bit 1
    (ap_done) is set when the run ends and cleared when CTRL is read; bit 2 (ap_idle) is high
    while no run is in progress. STATUS, COMMAND and CYCLES hold the last run's result.
    The buffer arguments are read/write; writes to them during a run are ignored.

    Ports
    -----
    bus : In(AxiLiteSignature(8))
        The host's AXI4-Lite port (this component is the slave).
    start : Out(1)
        One-cycle pulse; the arguments are stable until the run ends.
    <buffer>, <buffer>_size : Out(64), Out(32)
        For each of ``buffers`` (a constructor argument: :data:`sw.compiler.isa.BUFFERS`, then
        a config's weight banks, :func:`sw.compiler.isa.buffers`).
    busy, done : In(1)
        The kernel is running; it ends this cycle (with ``status``, ``command``, ``cycles``).
    status, command, cycles : In(8), In(32), In(32)

    Latency / throughput / resources
    --------------------------------
    A write is answered one cycle after both AW and W are valid; a read one cycle after AR.
    Three 32-bit argument registers per buffer.
    """

    def __init__(self, *, buffers: tuple[str, ...] = BUFFERS):
        if tuple(buffers[:len(BUFFERS)]) != BUFFERS or not set(buffers) <= {*BUFFERS,
                                                                             *WEIGHT_BANKS}:
            raise ValueError(f"ControlRegs buffers must be {BUFFERS} then weight banks of "
                             f"{WEIGHT_BANKS}, got {buffers!r}")
        self.buffers = tuple(buffers)
        ports = {"bus": In(AxiLiteSignature(ADDR_WIDTH)), "start": Out(1),
                 "busy": In(1), "done": In(1), "status": In(8), "command": In(32),
                 "cycles": In(32)}
        for b in self.buffers:
            ports[b] = Out(64)
            ports[f"{b}_size"] = Out(32)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        done_flag = Signal()
        status, command, cycles = Signal(8), Signal(32), Signal(32)
        with m.If(self.done):
            m.d.sync += [done_flag.eq(1), status.eq(self.status), command.eq(self.command),
                         cycles.eq(self.cycles)]

        # -- writes: take AW and W together, answer with B ------------------------------------
        bvalid = Signal()
        m.d.comb += [bus.bvalid.eq(bvalid), bus.bresp.eq(RESP_OKAY)]
        take_w = Signal()
        m.d.comb += [take_w.eq(bus.awvalid & bus.wvalid & ~bvalid),
                     bus.awready.eq(take_w), bus.wready.eq(take_w)]
        with m.If(bvalid & bus.bready):
            m.d.sync += bvalid.eq(0)
        with m.If(take_w):
            m.d.sync += bvalid.eq(1)
            addr = bus.awaddr & ~3
            with m.If((addr == REGISTERS["CTRL"]) & bus.wdata[0] & bus.wstrb[0] & ~self.busy):
                m.d.comb += self.start.eq(1)
            with m.If(~self.busy):
                for b in self.buffers:
                    key = b.upper()
                    ptr = getattr(self, b)
                    for reg, lo, width in ((f"{key}_LO", 0, 32), (f"{key}_HI", 32, 32)):
                        with m.If(addr == REGISTERS[reg]):
                            m.d.sync += ptr[lo:lo + width].eq(bus.wdata)
                    with m.If(addr == REGISTERS[f"{key}_SIZE"]):
                        m.d.sync += getattr(self, f"{b}_size").eq(bus.wdata)
        with m.If(self.start):
            m.d.sync += done_flag.eq(0)

        # -- reads ---------------------------------------------------------------------------
        rvalid, rdata = Signal(), Signal(32)
        m.d.comb += [bus.rvalid.eq(rvalid), bus.rdata.eq(rdata), bus.rresp.eq(RESP_OKAY),
                     bus.arready.eq(~rvalid)]
        with m.If(rvalid & bus.rready):
            m.d.sync += rvalid.eq(0)
        with m.If(bus.arvalid & ~rvalid):
            m.d.sync += rvalid.eq(1)
            addr = bus.araddr & ~3
            m.d.sync += rdata.eq(0)
            with m.Switch(addr):
                with m.Case(REGISTERS["CTRL"]):
                    m.d.sync += rdata.eq(self.busy | (done_flag << 1) | (~self.busy << 2))
                    with m.If(~self.done):
                        m.d.sync += done_flag.eq(0)  # ap_done clears on read
                with m.Case(REGISTERS["STATUS"]):
                    m.d.sync += rdata.eq(status)
                with m.Case(REGISTERS["COMMAND"]):
                    m.d.sync += rdata.eq(command)
                with m.Case(REGISTERS["CYCLES"]):
                    m.d.sync += rdata.eq(cycles)
                for b in self.buffers:
                    key = b.upper()
                    with m.Case(REGISTERS[f"{key}_LO"]):
                        m.d.sync += rdata.eq(getattr(self, b)[:32])
                    with m.Case(REGISTERS[f"{key}_HI"]):
                        m.d.sync += rdata.eq(getattr(self, b)[32:])
                    with m.Case(REGISTERS[f"{key}_SIZE"]):
                        m.d.sync += rdata.eq(getattr(self, f"{b}_size"))
        return m
