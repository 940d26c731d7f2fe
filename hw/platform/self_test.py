"""Built-in self-test: the whole kernel runs a Program from on-chip memory and checks a CRC."""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.crc import catalog
from amaranth.lib.wiring import Out

from hw.config import AcceleratorConfig
from hw.lib.checks import refuse, require_config
from hw.top.accelerator import Accelerator
from sw.compiler.isa import BUFFERS, REGISTERS, Status

from .axi_ram import AxiRam

__all__ = ["SelfTest", "simulate"]


class SelfTest(wiring.Component):
    """The :class:`~hw.top.accelerator.Accelerator` and its device memory on chip, with a
    sequencer in place of the host.

    After reset the sequencer writes the buffer arguments and ap_start over AXI4-Lite, polls
    CTRL until ap_done, reads STATUS, then folds the output buffer's words into a CRC-32
    (ISO-HDLC, the one :func:`zlib.crc32` computes, via :mod:`amaranth.lib.crc`). The test
    passes when the status is OK and the CRC equals ``expected_crc`` (which the ``ref`` backend
    predicts, :func:`sw.compiler.selftest.selftest_image`). It runs once per reset.

    Parameters
    ----------
    config : AcceleratorConfig
    image : sequence of int
        Device memory, 32-bit words from byte address 0 (program, params, input, output).
    buffers : dict
        ``{name: (byte address, bytes)}`` for each of :data:`sw.compiler.isa.BUFFERS`.
    expected_crc : int
        CRC-32 of the words covering the output buffer after a correct run.

    Ports
    -----
    busy, done, passed : Out(1)
        Running; finished (stays high); finished and correct.
    status : Out(8)
        The kernel's STATUS register (valid with ``done``).
    crc : Out(32)
        The CRC-32 the run produced (valid with ``done``).

    Latency / throughput / resources
    --------------------------------
    The kernel's cycles for the Program, plus about ``5 * 13`` cycles of register writes, ``3``
    per CTRL poll and ``words + 2`` for the CRC. Resources: the kernel, ``len(image)`` words of
    memory, a 32-bit-wide CRC.
    """

    def __init__(self, *, config: AcceleratorConfig, image, buffers: dict,
                 expected_crc: int):
        require_config(self, config)
        image = list(image)
        if set(buffers) != set(BUFFERS):
            refuse(self, f"SelfTest buffers must name {BUFFERS}, got {sorted(buffers)}")
        for name, (addr, size) in buffers.items():
            if addr % 4 or size < 1 or addr + size > 4 * len(image):
                refuse(self, f"SelfTest buffer {name!r} = ({addr}, {size}) is not a word-aligned"
                             f" range inside the {4 * len(image)}-byte image")
        if not 0 <= expected_crc < 2**32:
            refuse(self, f"SelfTest expected_crc must be a 32-bit value, got {expected_crc!r}")
        self.config, self.image, self.buffers = config, image, dict(buffers)
        self.expected_crc = expected_crc
        super().__init__({"busy": Out(1), "done": Out(1), "passed": Out(1), "status": Out(8),
                          "crc": Out(32)})

    def _writes(self) -> list[tuple[int, int]]:
        writes = []
        for name in BUFFERS:
            addr, size = self.buffers[name]
            key = name.upper()
            writes += [(REGISTERS[f"{key}_LO"], addr), (REGISTERS[f"{key}_HI"], 0),
                       (REGISTERS[f"{key}_SIZE"], size)]
        return writes + [(REGISTERS["CTRL"], 1)]

    def elaborate(self, platform):
        m = Module()
        m.submodules.kernel = kernel = Accelerator(config=self.config)
        m.submodules.ram = ram = AxiRam(depth=len(self.image), init=self.image)
        m.submodules.crc = crc = catalog.CRC32_ISO_HDLC(data_width=32).create()
        wiring.connect(m, kernel.m_axi_gmem, ram.axi)
        bus = kernel.s_axi_control

        writes = self._writes()
        out_addr, out_size = self.buffers["output"]
        first_word, n_words = out_addr // 4, -(-out_size // 4)
        step = Signal(range(len(writes) + 1))
        word = Signal(range(first_word + n_words + 1))
        status = Signal(8)
        m.d.comb += [self.status.eq(status), self.crc.eq(crc.crc),
                     ram.peek_addr.eq(word)]

        def read_register(state, register, then):
            """A state that issues an AXI4-Lite read of ``register``, then goes to ``then``."""
            with m.State(state):
                m.d.comb += [bus.arvalid.eq(1), bus.araddr.eq(REGISTERS[register]),
                             self.busy.eq(1)]
                with m.If(bus.arready):
                    m.next = then

        with m.FSM():
            with m.State("WRITE"):
                m.d.comb += [bus.awvalid.eq(1), bus.wvalid.eq(1), bus.wstrb.eq(0b1111),
                             self.busy.eq(1)]
                with m.Switch(step):
                    for k, (reg, value) in enumerate(writes):
                        with m.Case(k):
                            m.d.comb += [bus.awaddr.eq(reg), bus.wdata.eq(value)]
                with m.If(bus.awready & bus.wready):
                    m.next = "WRITE_B"
            with m.State("WRITE_B"):
                m.d.comb += [bus.bready.eq(1), self.busy.eq(1)]
                with m.If(bus.bvalid):
                    m.d.sync += step.eq(step + 1)
                    with m.If(step == len(writes) - 1):
                        m.next = "POLL"
                    with m.Else():
                        m.next = "WRITE"
            read_register("POLL", "CTRL", "POLL_R")
            with m.State("POLL_R"):
                m.d.comb += [bus.rready.eq(1), self.busy.eq(1)]
                with m.If(bus.rvalid):
                    with m.If(bus.rdata[1]):  # ap_done
                        m.next = "STATUS"
                    with m.Else():
                        m.next = "POLL"
            read_register("STATUS", "STATUS", "STATUS_R")
            with m.State("STATUS_R"):
                m.d.comb += [bus.rready.eq(1), self.busy.eq(1)]
                with m.If(bus.rvalid):
                    m.d.sync += [status.eq(bus.rdata), word.eq(first_word)]
                    m.d.comb += crc.start.eq(1)
                    m.next = "CRC"
            with m.State("CRC"):
                # the peek port's data for word w arrives the cycle after its address
                fed = Signal()
                m.d.comb += self.busy.eq(1)
                m.d.sync += fed.eq(word != first_word + n_words)
                m.d.comb += [crc.data.eq(ram.peek_data), crc.valid.eq(fed)]
                with m.If(word != first_word + n_words):
                    m.d.sync += word.eq(word + 1)
                with m.Elif(~fed):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += [self.done.eq(1),
                             self.passed.eq((status == Status.OK)
                                            & (crc.crc == self.expected_crc))]
        return m


def simulate(selftest: SelfTest, max_cycles: int = 1_000_000) -> dict:
    """Run ``selftest`` in the Amaranth simulator until ``done`` (or ``max_cycles``).

    Returns ``{cycles, done, passed, status, crc}`` (cycles from reset to ``done``).
    """
    from amaranth.sim import Simulator

    sim = Simulator(selftest)
    sim.add_clock(1e-8)
    out = {}

    async def bench(ctx):
        cycle = 0
        while cycle < max_cycles and not ctx.get(selftest.done):
            await ctx.tick()
            cycle += 1
        out.update(cycles=cycle, done=bool(ctx.get(selftest.done)),
                   passed=bool(ctx.get(selftest.passed)), status=ctx.get(selftest.status),
                   crc=ctx.get(selftest.crc))

    sim.add_testbench(bench)
    sim.run()
    return out
