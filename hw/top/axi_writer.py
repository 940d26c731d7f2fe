"""AXI4 burst writer: a request for ``words`` words at ``addr`` + a stream of words/strobes."""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import BURST_INCR, MAX_BURST, RESP_OKAY, Axi4Signature, next_burst, request_layout

__all__ = ["AxiWriter"]


class AxiWriter(wiring.Component):
    """Writes ``words`` consecutive bus words from byte address ``addr`` (word aligned).

    Bursts as :class:`~hw.top.axi_reader.AxiReader` (at most ``max_burst`` beats, not
    crossing 4 KiB); each burst is AW, then its W beats, then the B response, before the next.

    Parameters
    ----------
    data_width : int
        Bits of a bus word (a beat).
    max_burst : int
        Longest burst, 1 to 256 beats (default :data:`~hw.top.axi.MAX_BURST`).

    Ports
    -----
    req : In(stream of {addr: 64, words: 32})
    data : In(stream of {data: data_width, strb: data_width/8})
        Byte strobes let the last word of an odd-sized store leave its other bytes alone.
    idle : Out(1)
        No request in progress (every B response of the previous request received).
    error : Out(1)
        Sticky: some B response was not OKAY.
    axi : Out(Axi4Signature)
        Only the AW, W and B channels are driven.

    Latency / throughput / resources
    --------------------------------
    One W beat per cycle inside a burst; per burst add the AW and B handshakes.
    """

    def __init__(self, *, data_width: int = 32, max_burst: int = MAX_BURST):
        if not 1 <= max_burst <= 256:
            raise ValueError(f"max_burst must be in 1..256 (AXI4 INCR), got {max_burst!r}")
        self.data_width, self.max_burst = data_width, max_burst
        super().__init__({
            "req": In(stream.Signature(request_layout())),
            "data": In(stream.Signature(data.StructLayout({"data": data_width,
                                                           "strb": data_width // 8}))),
            "idle": Out(1),
            "error": Out(1),
            "axi": Out(Axi4Signature(data_width)),
        })

    def elaborate(self, platform):
        m = Module()
        axi = self.axi
        beat_bytes = self.data_width // 8
        addr = Signal(64)
        left = Signal(32)
        burst = Signal(range(self.max_burst + 1))
        sent = Signal(range(self.max_burst + 1))
        m.d.comb += [
            axi.awsize.eq(axi.signature.size),
            axi.awburst.eq(BURST_INCR),
            axi.awaddr.eq(addr),
            axi.awlen.eq(burst - 1),
            axi.wdata.eq(self.data.payload.data),
            axi.wstrb.eq(self.data.payload.strb),
            axi.wlast.eq(sent == burst - 1),
        ]
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.req.ready.eq(1), self.idle.eq(~self.req.valid)]
                with m.If(self.req.valid):
                    m.d.sync += [addr.eq(self.req.payload.addr),
                                 left.eq(self.req.payload.words)]
                    with m.If(self.req.payload.words != 0):
                        m.next = "SIZE"
            with m.State("SIZE"):
                n = next_burst(addr, left, beat_bytes, self.max_burst)
                m.d.sync += [burst.eq(n), sent.eq(0)]
                m.next = "AW"
            with m.State("AW"):
                m.d.comb += axi.awvalid.eq(1)
                with m.If(axi.awready):
                    m.next = "W"
            with m.State("W"):
                m.d.comb += [axi.wvalid.eq(self.data.valid), self.data.ready.eq(axi.wready)]
                with m.If(self.data.valid & axi.wready):
                    m.d.sync += sent.eq(sent + 1)
                    with m.If(sent == burst - 1):
                        m.next = "B"
            with m.State("B"):
                m.d.comb += axi.bready.eq(1)
                with m.If(axi.bvalid):
                    with m.If(axi.bresp != RESP_OKAY):
                        m.d.sync += self.error.eq(1)
                    m.d.sync += [addr.eq(addr + burst * beat_bytes), left.eq(left - burst)]
                    with m.If(left == burst):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "SIZE"
        return m
