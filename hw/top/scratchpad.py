"""The accelerator's on-chip scratchpad: 32-bit words in banks, ports ``spm_lanes`` words wide."""

from __future__ import annotations

from amaranth import Array, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.config import AcceleratorConfig
from hw.lib.checks import require_config

__all__ = ["Scratchpad"]


class Scratchpad(wiring.Component):
    """``spm_kib`` KiB of 32-bit words with byte enables, in ``L = config.spm_lanes`` banks:
    word ``a`` lives in bank ``a % L`` at row ``a // L``. Every port is ``L`` words wide: an
    access at word address ``addr`` covers words ``addr .. addr + L - 1``, lane ``i`` being
    word ``addr + i``, at any alignment (``L`` consecutive words sit in ``L`` distinct banks).
    A 32-bit client drives and reads lane 0 only; the other lanes' byte enables stay low.
    Lanes past the scratchpad's end wrap to its start: a client must not enable them.

    Ports
    -----
    w_addr : In(word address); w_data : In(32 L); w_en : In(4 L)
        The write port: lane ``i`` is ``w_data[32 i : 32 i + 32]``, its byte enables
        ``w_en[4 i : 4 i + 4]``.
    ra_addr, rb_addr : In(word address); ra_en, rb_en : In(1); ra_data, rb_data : Out(32 L)
        Two read ports: data the cycle after ``en``, held while ``en`` is low; a read in the
        cycle of a write to the same word returns the old word.

    Latency / throughput / resources
    --------------------------------
    Reads: 1 cycle; ``L`` words per port per cycle, writes likewise. ``L`` memories of
    ``spm_kib * 256 / L`` x 32 bits (one write and two read ports each); with ``L > 1`` a
    lane rotator per port (``L`` multiplexers of ``L`` x 32 bits; 4-bit ones for the byte
    enables) and an incrementer of the row address per bank. ``L = 1`` is one memory.
    """

    def __init__(self, *, config: AcceleratorConfig):
        require_config(self, config)
        self.config = config
        L = config.spm_lanes
        aw = (config.spm_bytes // 4 - 1).bit_length() or 1
        super().__init__({
            "w_addr": In(aw), "w_data": In(32 * L), "w_en": In(4 * L),
            "ra_addr": In(aw), "ra_en": In(1), "ra_data": Out(32 * L),
            "rb_addr": In(aw), "rb_en": In(1), "rb_data": Out(32 * L),
        })

    def elaborate(self, platform):
        m = Module()
        L = self.config.spm_lanes
        words = self.config.spm_bytes // 4
        reads = [(self.ra_addr, self.ra_en, self.ra_data), (self.rb_addr, self.rb_en,
                                                             self.rb_data)]
        if L == 1:
            m.submodules.mem = mem = Memory(shape=32, depth=words, init=[])
            wp = mem.write_port(granularity=8)
            m.d.comb += [wp.addr.eq(self.w_addr), wp.data.eq(self.w_data), wp.en.eq(self.w_en)]
            for addr, en, data in reads:
                rp = mem.read_port()
                m.d.comb += [rp.addr.eq(addr), rp.en.eq(en), data.eq(rp.data)]
            return m

        s = L.bit_length() - 1
        banks = [Memory(shape=32, depth=words // L, init=[]) for _ in range(L)]
        for b, mem in enumerate(banks):
            m.submodules[f"bank{b}"] = mem

        def row_of(addr, b):
            """Bank ``b``'s row in an access at ``addr``: the next row for the banks before
            ``addr``'s own (its lanes wrapped past bank L - 1)."""
            return addr[s:] + (addr[:s] > b)

        w_lanes = Array(self.w_data.word_select(i, 32) for i in range(L))
        w_ens = Array(self.w_en.word_select(i, 4) for i in range(L))
        for b, mem in enumerate(banks):  # bank b takes lane (b - addr) mod L
            wp = mem.write_port(granularity=8)
            lane = (b - self.w_addr[:s])[:s]
            m.d.comb += [wp.addr.eq(row_of(self.w_addr, b)), wp.data.eq(w_lanes[lane]),
                         wp.en.eq(w_ens[lane])]
        for addr, en, data in reads:
            first = Signal(s)  # the bank of lane 0 of the data being read out
            ports = [mem.read_port() for mem in banks]
            for b, rp in enumerate(ports):
                m.d.comb += [rp.addr.eq(row_of(addr, b)), rp.en.eq(en)]
            with m.If(en):
                m.d.sync += first.eq(addr[:s])
            out = Array(rp.data for rp in ports)
            for i in range(L):
                m.d.comb += data.word_select(i, 32).eq(out[(first + i)[:s]])
        return m
