"""AXI4 burst reader: a request for ``words`` data words at ``addr`` -> a stream of words."""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import BURST_INCR, MAX_BURST, RESP_OKAY, Axi4Signature, next_burst, request_layout

__all__ = ["AxiReader"]


class AxiReader(wiring.Component):
    """Reads ``words`` consecutive bus words from byte address ``addr`` (word aligned).

    Bursts of up to ``max_burst`` beats (default :data:`MAX_BURST`), INCR, never crossing a
    4 KiB boundary (an AXI rule), one burst in flight at a time.

    Ports
    -----
    req : In(stream of {addr: 64, words: 32})
        Taken when the previous request has been fully delivered.
    data : Out(stream of data_width bits)
        The words in address order; back-pressure holds RREADY low.
    error : Out(1)
        Sticky: some beat came back with RRESP != OKAY (the data is delivered regardless).
    axi : Out(Axi4Signature)
        Only the AR and R channels are driven; the write channels are left to the writer.

    Latency / throughput / resources
    --------------------------------
    One beat per cycle inside a burst; between bursts, the AR handshake plus the memory's
    read latency. A 64-bit address register, a 32-bit count, a burst counter.
    """

    def __init__(self, *, data_width: int = 32, max_burst: int = MAX_BURST):
        if not 1 <= max_burst <= 256:
            raise ValueError(f"max_burst must be in 1..256 (AXI4 INCR), got {max_burst!r}")
        self.data_width, self.max_burst = data_width, max_burst
        super().__init__({
            "req": In(stream.Signature(request_layout())),
            "data": Out(stream.Signature(data_width)),
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
        m.d.comb += [
            axi.arsize.eq(axi.signature.size),
            axi.arburst.eq(BURST_INCR),
            axi.araddr.eq(addr),
            axi.arlen.eq(burst - 1),
            self.data.payload.eq(axi.rdata),
        ]
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.req.ready.eq(1)
                with m.If(self.req.valid):
                    m.d.sync += [addr.eq(self.req.payload.addr),
                                 left.eq(self.req.payload.words)]
                    with m.If(self.req.payload.words != 0):
                        m.next = "SIZE"
            with m.State("SIZE"):
                n = next_burst(addr, left, beat_bytes, self.max_burst)
                m.d.sync += burst.eq(n)
                m.next = "AR"
            with m.State("AR"):
                m.d.comb += axi.arvalid.eq(1)
                with m.If(axi.arready):
                    m.next = "R"
            with m.State("R"):
                m.d.comb += [self.data.valid.eq(axi.rvalid), axi.rready.eq(self.data.ready)]
                with m.If(axi.rvalid & self.data.ready):
                    with m.If(axi.rresp != RESP_OKAY):
                        m.d.sync += self.error.eq(1)
                    with m.If(axi.rlast):
                        m.d.sync += [addr.eq(addr + burst * beat_bytes),
                                     left.eq(left - burst)]
                        with m.If(left == burst):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "SIZE"
        return m
