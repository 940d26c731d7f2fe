"""N:M sparse-dense (and dense-dense) matrix engine: an R x C output-stationary PE array."""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.config import AcceleratorConfig
from hw.lib.checks import require_config
from hw.spmm.pe import ProcessingElement
from hw.spmm.pe_pair import PackedPEPair

__all__ = ["SpmmEngine", "engine_layouts"]


def engine_layouts(config: AcceleratorConfig) -> dict[str, data.Layout]:
    """Payload layouts of the engine's streams for ``config`` (benches pack with these)."""
    R, C, M = config.pe_rows, config.pe_cols, config.m
    return {
        "cmd": data.StructLayout({
            "n": unsigned(M.bit_length()),  # 1..M; N == M is dense (indices ignored)
            "groups": unsigned((config.max_k // M).bit_length()),  # G = K_padded / M, >= 1
            "act_unsigned": unsigned(1),  # activations are uint8 (softmax probabilities)
        }),
        "w": data.ArrayLayout(
            data.StructLayout({"value": signed(8), "index": unsigned(config.index_bits)}), R),
        "a": data.ArrayLayout(data.ArrayLayout(unsigned(8), M), C),  # raw bytes, see act_unsigned
        "o": data.ArrayLayout(signed(32), R),
    }


class SpmmEngine(wiring.Component):
    """R x C output-stationary PE array computing int32 tiles of ``W (R x K) . X^T (K x C)``.

    One *tile* is ``R`` weight rows (output channels) by ``C`` tokens over a reduction of
    ``G`` groups of ``M``. Row ``r`` holds exactly ``N`` non-zeros per group (N:M), so every
    row steps in lock-step: a tile is ``G * N`` steps, one per cycle. In step ``(g, t)`` PE
    ``(r, c)`` multiplies row ``r``'s ``t``-th stored weight of group ``g`` by the activation
    of token ``c`` that the weight's ``log2(M)``-bit index selects among the group's ``M``
    (an M-to-1 mux), and accumulates into int32. With ``N == M`` (dense) the index is the
    slot itself, which serves the dense-dense products Q.K^T and P.V.

    Parameters
    ----------
    config : AcceleratorConfig
        ``pe_rows`` (R), ``pe_cols`` (C), ``m`` (M), ``max_k`` (largest ``G * M``) and
        ``macs_per_dsp``: with 2, the PEs of columns ``2k`` and ``2k + 1`` of a row are one
        :class:`~hw.spmm.pe_pair.PackedPEPair` (one multiplier for both; same cycles).

    Ports (``amaranth.lib.stream``; layouts from :func:`engine_layouts`)
    ------------------------------------------------------------------
    cmd : In, ``{n, groups, act_unsigned}``
        One beat per tile: ``N`` (1..M, ``M`` = dense), ``G`` >= 1, and whether activations
        are uint8 (probabilities of P.V) instead of int8. Taken while the previous tile's last
        step is taken, so tiles run back to back.
    w : In, R x ``{value: int8, index: log2(M) bits}``
        One beat per step: row ``r``'s stored weight and its index, groups in order, the
        ``N`` slots of a group consecutive.
    a : In, C x M bytes
        One beat per group (taken with the group's first weight beat): the group's ``M``
        activations of each of the ``C`` tokens.
    o : Out, R x int32
        ``C`` beats per tile, token ``0`` first: the tile's column ``c`` (all R channels).

    Latency / throughput / resources
    --------------------------------
    * A tile of ``G * N`` steps takes ``G * N`` cycles of input (full rate). Its sums are
      captured into a shadow buffer 2 cycles after its last step is taken, and its ``C``
      output beats follow, one per cycle: with no stalls the last output beat is taken
      ``G * N + C + 1`` cycles after the tile's first step is taken.
    * Tiles stream back to back with no bubble while ``G * N >= C``: ``T`` such tiles take
      ``T * G * N + C + 1`` cycles (first step to last output). When ``G * N < C`` the
      array waits for the drain; :func:`sw.perf.engine.engine_cycles` models both exactly.
    * Resources: ``R * C / macs_per_dsp`` multipliers, i.e. DSPs (int8 x int9, or with
      ``macs_per_dsp = 2`` int8 x int27 of two packed activations: one DSP48E2 per pair),
      ``R * C`` M-to-1 byte muxes, ``2 * R * C`` registers of ``config.sum_bits`` (accumulator
      and shadow: the fewest bits that hold every int32 sum the config's reductions can form,
      28 for ``max_k = 4096``; the ``o`` beats sign-extend them to int32).
    * Backpressure: every stage holds while a finished tile waits for the shadow buffer
      (still draining); ``w.ready``/``a.ready``/``cmd.ready`` then fall in the same cycle.
      ``o.ready`` reaches them through one AND gate (the drain's last beat frees the shadow
      buffer in the cycle it is taken), never through the PE array.
    """

    #: cycles from the last step taken to the tile's sums in the shadow buffer
    CAPTURE_LATENCY = 2

    def __init__(self, *, config: AcceleratorConfig):
        require_config(self, config)
        self.config = config
        layouts = engine_layouts(config)
        super().__init__({
            "cmd": In(stream.Signature(layouts["cmd"])),
            "w": In(stream.Signature(layouts["w"])),
            "a": In(stream.Signature(layouts["a"])),
            "o": Out(stream.Signature(layouts["o"])),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        R, C, M = cfg.pe_rows, cfg.pe_cols, cfg.m
        cmd_l = engine_layouts(cfg)["cmd"]

        # -- sequencing: current tile's command and step counters --------------------------------
        cur = Signal(cmd_l)
        loaded = Signal()
        slot = Signal(range(M))
        group = Signal(cmd_l["groups"].shape)
        need_act = slot == 0
        last_slot = slot == cur.n - 1
        last_group = group == cur.groups - 1
        last = last_slot & last_group
        first = (slot == 0) & (group == 0)
        dense = cur.n == M

        advance = Signal()
        step = Signal()
        m.d.comb += [
            self.w.ready.eq(advance & loaded & (~need_act | self.a.valid)),
            self.a.ready.eq(advance & loaded & need_act & self.w.valid),
            step.eq(self.w.valid & self.w.ready),
            self.cmd.ready.eq(~loaded | (step & last)),
        ]
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [cur.eq(self.cmd.payload), loaded.eq(1), slot.eq(0), group.eq(0)]
        with m.Elif(step):
            with m.If(last):
                m.d.sync += loaded.eq(0)
            with m.If(last_slot):
                m.d.sync += [slot.eq(0), group.eq(group + 1)]
            with m.Else():
                m.d.sync += slot.eq(slot + 1)

        # -- stage 1: registered weights, selects and the group's activations ---------------------
        v1, first1, last1 = Signal(), Signal(), Signal()
        wval1 = [Signal(signed(8), name=f"w1_{r}") for r in range(R)]
        sel1 = [Signal(range(M), name=f"sel1_{r}") for r in range(R)]
        act1 = [[Signal(8, name=f"a1_{c}_{j}") for j in range(M)] for c in range(C)]
        uns1 = Signal()  # the group's bytes are uint8 (the PEs widen the selected one)
        with m.If(advance):
            m.d.sync += [v1.eq(step), first1.eq(first), last1.eq(last)]
            with m.If(step):
                for r in range(R):
                    lane = self.w.payload[r]
                    m.d.sync += [
                        wval1[r].eq(lane.value),
                        sel1[r].eq(Mux(dense, slot, lane.index)),
                    ]
            with m.If(self.a.valid & self.a.ready):
                m.d.sync += uns1.eq(cur.act_unsigned)
                for c in range(C):
                    for j in range(M):
                        m.d.sync += act1[c][j].eq(self.a.payload[c][j])

        # -- stages 2 and 3: the PEs (mux + multiply, then accumulate) --------------------------
        v2, first2, last2 = Signal(), Signal(), Signal()
        with m.If(advance):
            m.d.sync += [v2.eq(v1), first2.eq(first1), last2.eq(last1)]
        full = Signal()
        col = Signal(range(C))
        drain_last = self.o.valid & self.o.ready & (col == C - 1)
        capture = v2 & last2
        m.d.comb += advance.eq(~(capture & full & ~drain_last))

        S = cfg.sum_bits  # accumulators and shadow registers; the output beats sign-extend
        shadow = [[Signal(signed(S), name=f"sh_{r}_{c}") for c in range(C)] for r in range(R)]
        for r in range(R):
            if cfg.macs_per_dsp == 2:  # columns (2k, 2k + 1) share one packed multiplier
                for c in range(0, C, 2):
                    m.submodules[f"pe_{r}_{c}_{c + 1}"] = pair = PackedPEPair(m=M, width=S)
                    m.d.comb += [
                        pair.en.eq(advance),
                        pair.weight.eq(wval1[r]),
                        pair.sel.eq(sel1[r]),
                        pair.act_unsigned.eq(uns1),
                        pair.acts[0].eq(Cat(*act1[c])),
                        pair.acts[1].eq(Cat(*act1[c + 1])),
                        pair.accumulate.eq(v2),
                        pair.first.eq(first2),
                    ]
                    with m.If(advance & capture):
                        m.d.sync += [shadow[r][c].eq(pair.total[0]),
                                     shadow[r][c + 1].eq(pair.total[1])]
                continue
            for c in range(C):  # macs_per_dsp == 1: one multiplier per PE
                m.submodules[f"pe_{r}_{c}"] = pe = ProcessingElement(m=M, width=S)
                m.d.comb += [
                    pe.en.eq(advance),
                    pe.weight.eq(wval1[r]),
                    pe.sel.eq(sel1[r]),
                    pe.act_unsigned.eq(uns1),
                    pe.acts.eq(Cat(*act1[c])),
                    pe.accumulate.eq(v2),
                    pe.first.eq(first2),
                ]
                with m.If(advance & capture):
                    m.d.sync += shadow[r][c].eq(pe.total)

        # -- drain: shift the shadow columns out, token 0 first -----------------------------------
        m.d.comb += self.o.valid.eq(full)
        for r in range(R):
            m.d.comb += self.o.payload[r].eq(shadow[r][0])
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += col.eq(Mux(col == C - 1, 0, col + 1))
            with m.If(col == C - 1):
                m.d.sync += full.eq(0)
            with m.If(~(advance & capture)):
                for r in range(R):
                    for c in range(C - 1):
                        m.d.sync += shadow[r][c].eq(shadow[r][c + 1])
        with m.If(advance & capture):
            m.d.sync += full.eq(1)
        return m
