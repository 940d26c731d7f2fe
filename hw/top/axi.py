"""AXI4 and AXI4-Lite port signatures (the Vitis RTL-kernel host interface).

Members follow the AXI names in lower case, from the master's side (``Out`` = driven by the
master). Emitted Verilog ports are ``<port>__<member>`` (for example
``m_axi_gmem__araddr``); cocotbext-axi finds them with the prefix ``"<port>_"``.
"""

from __future__ import annotations

from amaranth import Mux
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AxiLiteSignature", "Axi4Signature", "RESP_OKAY", "BURST_INCR", "MAX_BURST",
           "OUTSTANDING", "request_layout", "next_burst"]

RESP_OKAY = 0
BURST_INCR = 1
MAX_BURST = 16  #: beats per burst (AXI4 allows 256; 16 keeps the bus fair between directions)
#: read bursts a reader has in flight at most: their addresses go out while earlier bursts'
#: beats stream, hiding a memory's latency up to 3 bursts (48 words on the 32-bit master,
#: 3 x 64 beats on a 64-byte weight port)
OUTSTANDING = 4


def request_layout() -> data.StructLayout:
    """A DMA request: ``words`` bus words from byte address ``addr`` (word aligned)."""
    return data.StructLayout({"addr": 64, "words": 32})


def next_burst(addr, left, beat_bytes: int, max_burst: int = MAX_BURST):
    """Beats of the next burst: at most ``max_burst``, the ``left`` words, and what fits
    before the next 4 KiB boundary (a burst must not cross one)."""
    to_page = (4096 - addr[:12]) // beat_bytes
    capped = Mux(left < max_burst, left, max_burst)
    return Mux(to_page < capped, to_page, capped)


class AxiLiteSignature(wiring.Signature):
    """AXI4-Lite, master's view: 32-bit data, ``addr_width``-bit byte addresses."""

    def __init__(self, addr_width: int = 8):
        self.addr_width = addr_width
        super().__init__({
            "awaddr": Out(addr_width), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(32), "wstrb": Out(4), "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arvalid": Out(1), "arready": In(1),
            "rdata": In(32), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })


class Axi4Signature(wiring.Signature):
    """AXI4 with INCR bursts, master's view: ``data_width``-bit data, 64-bit addresses, 1-bit
    ids (always 0: one transaction stream per direction, in order)."""

    def __init__(self, data_width: int = 32, addr_width: int = 64):
        if data_width % 8 or data_width < 32:
            raise ValueError(f"AXI data width must be a multiple of 8 and >= 32, got "
                             f"{data_width!r}")
        self.data_width, self.addr_width = data_width, addr_width
        size = (data_width // 8).bit_length() - 1
        self.size = size  # AxSIZE: log2(bytes per beat)
        super().__init__({
            "awid": Out(1), "awaddr": Out(addr_width), "awlen": Out(8), "awsize": Out(3),
            "awburst": Out(2), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
            "wvalid": Out(1), "wready": In(1),
            "bid": In(1), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "arid": Out(1), "araddr": Out(addr_width), "arlen": Out(8), "arsize": Out(3),
            "arburst": Out(2), "arvalid": Out(1), "arready": In(1),
            "rid": In(1), "rdata": In(data_width), "rresp": In(2), "rlast": In(1),
            "rvalid": In(1), "rready": Out(1),
        })
