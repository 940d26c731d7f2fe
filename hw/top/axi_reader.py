"""AXI4 burst reader: a request for ``words`` data words at ``addr`` -> a stream of words."""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import (
    BURST_INCR,
    MAX_BURST,
    OUTSTANDING,
    RESP_OKAY,
    Axi4Signature,
    next_burst,
    request_layout,
)

__all__ = ["AxiReader"]


class AxiReader(wiring.Component):
    """Reads ``words`` consecutive bus words from byte address ``addr`` (word aligned).

    Bursts of up to ``max_burst`` beats (default :data:`MAX_BURST`), INCR, never crossing a
    4 KiB boundary (an AXI rule). Up to ``outstanding`` bursts are requested ahead of the
    data (one ID, so the memory returns them in order): a burst's address goes out while the
    previous ones' beats still stream, so a long request moves a beat per cycle past its
    first burst and a memory's read latency is hidden up to ``(outstanding - 1)`` bursts.

    Parameters
    ----------
    data_width : int
        Bits of a bus word (a beat).
    max_burst : int
        Longest burst, 1 to 256 beats.
    outstanding : int
        Bursts in flight at most, 1 to 16 (default :data:`~hw.top.axi.OUTSTANDING`; 1: the
        next burst's address waits for the last beat of the previous one).

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
    A burst's size is registered the cycle after its address is known (the request taken,
    or the previous AR handshake), its AR goes out the cycle after: one AR per 2 cycles.
    With a memory answering an AR ``lat`` cycles after its handshake, the first beat comes
    ``2 + lat`` cycles after the request is taken, then one beat per cycle while bursts of
    at least 2 beats keep coming. A 64-bit address, two 32-bit counts (words to request,
    words to deliver), a burst size, a count of bursts in flight.
    """

    def __init__(self, *, data_width: int = 32, max_burst: int = MAX_BURST,
                 outstanding: int = OUTSTANDING):
        if not 1 <= max_burst <= 256:
            raise ValueError(f"max_burst must be in 1..256 (AXI4 INCR), got {max_burst!r}")
        if not 1 <= outstanding <= 16:
            raise ValueError(f"outstanding must be in 1..16 bursts, got {outstanding!r}")
        self.data_width, self.max_burst, self.outstanding = data_width, max_burst, outstanding
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
        addr = Signal(64)  # the next burst's address
        to_ask = Signal(32)  # words not yet requested with an AR
        to_give = Signal(32)  # words not yet delivered on ``data``
        burst = Signal(range(self.max_burst + 1))
        sized = Signal()  # ``burst`` holds the size of the burst at ``addr``
        in_flight = Signal(range(self.outstanding + 1))
        m.d.comb += [
            axi.arsize.eq(axi.signature.size),
            axi.arburst.eq(BURST_INCR),
            axi.araddr.eq(addr),
            axi.arlen.eq(burst - 1),
            self.data.payload.eq(axi.rdata),
        ]
        idle = to_give == 0
        m.d.comb += self.req.ready.eq(idle)
        with m.If(self.req.valid & idle):
            m.d.sync += [addr.eq(self.req.payload.addr), to_ask.eq(self.req.payload.words),
                         to_give.eq(self.req.payload.words)]
        # AR: size the burst at ``addr``, then request it while fewer than ``outstanding``
        # bursts are in flight
        ar_done = Signal()
        with m.If((to_ask != 0) & ~sized):
            m.d.sync += [burst.eq(next_burst(addr, to_ask, beat_bytes, self.max_burst)),
                         sized.eq(1)]
        with m.If(sized & (in_flight != self.outstanding)):
            m.d.comb += axi.arvalid.eq(1)
            with m.If(axi.arready):
                m.d.comb += ar_done.eq(1)
                m.d.sync += [addr.eq(addr + burst * beat_bytes), to_ask.eq(to_ask - burst),
                             sized.eq(0)]
        # R: the beats in order, each burst's last one retiring it
        r_last = Signal()
        m.d.comb += [self.data.valid.eq(axi.rvalid & ~idle),
                     axi.rready.eq(self.data.ready & ~idle)]
        with m.If(axi.rvalid & axi.rready):
            m.d.sync += to_give.eq(to_give - 1)
            m.d.comb += r_last.eq(axi.rlast)
            with m.If(axi.rresp != RESP_OKAY):
                m.d.sync += self.error.eq(1)
        m.d.sync += in_flight.eq(in_flight + ar_done - r_last)
        return m
