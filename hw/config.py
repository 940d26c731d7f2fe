"""AcceleratorConfig: the single source of truth for every parameter hardware and software share.

The generator (``hw/``), the cycle model (``sw/perf``), the compiler and every bitstream's
``config.json`` read one :class:`AcceleratorConfig`; nothing restates a parameter by hand.

Presets (:data:`PRESETS`, :func:`preset`):

========  ===  ========  =======  =======  ===========================================
name      M    N max     PEs      lanes    sized for
========  ===  ========  =======  =======  ===========================================
tiny      4    4         4 x 4    4        fast tests and CI
ecp5      4    4         4 x 4    1        LFE5U-85F (156 MULT18X18D, 208 DP16KD)
u200      8    8         96 x 128 64       Alveo U200: 6,840 DSP48E2, 2 MACs per DSP
u280      8    8         128 x 128 64      Alveo U280: 9,024 DSP48E2, 2 MACs per DSP, HBM
========  ===  ========  =======  =======  ===========================================

The ``ecp5`` preset is sized to give the open routers the best chance on the LFE5U-85F with
the whole kernel (``make bitstream`` builds it, routed with nextpnr's static placer and
router2; its Fmax and resources are in the README's "Bitstreams"): a 4 x 4 array, one-lane
vector units and softmax, only the int16-input LayerNorm, and a 32 KiB
scratchpad (two read ports make two block RAM copies). An 8 x 8 array with 64 KiB fits the part (122
MULT18X18D, 134 DP16KD, 39 % of the LUT4s) and placed, but the heap placer and router1 did
not route it (not yet tried with the static placer and router2): congestion, not capacity,
set the size (README, "Bitstreams").

The Alveo presets use ``pe_rows * pe_cols / macs_per_dsp`` DSPs (6,144 of 6,840 on the U200,
8,192 of 9,024 on the U280), leaving the rest for the vector units, and a scratchpad of 32
banks (``spm_lanes``): a tile's 96 or 128 int8 results per token go out in one cycle.
They build only the int16-input LayerNorm (``layernorm_int8 = False``): the encoders the
compiler makes keep an int16 residual path (its default), and the int8-input unit costs 4
DSP48E2 and about 270 LUTs more a lane by the Yosys estimate at 42f1936 (vector slices at 2
and 8 lanes: 10 DSPs a lane with it, 6 without), about 256 DSPs at 64 lanes.
Their LINEAR weights come through 3 (U200: three of its four DDR4 banks) or 4 (U280: four
HBM pseudo-channels) 512-bit weight ports (``weight_ports``), 32 rows of a row block each.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

from sw.ref.layernorm import MAX_HIDDEN as LN_MAX_HIDDEN

__all__ = ["AcceleratorConfig", "ConfigError", "PRESETS", "SPM_KIB_MAX", "preset"]

#: |int8 x int8| is at most 128 * 128 = 2**14, so an int32 accumulator holds any sum of
#: ``ACC_SAFE_TERMS`` products without overflow: (2**31 - 1) // 2**14.
ACC_SAFE_TERMS = (2**31 - 1) // (128 * 128)
#: The same bound for uint8 probabilities x int8 (P.V, reduced over keys <= max_row).
INT32_MAX_TERMS_UINT8 = (2**31 - 1) // (255 * 128)
#: the largest scratchpad whose byte addresses fit a Program's 32-bit fields
SPM_KIB_MAX = 2**32 // 1024


def _shorten(text: str, limit: int = 300) -> str:
    """``text`` for a message: at most ``limit`` characters."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


class ConfigError(ValueError):
    """A malformed :class:`AcceleratorConfig` (the message names the field and the bad value)."""


@dataclass(frozen=True, kw_only=True)
class AcceleratorConfig:
    """Parameters of one generated accelerator. Frozen; validated on construction.

    Parameters
    ----------
    name : str
        Preset or user name; used for build directories and reports.
    m : int
        N:M group size along the reduction dimension: 4, 8 or 16.
    n_max : int
        Largest N of a sparse operation (1..m). Dense (N = M, no indices) is always available.
    pe_rows, pe_cols : int
        PE array shape R x C: R output channels (weight rows) by C tokens.
    act_bits, weight_bits, acc_bits : int
        Operand and accumulator widths. The numerics contract fixes them at 8, 8, 32.
    max_k : int
        Longest reduction (input features, or keys for P.V) one operation may have. Must be a
        multiple of ``m`` and keep the int32 accumulator overflow-free:
        ``max_k * 2**14 <= 2**31 - 1``.
    weight_buffer_depth : int
        Not read by the generator, the compiler or the models: the kernel's weight buffers
        are sized by ``max_k`` (``ceil(max_k / 4)`` words of 4 group slots a PE row; twice
        that with weight ports, which load a row block beside the one running), so this
        field changes nothing. It stays (validated, at least 1) so that
        config files and the build summaries' recorded configs keep matching; removing it is
        left to the next change that rebuilds the summaries.
    act_buffer_depth : int
        Words (one M-group of activations per PE column) per activation bank: the engine
        stages as many token blocks of ``pe_cols`` tokens as fit (``act_buffer_depth //
        ceil(K / M)``) and runs each row block's weights against all of them, so weights are
        staged once per chunk rather than once per token block. At least ``max_k / m``.
    softmax_lanes : int
        Elements the softmax unit takes per cycle.
    max_row : int
        Longest softmax row (sequence length) the unit buffers on chip.
    vector_lanes : int
        Elements per cycle of LayerNorm, GELU and residual add.
    max_hidden : int
        Largest hidden size LayerNorm is built for.
    layernorm_int8 : bool
        Also build the LayerNorm for int8 inputs (models quantized with an int8 residual
        path); the int16-input one is always built. Without it a LAYERNORM with
        ``in_bits = 8`` is refused (BAD_SHAPE). Saves a LayerNorm unit on small devices.
    spm_kib : int
        On-chip activation scratchpad (KiB) a Program's tensors live in for a whole encoder
        (``sw/compiler`` allocates it; a model that does not fit is refused). At most
        ``SPM_KIB_MAX`` = 4 GiB: its byte addresses are 32-bit Program fields.
    clock_mhz : float
        Clock target (MHz) used for projected latency when no measured Fmax exists.
    macs_per_dsp : int
        1, or 2 for WP486-style packing of two int8 MACs sharing the weight into one DSP48E2
        (adjacent token columns share a multiplier, so ``pe_cols`` must then be even).
    part : str
        Device the preset is sized for (informational).
    part_dsps : int
        DSP blocks of that device: the compute floor of the benchmarks is computed from it.
    mem_bandwidth_gbps : float
        Device-memory bandwidth (GB/s) the cycle model assumes for weight streaming.
    weight_port_bytes : int
        0: LINEAR weights come through the kernel's one 32-bit AXI master, a row at a time,
        in :func:`sw.nm.pack`'s layout. Otherwise the data width (bytes, a power of two from
        4 to 128) of a second AXI master ``m_axi_wgt`` that streams them in the
        row-interleaved layout of :mod:`sw.compiler.weight_layout`: each beat fills
        ``weight_port_bytes / 4`` rows' weight banks at once. ``pe_rows`` must then be a
        multiple of :attr:`weight_rows_align`. From 16 bytes on it also brings LayerNorm's
        records (:attr:`wide_ln_params`) and the commands (:attr:`wide_fetch`); where a beat
        fits the scratchpad's port, LOAD's input and STORE's output (:attr:`wide_load`,
        :attr:`wide_store`).
    weight_ports : int
        LINEAR weights come through this many weight ports (``m_axi_wgt``, ``m_axi_wgt1``,
        ...), each a ``weight_port_bytes`` AXI master on its own device-memory bank: port ``p``
        streams rows ``[p R / P, (p + 1) R / P)`` of every row block (``R = pe_rows``) from
        the ``params`` buffer (port 0) or its own buffer ``params<p>`` at the same offset
        (:mod:`sw.compiler.weight_layout`), so a block loads in ``1 / P`` of the beats.
        1 (the default) or up to 4 with a weight port; ``pe_rows / weight_ports`` must then be
        a multiple of the port's row granule, and ``pe_rows`` a multiple of 8 (the kernel
        counts a LINEAR's row blocks with a multiply by ``1 / pe_rows``). Only port 0 has
        write channels and carries LayerNorm records, LOAD and STORE.
    spm_lanes : int
        Width of the scratchpad's ports in 32-bit words (a power of two up to 64): the
        scratchpad is that many banks of words, so an access moves ``spm_lanes`` consecutive
        words at any alignment (:class:`hw.top.scratchpad.Scratchpad`). The engine's result
        write-out uses the whole width; the other clients move a word per cycle.
    mem_read_delay : int
        Device memory's extra read latency for the kernel cycle model (:mod:`sw.perf.top`),
        in kernel cycles: each read burst's first beat comes this many cycles later than the
        benches' AXI RAM (cocotbext-axi) answers, 2 cycles after the AR. 0 (the default) is
        the RAM the model is checked against; the top bench's ``mem_delay`` delays its RAM
        alike. Model-only, as ``mem_bandwidth_gbps``: the RTL does not depend on it (a DDR4
        controller answers in tens of cycles at 300 MHz: what-if configs).
    """

    name: str = "custom"
    m: int = 4
    n_max: int = 4
    pe_rows: int = 4
    pe_cols: int = 4
    act_bits: int = 8
    weight_bits: int = 8
    acc_bits: int = 32
    max_k: int = 4096
    weight_buffer_depth: int = 1024
    act_buffer_depth: int = 1024
    softmax_lanes: int = 4
    max_row: int = 512
    vector_lanes: int = 4
    max_hidden: int = 1024
    layernorm_int8: bool = True
    spm_kib: int = 1024
    clock_mhz: float = 100.0
    macs_per_dsp: int = 1
    part: str = "generic"
    part_dsps: int = 0
    mem_bandwidth_gbps: float = 0.0
    weight_port_bytes: int = 0
    spm_lanes: int = 1
    weight_ports: int = 1
    mem_read_delay: int = 0

    def __post_init__(self):
        def bad(field, why):
            raise ConfigError(f"AcceleratorConfig.{field} = {getattr(self, field)!r}: {why}")

        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (not isinstance(value, int) or isinstance(value, bool)):
                bad(f.name, "must be an int")
            if f.type == "float" and (
                not isinstance(value, int | float) or isinstance(value, bool)
            ):
                bad(f.name, "must be a number")
            if f.type == "str" and not isinstance(value, str):
                bad(f.name, "must be a string")
            if f.type == "bool" and not isinstance(value, bool):
                bad(f.name, "must be true or false")
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            bad("name", "must be non-empty and use only letters, digits, '-', '_', '.'")
        if self.m not in (4, 8, 16):
            bad("m", "M must be 4, 8 or 16 (a power of two the index mux supports)")
        if not 1 <= self.n_max <= self.m:
            bad("n_max", f"must be in 1..M = 1..{self.m}")
        for name in ("pe_rows", "pe_cols", "softmax_lanes", "vector_lanes"):
            if getattr(self, name) < 1:
                bad(name, "must be at least 1")
        for name, want in (("act_bits", 8), ("weight_bits", 8), ("acc_bits", 32)):
            if getattr(self, name) != want:
                bad(name, f"the numerics contract fixes it at {want}")
        if self.max_k < self.m or self.max_k % self.m:
            bad("max_k", f"must be a positive multiple of M = {self.m}")
        if self.max_k > ACC_SAFE_TERMS:
            bad("max_k", f"int32 accumulation could overflow beyond K = {ACC_SAFE_TERMS}")
        if self.max_row > INT32_MAX_TERMS_UINT8:
            bad("max_row", f"P.V with uint8 probabilities could overflow int32 beyond "
                           f"{INT32_MAX_TERMS_UINT8} keys")
        if self.max_hidden > LN_MAX_HIDDEN:
            bad("max_hidden", f"the integer LayerNorm is specified for H <= {LN_MAX_HIDDEN}")
        for name in ("weight_buffer_depth", "act_buffer_depth", "max_row", "max_hidden",
                     "spm_kib"):
            if getattr(self, name) < 1:
                bad(name, "must be at least 1")
        if self.spm_kib > SPM_KIB_MAX:
            bad("spm_kib", f"scratchpad addresses are 32-bit Program fields: at most "
                           f"{SPM_KIB_MAX} KiB (4 GiB)")
        if self.act_buffer_depth < self.max_k // self.m:
            bad("act_buffer_depth", f"must hold one token block of the longest reduction: at "
                                    f"least max_k / M = {self.max_k // self.m}")
        if not (math.isfinite(self.clock_mhz) and self.clock_mhz > 0):
            bad("clock_mhz", "must be a positive number of MHz")
        if self.macs_per_dsp not in (1, 2):
            bad("macs_per_dsp", "must be 1 or 2")
        if self.macs_per_dsp == 2 and self.pe_cols % 2:
            bad("pe_cols", "macs_per_dsp = 2 packs columns in pairs: pe_cols must be even")
        if self.part_dsps < 0:
            bad("part_dsps", "must be >= 0")
        if not (math.isfinite(self.mem_bandwidth_gbps) and self.mem_bandwidth_gbps >= 0):
            bad("mem_bandwidth_gbps", "must be a number >= 0")
        if not 0 <= self.mem_read_delay <= 4096:
            bad("mem_read_delay", "must be in 0..4096 cycles")
        B = self.weight_port_bytes
        if B and (B not in (4, 8, 16, 32, 64, 128)):
            bad("weight_port_bytes", "must be 0 (no weight port) or a power of two from 4 to "
                                     "128 (an AXI4 data width of 32 to 1024 bits)")
        if not 1 <= self.weight_ports <= 4:
            bad("weight_ports", "must be 1 to 4 (LINEAR weights striped over that many ports)")
        if self.weight_ports > 1 and not B:
            bad("weight_ports", "more than one weight port needs weight_port_bytes > 0")
        if self.weight_ports > 1 and self.pe_rows % 8:
            bad("pe_rows", "must be a multiple of 8 with several weight ports (the kernel "
                           "counts a LINEAR's row blocks with a multiply by 1 / pe_rows)")
        g = self.weight_row_granule
        if B and self.pe_rows % (g * self.weight_ports):
            bad("pe_rows", f"the {B}-byte weight port fills {B // 4} rows' value banks and "
                           f"{8 * B // self.index_word_bits} rows' index banks per beat: "
                           f"pe_rows must be a multiple of {g}"
                           + (f" x weight_ports = {g * self.weight_ports}"
                              if self.weight_ports > 1 else ""))

        L = self.spm_lanes
        if L not in (1, 2, 4, 8, 16, 32, 64):
            bad("spm_lanes", "must be a power of two from 1 to 64 (32-bit words per access)")

    # -- derived quantities (derived here once, so nobody restates them) -----------------------
    @property
    def sum_bits(self) -> int:
        """Bits of the PE array's accumulators and shadow registers: the fewest that hold, as
        signed integers, every sum the engine can form: ``max(max_k, max_row)`` products of
        at most ``255 * 128`` in magnitude (int8 or uint8 activations x int8 weights; the
        kernel refuses longer reductions). Each such sum is an int32 value (``acc_bits``, by
        the checks above), so the narrower registers hold it exactly and the engine's output
        beats sign-extend it: the numerics stay those of int32 accumulation. 28 for every
        preset (``4096 * 255 * 128 < 2**27``)."""
        bound = max(self.max_k, self.max_row) * 255 * 128
        return min(bound.bit_length() + 1, self.acc_bits)

    @property
    def index_bits(self) -> int:
        """Bits of one N:M index: log2(M)."""
        return self.m.bit_length() - 1

    @property
    def index_word_bits(self) -> int:
        """Bits of a weight bank's index word (4 slots of :attr:`index_bits`) in the weight
        port's layout: 8 or 16, so whole words fill a beat."""
        return 8 if 4 * self.index_bits <= 8 else 16

    @property
    def weight_row_granule(self) -> int:
        """The weight port's row granule: a beat holds whole 4-byte value words of
        ``weight_port_bytes / 4`` rows, or whole index words of ``8 weight_port_bytes /
        index_word_bits`` rows; the larger (1 without a weight port)."""
        B = self.weight_port_bytes
        return max(B // 4, 8 * B // self.index_word_bits) if B else 1

    @property
    def weight_rows_align(self) -> int:
        """LINEAR rows are padded (with zero rows) to a multiple of this: the weight port's
        row granule (:attr:`weight_row_granule`), or with several weight ports a whole row
        block (``pe_rows``), so every port streams ``pe_rows / weight_ports`` rows of every
        block."""
        return self.pe_rows if self.weight_ports > 1 else self.weight_row_granule

    @property
    def port_rows(self) -> int:
        """Rows of a row block each weight port streams: ``pe_rows / weight_ports``."""
        return self.pe_rows // self.weight_ports

    @property
    def weight_port_burst(self) -> int:
        """Longest burst of the weight port (beats): 256 (AXI4 INCR) or a 4 KiB page."""
        return min(256, 4096 // self.weight_port_bytes) if self.weight_port_bytes else 0

    @property
    def wide_ln_params(self) -> bool:
        """LAYERNORM's gain/offset records (16 bytes a channel) come through the weight port,
        ``weight_port_bytes / 16`` a beat (one a cycle, or the whole beat: :attr:`ln_load_lanes`),
        instead of 4 words a channel over
        the 32-bit bus: with a weight port of 16 bytes or more. Their ``params_off`` must
        then be a multiple of ``weight_port_bytes``."""
        return self.weight_port_bytes >= 16

    @property
    def ln_load_lanes(self) -> int:
        """LAYERNORM records loaded per cycle: with :attr:`wide_ln_params` all of a beat's
        ``weight_port_bytes / 16`` when ``vector_lanes`` is a multiple of that (each goes to
        its own lane's parameter memory), else one."""
        if not self.wide_ln_params:
            return 1
        k = self.weight_port_bytes // 16
        return k if self.vector_lanes % k == 0 else 1

    @property
    def wide_fetch(self) -> bool:
        """The command processor fetches each 64-byte command through the weight port, the
        beats that hold it (commands start 16 bytes into a 64-byte block: 4 beats of 16
        bytes, 3 of 32, 2 of 64), instead of 16 words over the 32-bit master: with a weight
        port of 16 bytes or more."""
        return self.weight_port_bytes >= 16

    @property
    def wide_load(self) -> bool:
        """LOAD reads the ``input`` buffer through the weight port, a beat of
        ``weight_port_bytes`` a cycle into the scratchpad, instead of a word a cycle over
        the 32-bit master: with a weight port wider than a word whose beat fits the
        scratchpad's write port (``weight_port_bytes <= 4 spm_lanes``)."""
        return 4 < self.weight_port_bytes <= 4 * self.spm_lanes

    @property
    def wide_store(self) -> bool:
        """STORE writes the ``output`` buffer through the weight port (which then has write
        channels), a beat of ``weight_port_bytes`` a cycle read from the scratchpad, instead
        of a word a cycle over the 32-bit master: where LOAD is wide (:attr:`wide_load`)."""
        return self.wide_load

    @property
    def mask_lanes(self) -> int:
        """QK_SOFTMAX's key-mask bytes staged per cycle: the largest divisor of
        ``softmax_lanes`` (so a cycle's keys share a mask word) that a scratchpad read holds
        from any byte (``4 spm_lanes - 3``)."""
        reach = 4 * self.spm_lanes - 3
        return max(d for d in range(1, min(self.softmax_lanes, reach) + 1)
                   if self.softmax_lanes % d == 0)

    @property
    def softmax_ring(self) -> int:
        """Beats the softmax unit's score and exponent rings hold: ``max(32, 2 NB)`` rounded
        up to a power of two, ``NB = ceil(max_row / softmax_lanes)`` (two longest rows, and
        enough short ones in flight for a row per ``nb`` cycles)."""
        nb = -(-self.max_row // self.softmax_lanes)
        return 1 << max(5, (2 * nb - 1).bit_length())

    @property
    def layernorm_ring(self) -> int:
        """Beats the LayerNorm unit's token ring holds: ``max(128, 2 NB)`` rounded up to a
        power of two, ``NB = ceil(max_hidden / vector_lanes)`` (two longest tokens, and the
        tokens in flight through its statistics pipeline at a token per ``nb`` cycles)."""
        nb = -(-self.max_hidden // self.vector_lanes)
        return 1 << max(7, (2 * nb - 1).bit_length())

    @property
    def wide_staging(self) -> bool:
        """The engine stages token and key rows a port's width (``4 spm_lanes`` bytes) per
        cycle: wide ports holding at least one activation bank entry (``M`` bytes)."""
        return self.spm_lanes > 1 and 4 * self.spm_lanes >= self.m

    @property
    def wide_v_staging(self) -> bool:
        """PV stages a key's channels of a row block per cycle: wide ports that hold
        ``pe_rows`` bytes."""
        return self.spm_lanes > 1 and self.pe_rows <= 4 * self.spm_lanes

    @property
    def act_halves(self) -> bool:
        """QK and PV stage their activations in the two halves of the activation banks in
        turn (the next one's staging beside the tile before): half the banks hold the largest
        QK or PV block, ``ceil(max(max_k, max_row) / m)`` entries."""
        return self.act_buffer_depth // 2 >= -(-max(self.max_k, self.max_row) // self.m)

    @property
    def spm_bytes(self) -> int:
        return self.spm_kib * 1024

    @property
    def num_pes(self) -> int:
        return self.pe_rows * self.pe_cols

    @property
    def dsps(self) -> int:
        """DSP blocks the PE array uses: R * C / macs_per_dsp (rounded up)."""
        return -(-self.num_pes // self.macs_per_dsp)

    def check_nm(self, n: int, m: int | None = None) -> None:
        """Refuse an operation's N:M that this config cannot run (``ValueError`` naming it)."""
        m = self.m if m is None else m
        if m != self.m:
            raise ValueError(f"operation uses M = {m}, but config {self.name!r} is built for M = "
                             f"{self.m}")
        if not (1 <= n <= self.n_max or n == self.m):
            raise ValueError(f"operation uses N = {n}, config {self.name!r} allows N in "
                             f"1..{self.n_max} or dense (N = M = {self.m})")

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The fields; ``weight_ports`` only when it is not 1 and ``mem_read_delay`` only
        when it is not 0, so the JSON (and the Program fingerprint) of a config from before
        the field existed does not change."""
        d = dataclasses.asdict(self)
        if d["weight_ports"] == 1:
            del d["weight_ports"]
        if d["mem_read_delay"] == 0:
            del d["mem_read_delay"]
        return d

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text of the config; also written to ``path`` when one is given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, data: dict) -> AcceleratorConfig:
        """A config from a JSON object's fields; those it leaves out take the class's
        defaults (``AcceleratorConfig()``'s, not a preset's: start from ``nmaccel config
        <preset>`` to change a preset). Unknown fields are refused."""
        if not isinstance(data, dict):
            raise ConfigError(f"config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> AcceleratorConfig:
        """Parse a config from JSON text (a ``str`` starting with ``{`` or ``[``) or from a
        file (a :class:`~pathlib.Path`, or any other ``str``, naming it)."""
        if not isinstance(text_or_path, (str, Path)):
            raise ConfigError(f"a config is JSON text or a file path, got "
                              f"{type(text_or_path).__name__}")
        text = str(text_or_path)
        if isinstance(text_or_path, str) and text.lstrip().startswith(("{", "[")):
            source = "JSON text"
        else:
            source = _shorten(text)
            try:
                text = Path(text_or_path).read_text()
            except FileNotFoundError:
                raise ConfigError(f"no config file {source!r} (nor JSON text, which starts "
                                  f"with '{{')") from None
            except IsADirectoryError:
                raise ConfigError(f"config file {source!r} is a directory") from None
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(f"cannot read config file {source!r}: "
                                  f"{type(e).__name__}: {_shorten(str(e))}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"malformed config JSON in {source}: {e}") from None
        return cls.from_dict(data)

    def replace(self, **changes) -> AcceleratorConfig:
        """A copy with some fields changed (validated like any new config)."""
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, AcceleratorConfig] = {
    c.name: c
    for c in (
        AcceleratorConfig(
            name="tiny", m=4, n_max=4, pe_rows=4, pe_cols=4, max_k=4096,
            weight_buffer_depth=256, act_buffer_depth=4096, softmax_lanes=4, max_row=512,
            vector_lanes=4, max_hidden=768, spm_kib=1024, clock_mhz=100.0, part="generic",
        ),
        AcceleratorConfig(
            name="ecp5", m=4, n_max=4, pe_rows=4, pe_cols=4, max_k=4096,
            weight_buffer_depth=1024, act_buffer_depth=2048, softmax_lanes=1, max_row=512,
            vector_lanes=1, max_hidden=1024, layernorm_int8=False, spm_kib=32,
            clock_mhz=100.0, part="LFE5U-85F",
            part_dsps=156, mem_bandwidth_gbps=0.8,
        ),
        AcceleratorConfig(
            name="u200", m=8, n_max=8, pe_rows=96, pe_cols=128, max_k=4096,
            weight_buffer_depth=4096, act_buffer_depth=1024, softmax_lanes=64, max_row=512,
            vector_lanes=64, max_hidden=1024, layernorm_int8=False, spm_kib=4096,
            clock_mhz=300.0, macs_per_dsp=2, part="xcu200-fsgd2104-2-e", part_dsps=6840,
            mem_bandwidth_gbps=77.0,
            weight_port_bytes=64, spm_lanes=32, weight_ports=3,
        ),
        AcceleratorConfig(
            name="u280", m=8, n_max=8, pe_rows=128, pe_cols=128, max_k=4096,
            weight_buffer_depth=4096, act_buffer_depth=1024, softmax_lanes=64, max_row=512,
            vector_lanes=64, max_hidden=1024, layernorm_int8=False, spm_kib=4096,
            clock_mhz=300.0, macs_per_dsp=2, part="xcu280-fsvh2892-2L-e", part_dsps=9024,
            mem_bandwidth_gbps=460.0,
            weight_port_bytes=64, spm_lanes=32, weight_ports=4,
        ),
    )
}


def preset(name: str) -> AcceleratorConfig:
    """The named preset; ``ConfigError`` listing the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}") from None
