"""The accelerator kernel: a command processor running a Program from device memory.

The host interface and the command processor's contract (:mod:`sw.compiler.isa`): AXI4-Lite
control, an AXI4 master to device memory, the program header and per-command checks, the
scratchpad, and every command: ``LOAD`` / ``STORE`` / ``END`` here, ``ADD`` / ``LAYERNORM``
/ ``ADD_LAYERNORM`` / ``GELU`` through :class:`~hw.top.vector_ops.VectorOps`, ``LINEAR`` /
``QK_SOFTMAX`` / ``PV`` through :class:`~hw.top.engine_ops.EngineOps`. Commands run one after
another, but for a ``QK_SOFTMAX``'s softmax rows, which run on after its command
(``eng.sm_busy``), and a ``PV``'s or ``LINEAR``'s results, which go out after it
(``eng.wo_busy``): the next command starts beside them only if it is a good ``QK_SOFTMAX``
(beside softmax rows) or ``PV`` (beside a ``PV``'s results, or beside softmax rows once their
scores are all written: ``eng.sm_scored``; its results then wait for the rows) that reads
none of the bytes they write (CHECK compares its query, key and mask, or P and V, ranges
with them), or a good vector command beside results (its parameters load, its stream
gathers and scatters none of the bytes they may still write, its writes wait for theirs:
``vec.wr_lo`` / ``wr_hi`` / ``w_busy``); any other command, ``END`` and any fault wait for
them. So every
value and status is still that of running the commands one by one:
:func:`sw.driver.executor.execute`.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from hw.config import AcceleratorConfig
from hw.lib.checks import require_config
from sw.compiler.isa import (
    CMD_WORDS,
    HEADER_WORDS,
    LN_RECORD,
    MAGIC,
    RQ_RECORD,
    VERSION,
    WEIGHT_BANKS,
    Op,
    Status,
    buffers,
    config_fingerprint,
)
from sw.ref.fixedpoint import MAX_SHIFT, MULT_BITS
from sw.ref.layernorm import SQRT_FRAC
from sw.ref.quant import ADD_MULT_BITS

from .axi import Axi4Signature, AxiLiteSignature
from .axi_reader import AxiReader
from .axi_writer import AxiWriter
from .control import ADDR_WIDTH, ControlRegs
from .engine_ops import EngineOps
from .scratchpad import Scratchpad
from .vector_ops import VectorOps

__all__ = ["Accelerator"]
_NO_COMMAND = 0xFFFF_FFFF  # COMMAND register value for header errors (-1)
_PRODUCTS = 5  #: most products one command's checks need (LINEAR)
_MUL_LATENCY = 2  #: operands registered, then the product


def _overlap(a, b):
    """Whether byte ranges ``a`` and ``b`` (``(start, end)``) share a byte."""
    return (a[0] < b[1]) & (b[0] < a[1])


def _times(x, c: int):
    """``x * c`` for a constant ``c`` as shifts and adds (no multiplier block)."""
    terms = [x << i for i in range(c.bit_length()) if c >> i & 1]
    return sum(terms[1:], terms[0]) if terms else Const(0)


def _wire_axi(m, bus, read_side, write_side):
    """Drive the AXI4 master port ``bus`` from a reader's AR/R channels and a writer's AW/W/B
    channels (``write_side`` None: a read-only port, its write channels left idle)."""
    for name, member in bus.signature.members.items():
        src = read_side if name.startswith(("ar", "r")) else write_side
        if src is None:
            continue
        port = getattr(bus, name)
        if member.flow == Out:
            m.d.comb += port.eq(getattr(src, name))
        else:
            m.d.comb += getattr(src, name).eq(port)


def _serve(reader, req, data, base):
    """Statements giving a datapath's ``req`` / ``data`` streams to ``reader``, its byte
    offsets taken relative to the buffer at ``base``."""
    return [reader.req.valid.eq(req.valid), reader.req.payload.addr.eq(base + req.payload.addr),
            reader.req.payload.words.eq(req.payload.words), req.ready.eq(reader.req.ready),
            data.valid.eq(reader.data.valid), data.payload.eq(reader.data.payload),
            reader.data.ready.eq(data.ready)]


def _round_up(x, granule: int):
    """``x`` rounded up to a multiple of a power of two ``granule``."""
    return (x + granule - 1) & ~(granule - 1)


class _RowBlocks:
    """``ceil(rows / R)`` for a 32-bit ``rows`` and a constant ``R = D 2^s`` (``D`` odd,
    ``s >= 3``) through the check's 32 x 32 multiplier: ``y = ceil(rows / 2^s) + D - 1`` (at
    most ``2^29 + D - 1``) times ``mult = ceil(2^k / D)``, shifted right by ``k = 33 - s +
    bitlen(D)``, is ``floor(y / D)`` exactly, since ``y (mult D - 2^k) < y D < 2^k``; a
    power-of-two ``R`` multiplies by 1."""

    def __init__(self, R: int):
        s = (R & -R).bit_length() - 1
        d = R >> s
        if s < 3:
            raise ValueError(f"R = {R}: the reciprocal needs a multiple of 8")
        self.s, self.d = s, d
        self.k = 0 if d == 1 else 33 - s + d.bit_length()
        self.mult = -(-(1 << self.k) // d)
        assert self.mult < 1 << 32

    def operand(self, rows):
        return ((rows + (1 << self.s) - 1) >> self.s) + (self.d - 1)

    def blocks(self, product):
        return product >> self.k


def _ln_shape_bad(cfg: AcceleratorConfig, hidden, in_bits, sqrt_frac, params_off):
    """A LayerNorm's (LAYERNORM, ADD_LAYERNORM) fields ``cfg`` cannot run: input width,
    hidden size, the square root's fraction bits, a records offset off the weight port."""
    return (((in_bits != 8) & (in_bits != 16)) | ((in_bits == 8) & (not cfg.layernorm_int8))
            | (hidden > cfg.max_hidden) | (sqrt_frac != Mux(in_bits == 8, SQRT_FRAC, 0))
            | (params_off[:2] != 0)
            | ((params_off & (cfg.weight_port_bytes - 1) != 0) if cfg.wide_ln_params else 0))


def _bytes(count, bits):
    """``count * (bits >> 3)`` where a valid command has ``bits`` 8 or 16 (other widths are
    refused as BAD_SHAPE before any range is looked at, so their value does not matter)."""
    return Mux(bits == 16, count << 1, count)


class Accelerator(wiring.Component):
    """The nmaccel kernel for one :class:`AcceleratorConfig`.

    Parameters
    ----------
    config : AcceleratorConfig
        ``spm_kib`` sizes the scratchpad; the config's fingerprint is compared with every
        Program's header (a Program compiled for another config stops with BAD_HEADER).

    Ports
    -----
    s_axi_control : In(AxiLiteSignature(8))
        Registers of :data:`sw.compiler.isa.REGISTERS`.
    m_axi_gmem : Out(Axi4Signature(32))
        Device memory: reads of the program (unless ``wide_fetch``), params and input
        buffers, writes of the output
        buffer only (STORE's, unless ``wide_store``), each access checked against the
        declared buffer first.
    m_axi_wgt : Out(Axi4Signature(8 * weight_port_bytes))
        Only with ``config.weight_port_bytes``: reads of the LINEAR weights inside the
        params buffer (bursts of up to 256 beats or a 4 KiB page), checked like the rest;
        with ``wide_ln_params`` the LayerNorm records, with ``wide_fetch`` the commands (the
        beats holding each: the last command's up to ``B - 16`` bytes past the Program, inside
        its page), with ``wide_load`` LOAD's input
        (whole beats: up to ``B - 1`` bytes past the checked range, inside its page); with
        ``wide_store`` STORE's writes of the output buffer (whole beats, the bytes outside
        the STORE strobed off). Its write channels stay idle otherwise. Whole beats assume
        the ``program``, ``input`` and ``output`` buffers start on a beat (the drivers place
        buffers on 4 KiB pages; the kernel does not check it).
    m_axi_wgt1 .. m_axi_wgt<P-1> : Out(Axi4Signature(8 * weight_port_bytes))
        With ``config.weight_ports = P > 1``: weight port ``p``'s reads of its bank of LINEAR
        weights in the buffer ``params<p>`` (:mod:`sw.compiler.weight_layout`), checked like
        the rest (a LINEAR reads the same bytes at ``w_off`` of every bank); their write
        channels stay idle.

    Latency / throughput / resources
    --------------------------------
    Per command: a 16-word burst to fetch it (with ``wide_fetch`` the weight-port beats that
    hold it), ``_PRODUCTS + _MUL_LATENCY`` (7) cycles computing
    the range checks' products through one pipelined 32 x 32 multiplier, one cycle to decide,
    then its work. LOAD and STORE move one 32-bit word per cycle inside 16-beat bursts (with
    ``wide_load`` / ``wide_store`` a beat of the weight port per cycle inside its bursts); the
    vector and engine commands as their datapaths' docstrings state. The scratchpad
    (:class:`~hw.top.scratchpad.Scratchpad`) is ``spm_kib`` KiB of 32-bit words with byte
    enables, its ports ``spm_lanes`` words wide: one write port shared by the datapaths (the
    engine and the vector unit use every lane, LOAD and STORE lane 0 or, with ``wide_load``
    / ``wide_store``, a beat's ``B / 4`` lanes), read port A shared by
    the engine, the vector unit's first operand and STORE (one command reads at a time: what
    runs on after a command only writes), read
    port B for ADD's second operand and the engine's second token row (or, with wide ports,
    the word past a staged chunk).
    """

    def __init__(self, *, config: AcceleratorConfig):
        require_config(self, config)
        self.config = config
        super().__init__({
            "s_axi_control": In(AxiLiteSignature(ADDR_WIDTH)),
            "m_axi_gmem": Out(Axi4Signature(32)),
            **({"m_axi_wgt": Out(Axi4Signature(8 * config.weight_port_bytes))}
               if config.weight_port_bytes else {}),
            **{f"m_axi_wgt{p}": Out(Axi4Signature(8 * config.weight_port_bytes))
               for p in range(1, config.weight_ports)},
        })

    def elaborate(self, platform):  # noqa: C901 - one FSM, one state per step
        m = Module()
        cfg = self.config
        spm_bytes = cfg.spm_bytes
        m.submodules.ctrl = ctrl = ControlRegs(buffers=buffers(cfg))
        banks = WEIGHT_BANKS[:cfg.weight_ports - 1]
        m.submodules.reader = reader = AxiReader()
        m.submodules.writer = writer = AxiWriter()
        m.submodules.spm = spm = Scratchpad(config=cfg)
        # STORE's words (or, with wide_store, beats) read from the scratchpad for the writer
        store_bits = 8 * cfg.weight_port_bytes if cfg.wide_store else 32
        m.submodules.store_fifo = sfifo = fifo.SyncFIFOBuffered(width=store_bits, depth=4)
        m.submodules.vec = vec = VectorOps(config=cfg)
        m.submodules.eng = eng = EngineOps(config=cfg)
        # Two read ports. One command reads at a time (softmax rows and PV results that go on
        # after their command only write), so the engine, the vector unit's first
        # operand and STORE share port A (a unit only reads while its command runs, and a
        # read port holds its data while no one reads); port B is ADD's second operand and
        # the engine's second token row or the word past a wide chunk. The ports are
        # spm_lanes words wide: the engine and the vector unit use them whole, LOAD and STORE
        # lane 0 (or a weight-port beat's lanes with wide_load / wide_store).
        store_addr, store_en = Signal(range(spm_bytes // 4)), Signal()
        m.d.comb += [
            spm.ra_en.eq(eng.r_en | vec.ra_en | store_en),
            spm.ra_addr.eq(Mux(eng.r_en, eng.r_addr, Mux(vec.ra_en, vec.ra_addr, store_addr))),
            eng.r_data.eq(spm.ra_data), vec.ra_data.eq(spm.ra_data),
            spm.rb_addr.eq(Mux(eng.r2_en, eng.r2_addr, vec.rb_addr)),
            spm.rb_en.eq(eng.r2_en | vec.rb_en), vec.rb_data.eq(spm.rb_data),
            eng.r2_data.eq(spm.rb_data),
        ]
        wiring.connect(m, wiring.flipped(self.s_axi_control), ctrl.bus)

        _wire_axi(m, self.m_axi_gmem, reader.axi, writer.axi)
        wgt_error = Const(0)
        store_writer = writer  # STORE's
        if cfg.weight_port_bytes:  # its write channels: STORE's with wide_store, else idle
            B = cfg.weight_port_bytes
            Q, lb = B // 4, B.bit_length() - 1  # words and address bits of a beat
            m.submodules.wgt_reader = wgt = AxiReader(data_width=8 * B,
                                                      max_burst=cfg.weight_port_burst)
            if cfg.wide_store:
                m.submodules.wgt_writer = store_writer = AxiWriter(
                    data_width=8 * B, max_burst=cfg.weight_port_burst)
            _wire_axi(m, self.m_axi_wgt, wgt.axi, store_writer.axi if cfg.wide_store else None)
            m.d.comb += _serve(wgt, eng.wgt_req, eng.wgt_data, ctrl.params)
            wgt_error = wgt.error
            for p, bank in enumerate(banks, 1):  # the other weight ports: their own banks
                rd = AxiReader(data_width=8 * B, max_burst=cfg.weight_port_burst)
                m.submodules[f"wgt{p}_reader"] = rd
                _wire_axi(m, getattr(self, f"m_axi_wgt{p}"), rd.axi, None)
                m.d.comb += _serve(rd, getattr(eng, f"wgt{p}_req"),
                                   getattr(eng, f"wgt{p}_data"), getattr(ctrl, bank))
                wgt_error = wgt_error | rd.error

        busy = Signal()
        sm_lo, sm_hi = Signal(33), Signal(33)  # the running softmax rows' bytes (below)
        sm_lo2, sm_hi2 = Signal(33), Signal(33)  # the QK_SOFTMAX's before (rows may wait)
        wo_lo, wo_hi = Signal(33), Signal(33)  # a PV's results' bytes
        # the bytes the results still going out (eng.wo_busy) may write: their commands' output
        # ranges (a LINEAR's or PV's, with a PV's before while its results go out); a vector
        # command beside them reads and writes none of them
        res_lo, res_hi = Signal(33), Signal(33)
        # a vector command beside them gathers and scatters none of those bytes (from the
        # last tile's lowest byte on once it is the only one left), as registered a cycle
        # before; its writes wait for the write-out's
        m.d.sync += [vec.wr_lo.eq(Mux(eng.wo_busy, Mux(eng.wo_tail, eng.wo_lim, res_lo), 0)),
                     vec.wr_hi.eq(Mux(eng.wo_busy, res_hi, 0))]
        m.d.comb += vec.w_busy.eq(eng.wo_writing)
        # the cycle counter and the command index are read by name by the top bench (its trace
        # and progress): ``keep`` holds the names in the simulators' lean netlist
        cycles = Signal(32, attrs={"keep": 1})
        status = Signal(8)  # the status the run ends with, valid with ctrl.done
        index = Signal(32, attrs={"keep": 1})
        count = Signal(32)
        words = Array(Signal(32, name=f"w{k}") for k in range(CMD_WORDS))
        got = Signal(range(CMD_WORDS + 1))
        m.d.comb += [ctrl.busy.eq(busy), ctrl.status.eq(status), ctrl.command.eq(index),
                     ctrl.cycles.eq(cycles)]
        with m.If(busy):
            m.d.sync += cycles.eq(cycles + 1)

        op, f1, f2, f3 = words[0], words[1], words[2], words[3]
        # LOAD: dst, src, bytes; STORE: dst, src, bytes
        nbytes = f3
        nwords = Signal(31)
        last_mask = Signal(4)
        m.d.comb += [nwords.eq((nbytes + 3) >> 2),
                     last_mask.eq(Mux(nbytes[:2] == 0, 0b1111, (Const(1, 4) << nbytes[:2]) - 1))]
        moved = Signal(32)  # words written to the scratchpad (LOAD) or issued from it (STORE)
        pend = Signal()  # a scratchpad read is on its way into the store FIFO

        def finish(code):
            m.d.comb += [status.eq(code), ctrl.done.eq(1)]
            m.d.sync += busy.eq(0)
            m.next = "IDLE"

        def read_words(addr, n, next_state):
            """Request ``n`` words at ``addr`` into ``words``; go on when taken."""
            m.d.comb += [reader.req.valid.eq(1), reader.req.payload.addr.eq(addr),
                         reader.req.payload.words.eq(n)]
            with m.If(reader.req.ready):
                m.d.sync += got.eq(0)
                m.next = next_state

        def read_state(name, n, next_state):
            """A state that stores ``n`` incoming words in ``words``, then goes on."""
            with m.State(name):
                m.d.comb += reader.data.ready.eq(1)
                with m.If(reader.data.valid):
                    m.d.sync += [words[got].eq(reader.data.payload), got.eq(got + 1)]
                    with m.If(got == n - 1):
                        m.next = next_state

        # -- products of the command checks: one 32 x 32 multiplier, operands and product
        # registered (so no wide multiply sits in the CHECK cycle's logic), product k of the
        # command's list (``operands``) ready _MUL_LATENCY cycles after its operands are chosen.
        w = words
        mul_k = Signal(range(_PRODUCTS + _MUL_LATENCY))
        mul_a, mul_b = Signal(32), Signal(32)
        mul_p = Signal(64)
        prods = [Signal(64, name=f"prod{k}") for k in range(_PRODUCTS)]
        groups = (w[4] + cfg.m - 1) // cfg.m
        # LINEAR: groups x n ("gn"); a rows ("a"); out rows ("out"); with one weight port,
        # rows padded to its granule x bank entries per row ("w"), or without one, rows x
        # (groups x n) ("w") and rows x index bytes per row ("idx"); with several, first
        # ("div") ceil(rows / R) row blocks as a multiply by a reciprocal (_RowBlocks), and
        # blocks x bank entries per row ("w")
        lin = ({"gn": 0, "a": 1, "out": 2, "w": 3, "idx": 4} if cfg.weight_ports == 1
               else {"div": 0, "gn": 1, "a": 2, "out": 3, "w": 4})
        lin_operands = {"gn": (groups, w[6]), "a": (w[3] - 1, w[2]), "out": (w[3] - 1, w[11])}
        if cfg.weight_ports > 1:
            rb = _RowBlocks(cfg.pe_rows)
            lin_operands["div"] = (rb.operand(w[5]), rb.mult)
            lin_operands["w"] = (rb.blocks(prods[lin["div"]]), (prods[lin["gn"]] + 3) >> 2)
        elif cfg.weight_port_bytes:  # rows padded to the granule x bank entries per row
            lin_operands["w"] = (_round_up(w[5], cfg.weight_rows_align),
                                 (prods[lin["gn"]] + 3) >> 2)
        else:
            lin_operands["w"] = (w[5], prods[lin["gn"]])
            lin_operands["idx"] = (w[5], (_times(prods[lin["gn"]], cfg.index_bits) + 7) >> 3)
        operands = {
            Op.GELU: [(w[3], w[4])],  # tokens x width
            Op.ADD: [(w[4], w[5])],  # tokens x width
            Op.LAYERNORM: [(w[3], w[4])],  # tokens x hidden
            Op.ADD_LAYERNORM: [(w[4], w[5])],  # tokens x hidden
            Op.LINEAR: [lin_operands[k] for k in sorted(lin_operands, key=lin.get)],
            Op.QK_SOFTMAX: [(w[4] - 1, w[3]), (w[4] - 1, w[10])],
            Op.PV: [(w[5] - 1, w[2]), (w[5] - 1, w[4]), (w[5] - 1, w[9])],
        }
        with m.Switch(op):
            for code, pairs in operands.items():
                with m.Case(code):
                    with m.Switch(mul_k):
                        for k, (a, b) in enumerate(pairs):
                            with m.Case(k):
                                m.d.sync += [mul_a.eq(a), mul_b.eq(b)]
        m.d.sync += mul_p.eq(mul_a * mul_b)
        with m.Switch(mul_k):
            for k in range(_PRODUCTS):
                with m.Case(k + _MUL_LATENCY):
                    m.d.sync += prods[k].eq(mul_p)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(ctrl.start):  # (the engine forgets its cached records)
                    m.d.comb += eng.flush.eq(1)
                    m.d.sync += [busy.eq(1), cycles.eq(1), index.eq(_NO_COMMAND)]
                    m.next = "HEADER"
            with m.State("HEADER"):
                with m.If(ctrl.program_size < 4 * HEADER_WORDS):
                    finish(Status.BAD_HEADER)
                with m.Else():
                    read_words(ctrl.program, HEADER_WORDS, "HEADER_READ")
            read_state("HEADER_READ", HEADER_WORDS, "HEADER_CHECK")
            with m.State("HEADER_CHECK"):
                fits = (4 * HEADER_WORDS + words[2] * (4 * CMD_WORDS)) <= ctrl.program_size
                with m.If(reader.error):
                    finish(Status.BUS_ERROR)
                with m.Elif((words[0] != MAGIC) | (words[1] != VERSION)
                            | (words[3] != config_fingerprint(cfg)) | ~fits):
                    finish(Status.BAD_HEADER)
                with m.Else():
                    m.d.sync += [count.eq(words[2]), index.eq(0)]
                    m.next = "FETCH"
            cmd_at = Signal(32)  # the command's byte offset in the program buffer
            m.d.comb += cmd_at.eq(4 * HEADER_WORDS + index * (4 * CMD_WORDS))
            with m.State("FETCH"):
                with m.If(index == count):
                    finish(Status.NO_END)
                with m.Else():
                    if cfg.wide_fetch:  # the weight-port beats that hold the command
                        m.d.comb += [wgt.req.valid.eq(1),
                                     wgt.req.payload.addr.eq(ctrl.program
                                                             + Cat(Const(0, lb), cmd_at[lb:])),
                                     wgt.req.payload.words.eq(
                                         (cmd_at[:lb] + 4 * CMD_WORDS + B - 1) >> lb)]
                        with m.If(wgt.req.ready):
                            m.d.sync += got.eq(0)
                            m.next = "FETCH_READ"
                    else:
                        read_words(ctrl.program + cmd_at, CMD_WORDS, "FETCH_READ")
            if cfg.wide_fetch:  # beat k's word j is command word k Q + j - o, o the command's
                # first word in its first beat
                with m.State("FETCH_READ"):
                    o_at = cmd_at[2:lb]
                    n_beats = (cmd_at[:lb] + 4 * CMD_WORDS + B - 1) >> lb
                    m.d.comb += wgt.data.ready.eq(1)
                    with m.If(wgt.data.valid):
                        m.d.sync += got.eq(got + 1)
                        offsets = sorted({(4 * HEADER_WORDS + i * 4 * CMD_WORDS) % B // 4
                                          for i in range(B)})
                        for k in range(-(-(4 * (Q - 1) + 4 * CMD_WORDS) // B)):
                            for o in offsets:
                                with m.If((got == k) & (o_at == o)):
                                    for j in range(Q):
                                        g = k * Q + j - o
                                        if 0 <= g < CMD_WORDS:
                                            m.d.sync += words[g].eq(
                                                wgt.data.payload.word_select(j, 32))
                        with m.If(got == n_beats - 1):
                            m.next = "PRODUCTS"
            else:
                read_state("FETCH_READ", CMD_WORDS, "PRODUCTS")
            with m.State("PRODUCTS"):
                # the range checks' products, through one pipelined multiplier (below)
                m.d.sync += mul_k.eq(mul_k + 1)
                with m.If(mul_k == _PRODUCTS + _MUL_LATENCY - 1):
                    m.d.sync += mul_k.eq(0)
                    m.next = "CHECK"
            with m.State("CHECK"):
                # the order of sw.compiler.isa.check_command: opcode, shape, scratchpad, buffer
                spm_addr = Signal(32)
                dram_end = Signal(34)
                dram_size = Signal(32)
                m.d.comb += [spm_addr.eq(f1), dram_end.eq(f2 + nbytes),
                             dram_size.eq(ctrl.input_size)]
                with m.If(op == Op.STORE):
                    m.d.comb += [spm_addr.eq(f2), dram_end.eq(f1 + nbytes),
                                 dram_size.eq(ctrl.output_size)]
                t_w = prods[0]  # tokens x width (GELU, ADD) or tokens x hidden (LAYERNORMs)
                bits_ok = Signal()
                vec_shape_bad = Signal()
                vec_spm_bad = Signal()
                vec_params_bad = Signal()
                with m.Switch(op):
                    with m.Case(Op.GELU):  # src dst tokens width table_off
                        m.d.comb += [
                            vec_shape_bad.eq((w[3] == 0) | (w[4] == 0) | (w[5][:2] != 0)),
                            vec_spm_bad.eq((w[1] + t_w > spm_bytes) | (w[2] + t_w > spm_bytes)),
                            vec_params_bad.eq(w[5] + 256 > ctrl.params_size)]
                    with m.Case(Op.ADD, Op.ADD_LAYERNORM):
                        # ADD: a b out tokens width m_a m_b shift a/b/out bits; ADD_LAYERNORM:
                        # a b dst tokens hidden m_a m_b shift a/b/in bits off eps frac
                        fused = op == Op.ADD_LAYERNORM
                        m.d.comb += bits_ok.eq(
                            ((w[9] == 8) | (w[9] == 16)) & ((w[10] == 8) | (w[10] == 16))
                            & ((w[11] == 8) | (w[11] == 16)))
                        m.d.comb += [
                            vec_shape_bad.eq((w[4] == 0) | (w[5] == 0) | ~bits_ok
                                             | (w[8] > MAX_SHIFT - 1) | (w[6] >= 2**ADD_MULT_BITS)
                                             | (w[7] >= 2**ADD_MULT_BITS)
                                             | ((w[9] == 16) & w[1][0])
                                             | ((w[10] == 16) & w[2][0])
                                             | (~fused & (w[11] == 16) & w[3][0])
                                             | (fused & _ln_shape_bad(cfg, w[5], w[11],
                                                                      w[14], w[12]))),
                            vec_spm_bad.eq((w[1] + _bytes(t_w, w[9]) > spm_bytes)
                                           | (w[2] + _bytes(t_w, w[10]) > spm_bytes)
                                           | (w[3] + Mux(fused, t_w, _bytes(t_w, w[11]))
                                              > spm_bytes)),
                            vec_params_bad.eq(fused & (w[12] + _times(w[5], LN_RECORD)
                                                       > ctrl.params_size))]
                    with m.Case(Op.LAYERNORM):  # src dst tokens hidden in_bits off eps frac
                        m.d.comb += [
                            vec_shape_bad.eq((w[3] == 0) | (w[4] == 0)
                                             | _ln_shape_bad(cfg, w[4], w[5], w[8], w[6])
                                             | ((w[5] == 16) & w[1][0])),
                            vec_spm_bad.eq((w[1] + _bytes(t_w, w[5]) > spm_bytes)
                                           | (w[2] + t_w > spm_bytes)),
                            vec_params_bad.eq(w[6] + _times(w[4], LN_RECORD)
                                              > ctrl.params_size)]
                # engine commands: LINEAR a a_stride tokens k rows n m w_off rq_off out
                # out_stride out_bits gelu table_off; QK q k stride tokens d mask mult shift p
                # p_stride; PV p p_stride v stride tokens d rq_off out out_stride
                eng_shape_bad, eng_spm_bad, eng_params_bad = Signal(), Signal(), Signal()
                wbytes = Signal(65)
                pw = prods[lin["w"]]
                if cfg.weight_port_bytes:  # sw.compiler.weight_layout: 4 (+ index) bytes,
                    # per row of a bank (R / P rows of every block with several ports)
                    rows = 1 if cfg.weight_ports == 1 else cfg.port_rows
                    m.d.comb += wbytes.eq(Mux(w[6] == w[7], _times(pw, 4 * rows), _times(
                        pw, (4 + cfg.index_word_bits // 8) * rows)))
                else:
                    m.d.comb += wbytes.eq(pw + Mux(w[6] == w[7], 0, prods[lin["idx"]]))
                out_row = _bytes(w[5], w[12])  # rows x output bytes
                # QK's query, key and mask bytes; PV's P and V (an engine command's output
                # may overlap none of its inputs: sw.compiler.isa's shape check)
                qk_reads = ((w[1], w[1] + prods[0] + w[5]), (w[2], w[2] + prods[0] + w[5]),
                            (w[6], w[6] + w[4]))
                pv_reads = ((w[1], w[1] + prods[0] + w[5]), (w[3], w[3] + prods[1] + w[6]))
                with m.Switch(op):
                    with m.Case(Op.LINEAR):
                        nm_ok = (w[7] == cfg.m) & (((w[6] >= 1) & (w[6] <= cfg.n_max))
                                                   | (w[6] == cfg.m))
                        m.d.comb += [
                            eng_shape_bad.eq((w[3] == 0) | (w[4] == 0) | (w[5] == 0)
                                             | ((w[12] != 8) & (w[12] != 16)) | ~nm_ok
                                             | (w[4] > cfg.max_k) | (w[2] < w[4])
                                             | (w[11] < out_row) | (w[9][:2] != 0)
                                             | ((w[12] == 16) & (w[10][0] | w[11][0]))
                                             | ((w[8] & max(cfg.weight_port_bytes - 1, 0))
                                                != 0)
                                             | (w[13] > 1) | (w[13][0] & (w[12] != 8))
                                             | (w[14][:2] != 0)
                                             | _overlap((w[10], w[10] + prods[lin["out"]]
                                                         + out_row),
                                                        (w[1], w[1] + prods[lin["a"]] + w[4]))),
                            eng_spm_bad.eq((w[1] + prods[lin["a"]] + w[4] > spm_bytes)
                                           | (w[10] + prods[lin["out"]] + out_row
                                              > spm_bytes)),
                            eng_params_bad.eq((w[8] + wbytes > ctrl.params_size)
                                              | Cat(w[8] + wbytes > getattr(ctrl, f"{b}_size")
                                                    for b in banks).any()
                                              | (w[9] + _times(w[5], RQ_RECORD)
                                                 > ctrl.params_size)
                                              | (w[13][0] & (w[14] + 256 > ctrl.params_size)))]
                    with m.Case(Op.QK_SOFTMAX):
                        m.d.comb += [
                            eng_shape_bad.eq((w[4] == 0) | (w[5] == 0) | (w[4] > cfg.max_row)
                                             | (w[5] > cfg.max_k) | (w[3] < w[5])
                                             | (w[10] < w[4]) | (w[8] > MAX_SHIFT)
                                             | (w[7] >= 2**MULT_BITS)
                                             | Cat(_overlap((w[9], w[9] + prods[1] + w[4]), r)
                                                   for r in qk_reads).any()),
                            eng_spm_bad.eq((w[1] + prods[0] + w[5] > spm_bytes)
                                           | (w[2] + prods[0] + w[5] > spm_bytes)
                                           | (w[6] + w[4] > spm_bytes)
                                           | (w[9] + prods[1] + w[4] > spm_bytes))]
                    with m.Case(Op.PV):
                        m.d.comb += [
                            eng_shape_bad.eq((w[5] == 0) | (w[6] == 0) | (w[5] > cfg.max_row)
                                             | (w[6] > cfg.max_k) | (w[4] < w[6])
                                             | (w[2] < w[5]) | (w[9] < w[6])
                                             | (w[7][:2] != 0)
                                             | Cat(_overlap((w[8], w[8] + prods[2] + w[6]), r)
                                                   for r in pv_reads).any()),
                            eng_spm_bad.eq((w[1] + prods[0] + w[5] > spm_bytes)
                                           | (w[3] + prods[1] + w[6] > spm_bytes)
                                           | (w[8] + prods[2] + w[6] > spm_bytes)),
                            eng_params_bad.eq(w[7] + _times(w[6], RQ_RECORD)
                                              > ctrl.params_size)]
                # the softmax rows of the last QK_SOFTMAX (and of the one before, theirs
                # waiting to start) may still run (eng.sm_busy), writing its probabilities
                # [sm_lo, sm_hi) ([sm_lo2, sm_hi2)): only a good QK_SOFTMAX that reads none of
                # them starts beside them (its scores wait for a free score buffer); any other
                # command, END and any fault wait for them
                good = ~eng_shape_bad & ~eng_spm_bad & ~eng_params_bad & ~reader.error & ~wgt_error
                beside = ((op == Op.QK_SOFTMAX) & good
                          & Cat((hi <= sl) | (lo >= sh) for lo, hi in qk_reads
                                for sl, sh in ((sm_lo, sm_hi), (sm_lo2, sm_hi2))).all())
                # likewise a PV's results may still go out (eng.wo_busy) into [wo_lo, wo_hi):
                # only a good PV that reads none of them (P and V) starts beside them
                pv_beside = ((op == Op.PV) & good
                             & Cat((hi <= wo_lo) | (lo >= wo_hi) for lo, hi in pv_reads).all())
                # and beside softmax rows whose scores are all written (the rows alone use
                # the write port: the PV's results wait for them)
                pv_sm = ((op == Op.PV) & good & eng.sm_scored
                         & Cat((hi <= sm_lo) | (lo >= sm_hi) for lo, hi in pv_reads).all())
                is_eng = (op == Op.LINEAR) | (op == Op.QK_SOFTMAX) | (op == Op.PV)
                is_vec = ((op == Op.GELU) | (op == Op.ADD) | (op == Op.LAYERNORM)
                          | (op == Op.ADD_LAYERNORM))
                # and a good vector command beside them: its parameters load, its stream
                # keeps off the bytes they may still write (vec.wr_lo, vec.wr_hi)
                vec_beside = (is_vec & ~vec_shape_bad & ~vec_spm_bad & ~vec_params_bad
                              & ~reader.error & ~wgt_error)
                with m.If((eng.sm_busy & ~beside & ~pv_sm)
                          | (eng.wo_busy & ~pv_beside & ~vec_beside)):
                    pass
                with m.Elif(reader.error | wgt_error):
                    finish(Status.BUS_ERROR)
                with m.Elif(op > max(Op)):
                    finish(Status.BAD_OPCODE)
                with m.Elif(op == Op.END):
                    finish(Status.OK)
                with m.Elif(is_eng | is_vec):
                    with m.If(Mux(is_eng, eng_shape_bad, vec_shape_bad)):
                        finish(Status.BAD_SHAPE)
                    with m.Elif(Mux(is_eng, eng_spm_bad, vec_spm_bad)):
                        finish(Status.OUT_OF_SPM)
                    with m.Elif(Mux(is_eng, eng_params_bad, vec_params_bad)):
                        finish(Status.OUT_OF_BUFFER)
                    with m.Elif(is_eng):
                        m.next = "ENG_START"
                    with m.Else():
                        m.next = "VEC_START"
                with m.Elif((nbytes == 0) | (f1[:2] != 0) | (f2[:2] != 0)):
                    finish(Status.BAD_SHAPE)
                with m.Elif(spm_addr + nbytes > spm_bytes):
                    finish(Status.OUT_OF_SPM)
                with m.Elif(dram_end > dram_size):
                    finish(Status.OUT_OF_BUFFER)
                with m.Elif(op == Op.LOAD):
                    m.d.sync += moved.eq(0)
                    m.next = "LOAD_REQ"
                with m.Else():
                    m.d.sync += [moved.eq(0), pend.eq(0)]
                    m.next = "STORE_REQ"
            with m.State("ENG_START"):
                w = words
                j = eng.job.payload
                with m.Switch(op):
                    with m.Case(Op.LINEAR):
                        m.d.comb += [j.act.eq(w[1]), j.act_stride.eq(w[2]), j.tokens.eq(w[3]),
                                     j.k.eq(w[4]), j.rows.eq(w[5]), j.n.eq(w[6]),
                                     j.w.eq(w[8]), j.rq_off.eq(w[9]), j.out.eq(w[10]),
                                     j.out_stride.eq(w[11]), j.out_bits.eq(w[12]),
                                     j.gelu.eq(w[13]), j.table.eq(w[14])]
                    with m.Case(Op.QK_SOFTMAX):
                        m.d.comb += [j.act.eq(w[1]), j.act_stride.eq(w[3]), j.w.eq(w[2]),
                                     j.w_stride.eq(w[3]), j.tokens.eq(w[4]), j.k.eq(w[5]),
                                     j.rows.eq(w[4]), j.mask.eq(w[6]), j.mult.eq(w[7]),
                                     j.shift.eq(w[8]), j.out.eq(w[9]), j.out_stride.eq(w[10]),
                                     j.out_bits.eq(8), j.n.eq(cfg.m)]
                    with m.Case(Op.PV):
                        m.d.comb += [j.act.eq(w[1]), j.act_stride.eq(w[2]), j.w.eq(w[3]),
                                     j.w_stride.eq(w[4]), j.tokens.eq(w[5]), j.k.eq(w[5]),
                                     j.rows.eq(w[6]), j.rq_off.eq(w[7]), j.out.eq(w[8]),
                                     j.out_stride.eq(w[9]), j.out_bits.eq(8), j.n.eq(cfg.m)]
                m.d.comb += [j.op.eq(op), eng.job.valid.eq(1)]
                with m.If(eng.job.ready):
                    with m.If(op == Op.QK_SOFTMAX):  # where its softmax rows write
                        m.d.sync += [sm_lo.eq(w[9]), sm_hi.eq(w[9] + prods[1] + w[4]),
                                     sm_lo2.eq(sm_lo), sm_hi2.eq(sm_hi)]
                    lo, hi = Signal(33), Signal(33)  # where a PV's or LINEAR's results go
                    m.d.comb += [lo.eq(Mux(op == Op.PV, w[8], w[10])),
                                 hi.eq(Mux(op == Op.PV, w[8] + prods[2] + w[6],
                                           w[10] + prods[lin["out"]] + out_row))]
                    with m.If(op == Op.PV):
                        m.d.sync += [wo_lo.eq(lo), wo_hi.eq(hi)]
                    with m.If(op == Op.LINEAR):  # (no PV starts beside a LINEAR's results)
                        m.d.sync += [wo_lo.eq(0), wo_hi.eq(2**33 - 1)]
                    with m.If((op == Op.PV) | (op == Op.LINEAR)):  # (with a PV's before)
                        m.d.sync += [res_lo.eq(Mux(eng.wo_busy & (res_lo < lo), res_lo, lo)),
                                     res_hi.eq(Mux(eng.wo_busy & (res_hi > hi), res_hi, hi))]
                    m.next = "ENG_RUN"
            with m.State("ENG_RUN"):
                m.d.comb += _serve(reader, eng.dram_req, eng.dram_data, ctrl.params)
                m.d.comb += [spm.w_addr.eq(eng.w_addr), spm.w_data.eq(eng.w_data),
                             spm.w_en.eq(eng.w_en)]
                with m.If(eng.done):
                    m.next = "NEXT"
            with m.State("VEC_START"):
                w = words
                j = vec.job.payload
                with m.Switch(op):
                    with m.Case(Op.GELU):
                        m.d.comb += [j.a.eq(w[1]), j.out.eq(w[2]), j.tokens.eq(w[3]),
                                     j.width.eq(w[4]), j.a_bits.eq(8), j.out_bits.eq(8)]
                    with m.Case(Op.ADD, Op.ADD_LAYERNORM):  # words 1..10 alike
                        m.d.comb += [j.a.eq(w[1]), j.b.eq(w[2]), j.out.eq(w[3]),
                                     j.tokens.eq(w[4]), j.width.eq(w[5]), j.m_a.eq(w[6]),
                                     j.m_b.eq(w[7]), j.shift.eq(w[8]), j.a_bits.eq(w[9]),
                                     j.b_bits.eq(w[10])]
                        with m.If(op == Op.ADD):
                            m.d.comb += j.out_bits.eq(w[11])
                        with m.Else():  # the sums' width, then the LayerNorm's eps
                            m.d.comb += [j.ln_bits.eq(w[11]), j.out_bits.eq(8),
                                         j.eps.eq(w[13])]
                    with m.Case(Op.LAYERNORM):
                        m.d.comb += [j.a.eq(w[1]), j.out.eq(w[2]), j.tokens.eq(w[3]),
                                     j.width.eq(w[4]), j.a_bits.eq(w[5]), j.ln_bits.eq(w[5]),
                                     j.out_bits.eq(8), j.eps.eq(w[7])]
                m.d.comb += [j.op.eq(op), vec.job.valid.eq(1)]
                with m.If(vec.job.ready):
                    with m.If(op == Op.ADD):
                        m.next = "VEC_RUN"
                    with m.Else():
                        m.next = "VEC_PARAMS"
            with m.State("VEC_PARAMS"):
                fused = op == Op.ADD_LAYERNORM
                off = Mux(op == Op.GELU, words[5], Mux(fused, words[12], words[6]))
                hidden = Mux(fused, words[5], words[4])

                def param_words():
                    m.d.comb += [reader.req.valid.eq(1),
                                 reader.req.payload.addr.eq(ctrl.params + off),
                                 reader.req.payload.words.eq(
                                     Mux(op == Op.GELU, 64, hidden * (LN_RECORD // 4)))]
                    with m.If(reader.req.ready):
                        m.next = "VEC_RUN"

                if cfg.wide_ln_params:  # LayerNorm's records through the weight port
                    per_beat = cfg.weight_port_bytes // LN_RECORD
                    with m.If(op != Op.GELU):
                        m.d.comb += [wgt.req.valid.eq(1),
                                     wgt.req.payload.addr.eq(ctrl.params + off),
                                     wgt.req.payload.words.eq((hidden + per_beat - 1)
                                                              >> (per_beat.bit_length() - 1))]
                        with m.If(wgt.req.ready):
                            m.next = "VEC_RUN"
                    with m.Else():
                        param_words()
                else:
                    param_words()
            with m.State("VEC_RUN"):
                m.d.comb += [vec.params.valid.eq(reader.data.valid),
                             vec.params.payload.eq(reader.data.payload),
                             reader.data.ready.eq(vec.params.ready),
                             spm.w_addr.eq(vec.w_addr), spm.w_data.eq(vec.w_data),
                             spm.w_en.eq(vec.w_en)]
                if cfg.wide_ln_params:
                    m.d.comb += [vec.wide_params.valid.eq(wgt.data.valid),
                                 vec.wide_params.payload.eq(wgt.data.payload),
                                 wgt.data.ready.eq(vec.wide_params.ready)]
                with m.If(vec.done):
                    m.next = "NEXT"
            with m.State("LOAD_REQ"):
                if cfg.wide_load:
                    beat0 = Cat(Const(0, lb), f2[lb:])  # src rounded down to a beat
                    m.d.comb += [wgt.req.valid.eq(1),
                                 wgt.req.payload.addr.eq(ctrl.input + beat0),
                                 wgt.req.payload.words.eq((f2[:lb] + nbytes + B - 1) >> lb)]
                    with m.If(wgt.req.ready):
                        m.next = "LOAD_RUN"
                else:
                    m.d.comb += [reader.req.valid.eq(1),
                                 reader.req.payload.addr.eq(ctrl.input + f2),
                                 reader.req.payload.words.eq(nwords)]
                    with m.If(reader.req.ready):
                        m.next = "LOAD_RUN"
            if cfg.wide_load:  # LOAD through the weight port, a beat of Q words a cycle:
                # beat k's word j is the LOAD's word g = k Q + j - o: the first beat goes to
                # dst shifted down by o words, the others to dst + k Q - o as they are
                with m.State("LOAD_RUN"):
                    sh = Mux(moved == 0, f2[2:lb], 0)  # the first word's place in its beat
                    beat = wgt.data.payload
                    m.d.comb += [wgt.data.ready.eq(1), spm.w_addr.eq((f1 >> 2) + moved)]
                    for i in range(Q):
                        g = moved + i  # the LOAD's word lane i writes
                        with m.Switch(sh):
                            for v in range(Q - i):
                                with m.Case(v):
                                    m.d.comb += spm.w_data.word_select(i, 32).eq(
                                        beat.word_select(i + v, 32))
                        with m.If(wgt.data.valid & (i + sh < Q) & (g < nwords)):
                            m.d.comb += spm.w_en[4 * i:4 * i + 4].eq(
                                Mux(g == nwords - 1, last_mask, 0b1111))
                    with m.If(wgt.data.valid):
                        m.d.sync += moved.eq(moved + Q - sh)
                        with m.If(moved + Q - sh >= nwords):
                            m.next = "NEXT"
            else:
                with m.State("LOAD_RUN"):
                    m.d.comb += [reader.data.ready.eq(1), spm.w_addr.eq((f1 >> 2) + moved),
                                 spm.w_data.eq(reader.data.payload)]
                    with m.If(reader.data.valid):
                        m.d.comb += spm.w_en.eq(0b1111)
                        m.d.sync += moved.eq(moved + 1)
                        with m.If(moved == nwords - 1):
                            m.d.comb += spm.w_en.eq(last_mask)
                            m.next = "NEXT"
            if cfg.wide_store:  # whole beats of the output buffer through the weight port:
                # beat k's lane j is the STORE's word g = k Q + j - o (o: dst's word in its
                # beat), written where 0 <= g < nwords; beat 0 is read at src and shifted up
                # by o lanes, beat k > 0 at src + k Q - o words
                o = f1[2:lb]
                nbeats = Signal(32)
                m.d.comb += nbeats.eq((f1[:lb] + nbytes + B - 1) >> lb)
                with m.State("STORE_REQ"):
                    m.d.comb += [store_writer.req.valid.eq(1),
                                 store_writer.req.payload.addr.eq(
                                     ctrl.output + Cat(Const(0, lb), f1[lb:])),
                                 store_writer.req.payload.words.eq(nbeats)]
                    with m.If(store_writer.req.ready):
                        m.next = "STORE_RUN"
                with m.State("STORE_RUN"):
                    issue = (moved < nbeats) & (sfifo.level + pend < sfifo.depth)
                    pend_first = Signal()
                    raw = spm.ra_data[:8 * B]
                    m.d.comb += [store_addr.eq(Mux(moved == 0, f2 >> 2,
                                                   (f2 >> 2) - o + (moved << (lb - 2)))),
                                 store_en.eq(issue),
                                 sfifo.w_data.eq(Mux(pend_first, raw << (o * 32), raw)),
                                 sfifo.w_en.eq(pend)]
                    m.d.sync += [pend.eq(issue), pend_first.eq(moved == 0)]
                    with m.If(issue):
                        m.d.sync += moved.eq(moved + 1)
                    sent = Signal(32)
                    m.d.comb += [store_writer.data.valid.eq(sfifo.r_rdy),
                                 store_writer.data.payload.data.eq(sfifo.r_data),
                                 sfifo.r_en.eq(store_writer.data.ready)]
                    for j in range(Q):
                        g = (sent << (lb - 2)) + j  # o + the STORE's word in lane j
                        m.d.comb += store_writer.data.payload.strb[4 * j:4 * j + 4].eq(
                            Mux((g >= o) & (g < o + nwords),
                                Mux(g == o + nwords - 1, last_mask, 0b1111), 0))
                    with m.If(sfifo.r_rdy & store_writer.data.ready):
                        m.d.sync += sent.eq(sent + 1)
                        with m.If(sent == nbeats - 1):
                            m.d.sync += sent.eq(0)
                            m.next = "STORE_WAIT"
            else:
                with m.State("STORE_REQ"):
                    m.d.comb += [writer.req.valid.eq(1),
                                 writer.req.payload.addr.eq(ctrl.output + f1),
                                 writer.req.payload.words.eq(nwords)]
                    with m.If(writer.req.ready):
                        m.next = "STORE_RUN"
                with m.State("STORE_RUN"):
                    issue = (moved < nwords) & (sfifo.level + pend < sfifo.depth)
                    m.d.comb += [store_addr.eq((f2 >> 2) + moved), store_en.eq(issue),
                                 sfifo.w_data.eq(spm.ra_data[:32]), sfifo.w_en.eq(pend)]
                    m.d.sync += pend.eq(issue)
                    with m.If(issue):
                        m.d.sync += moved.eq(moved + 1)
                    sent = Signal(32)
                    last = (sent == nwords - 1)
                    m.d.comb += [writer.data.valid.eq(sfifo.r_rdy),
                                 writer.data.payload.data.eq(sfifo.r_data),
                                 writer.data.payload.strb.eq(0b1111),
                                 sfifo.r_en.eq(writer.data.ready)]
                    with m.If(last):
                        m.d.comb += writer.data.payload.strb.eq(last_mask)
                    with m.If(sfifo.r_rdy & writer.data.ready):
                        m.d.sync += sent.eq(sent + 1)
                        with m.If(last):
                            m.d.sync += sent.eq(0)
                            m.next = "STORE_WAIT"
            with m.State("STORE_WAIT"):
                with m.If(store_writer.idle):
                    with m.If(store_writer.error):
                        finish(Status.BUS_ERROR)
                    with m.Else():
                        m.next = "NEXT"
            with m.State("NEXT"):
                with m.If(reader.error | wgt_error):
                    with m.If(~eng.sm_busy & ~eng.wo_busy):  # (once every result is written)
                        finish(Status.BUS_ERROR)
                with m.Else():
                    m.d.sync += index.eq(index + 1)
                    m.next = "FETCH"
        # a QK_SOFTMAX's softmax rows and a PV's or LINEAR's results write the scratchpad after
        # their command (nothing else writes it meanwhile: CHECK holds every other command,
        # and a vector command beside results writes in the cycles they do not: vec.w_busy)
        with m.If(eng.sm_busy | eng.wo_writing):
            m.d.comb += [spm.w_addr.eq(eng.w_addr), spm.w_data.eq(eng.w_data),
                         spm.w_en.eq(eng.w_en)]
        return m
