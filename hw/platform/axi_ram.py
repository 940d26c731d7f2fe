"""On-chip device memory with an AXI4 slave port (the self-test board top's 'DDR')."""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.lib.checks import refuse
from hw.top.axi import RESP_OKAY, Axi4Signature

__all__ = ["AxiRam", "RESP_SLVERR"]

RESP_SLVERR = 2


class AxiRam(wiring.Component):
    """``depth`` 32-bit words at byte addresses ``[0, 4 * depth)``, behind an AXI4 slave.

    INCR bursts (the only kind the kernel issues) of 32-bit beats, one read and one write
    burst in progress at a time (reads and writes proceed independently). A beat outside the
    memory is not performed and its response is SLVERR (a read returns 0): nothing wraps.

    Parameters
    ----------
    depth : int
        Words of memory (>= 1).
    init : sequence of int
        Initial contents (at most ``depth`` words; the rest are 0).

    Ports
    -----
    axi : In(Axi4Signature(32))
        The slave port (the kernel's ``m_axi_gmem`` connects here).
    peek_addr : In(range(depth)), peek_data : Out(32)
        A second read port (one cycle latency) for whoever checks the results.

    Latency / throughput / resources
    --------------------------------
    Read: AR taken, then one beat per cycle from the second cycle on (memory read latency 1),
    RLAST on the last. Write: AW taken, one W beat per cycle, B one cycle after WLAST.
    ``ceil(depth / 512)`` 36-bit block RAMs (ECP5 DP16KD) or distributed RAM for small depths.
    """

    def __init__(self, *, depth: int, init=()):
        if not isinstance(depth, int) or depth < 1:
            refuse(self, f"AxiRam depth must be a positive int, got {depth!r}")
        init = list(init)
        if len(init) > depth:
            refuse(self, f"AxiRam init has {len(init)} words, more than depth {depth}")
        if any(not isinstance(w, int) or not 0 <= w < 2**32 for w in init):
            refuse(self, "AxiRam init words must be ints in [0, 2**32)")
        self.depth, self.init = depth, init
        super().__init__({
            "axi": In(Axi4Signature(32)),
            "peek_addr": In(range(depth)),
            "peek_data": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        axi = self.axi
        m.submodules.mem = mem = Memory(shape=32, depth=self.depth, init=self.init)
        rd = mem.read_port()
        wr = mem.write_port(granularity=8)
        peek = mem.read_port()
        m.d.comb += [peek.addr.eq(self.peek_addr), self.peek_data.eq(peek.data)]

        def in_range(addr):
            return addr < 4 * self.depth

        # -- read channel: the read port's data register is the R output register -----------
        raddr = Signal(64)
        rleft = Signal(9)  # beats of the burst still to issue (arlen + 1 <= 256)
        rvalid, rlast, rok = Signal(), Signal(), Signal()
        advance = ~rvalid | axi.rready  # the output register is free, or freed this cycle
        m.d.comb += [
            axi.rid.eq(0), axi.rvalid.eq(rvalid), axi.rlast.eq(rlast),
            axi.rdata.eq(rok.replicate(32) & rd.data),
            axi.rresp.eq(Mux(rok, RESP_OKAY, RESP_SLVERR)),
            rd.addr.eq(raddr[2:]), rd.en.eq(advance),
            axi.arready.eq(rleft == 0),
        ]
        with m.If(advance):
            m.d.sync += [rvalid.eq(rleft != 0), rlast.eq(rleft == 1), rok.eq(in_range(raddr))]
            with m.If(rleft != 0):
                m.d.sync += [rleft.eq(rleft - 1), raddr.eq(raddr + 4)]
        with m.If(axi.arvalid & axi.arready):
            m.d.sync += [raddr.eq(axi.araddr), rleft.eq(axi.arlen + 1)]

        # -- write channel -------------------------------------------------------------------
        waddr = Signal(64)
        wbad = Signal()  # some beat of this burst was out of range
        with m.FSM(name="write"):
            with m.State("AW"):
                m.d.comb += axi.awready.eq(1)
                with m.If(axi.awvalid):
                    m.d.sync += [waddr.eq(axi.awaddr), wbad.eq(0)]
                    m.next = "W"
            with m.State("W"):
                m.d.comb += axi.wready.eq(1)
                ok = in_range(waddr)
                m.d.comb += [wr.addr.eq(waddr[2:]), wr.data.eq(axi.wdata)]
                with m.If(axi.wvalid):
                    m.d.comb += wr.en.eq(ok.replicate(4) & axi.wstrb)
                    m.d.sync += [waddr.eq(waddr + 4), wbad.eq(wbad | ~ok)]
                    with m.If(axi.wlast):
                        m.next = "B"
            with m.State("B"):
                m.d.comb += [axi.bvalid.eq(1), axi.bid.eq(0),
                             axi.bresp.eq(Mux(wbad, RESP_SLVERR, RESP_OKAY))]
                with m.If(axi.bready):
                    m.next = "AW"
        return m
