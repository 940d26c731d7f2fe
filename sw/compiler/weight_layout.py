"""LINEAR weights in device memory: the layout the kernel's weight port streams.

Without a weight port (``config.weight_port_bytes == 0``) a LINEAR's weights are
:func:`sw.nm.pack`'s bytes: every row's values, then every row's bit-packed indices, and the
kernel reads them a row at a time through its 32-bit master.

With a weight port of ``B`` bytes the rows are interleaved so that one beat fills several
rows' weight banks at once. The engine keeps, per PE row, a value bank and an index bank of
*entries*: 4 consecutive stored slots (``ceil(G * N / 4)`` entries per row, ``G =
ceil(K / M)``). Rows are padded with zero rows to ``rows_padded``, a multiple of
``config.weight_rows_align``, and cut into row blocks of ``R = pe_rows`` (the last one
shorter). Each block is its entries in order, and entry ``e`` is

* its values: for each row of the block, the entry's 4 int8 values (4 bytes; slots past
  ``G * N`` are zero);
* then its indices (sparse rows only, ``N < M``): for each row, the entry's 4 indices,
  ``log2(M)`` bits each, LSB first, in an ``index_word_bits`` (8 or 16) little-endian word.

A beat of an entry's values is then ``B / 4`` rows' words, a beat of its indices ``8 B /
index_word_bits`` rows' words, and each is a whole number of beats. An entry is whole once
its last index beat is in, so the engine can read a block's first entries while the rest
still comes (entry by entry, not all values before any index). Zero rows and zero slots
multiply as zeros, so the padding never changes a result.

With ``P = config.weight_ports > 1`` weight ports, rows are padded to whole row blocks
(``weight_rows_align = pe_rows``) and port ``p`` streams rows ``[p R / P, (p + 1) R / P)``
of every block: its *bank* (``params`` for port 0, the buffer ``params<p>`` for the others,
the LINEAR's ``w_off`` in each) holds exactly those rows in the layout above with row blocks
of ``R / P`` rows. Every bank holds the same number of bytes (:func:`linear_weight_bytes`).
"""

from __future__ import annotations

import numpy as np

from hw.config import AcceleratorConfig
from sw.nm import PackedNM, _pack_bits

__all__ = ["rows_padded", "block_bytes", "linear_weight_bytes", "weight_blob", "weight_banks",
           "read_weights", "entries", "port_rows_of"]


def entries(k: int, n: int, m: int) -> int:
    """Bank entries (4 slots each) of one row: ``ceil(ceil(k / m) * n / 4)``."""
    return -(-(-(-k // m) * n) // 4)


def rows_padded(rows: int, config: AcceleratorConfig) -> int:
    """``rows`` rounded up to ``config.weight_rows_align``: the weight port's row granule, or
    whole row blocks with several weight ports."""
    a = config.weight_rows_align
    return -(-rows // a) * a


def block_bytes(block_rows: int, k: int, n: int, m: int, config: AcceleratorConfig) -> int:
    """Bytes of a row block of ``block_rows`` (padded) rows with a weight port: per entry and
    row, 4 value bytes and, for sparse rows, an index word."""
    return block_rows * entries(k, n, m) * (4 + (0 if n == m else config.index_word_bits // 8))


def linear_weight_bytes(rows: int, k: int, n: int, m: int, config: AcceleratorConfig) -> int:
    """Bytes of a LINEAR's weights in ``config``'s layout (see the module docstring): in each
    bank with several weight ports."""
    if not config.weight_port_bytes:
        groups = -(-k // m)
        indices = 0 if n == m else rows * (-(-groups * n * (m.bit_length() - 1) // 8))
        return rows * groups * n + indices
    return block_bytes(rows_padded(rows, config) // config.weight_ports, k, n, m, config)


def port_rows_of(padded_rows: int, port: int, config: AcceleratorConfig) -> np.ndarray:
    """The (padded) rows weight port ``port`` streams, in its bank's order: rows
    ``[p R / P, (p + 1) R / P)`` of every row block of ``R = pe_rows``."""
    g, R = config.port_rows, config.pe_rows
    return np.concatenate([np.arange(b + port * g, b + (port + 1) * g)
                           for b in range(0, padded_rows, R)])


def _slots(w: PackedNM, rows: int, e: int) -> tuple[np.ndarray, np.ndarray]:
    """Values (int8 as uint8) and indices, ``[rows, 4 e]``, zero-padded."""
    steps = w.groups * w.n
    vals = np.zeros((rows, 4 * e), np.uint8)
    idx = np.zeros((rows, 4 * e), np.uint32)
    vals[:w.rows, :steps] = w.values.astype(np.int8).view(np.uint8).reshape(w.rows, steps)
    if w.n != w.m:
        idx[:w.rows, :steps] = w.unpacked_indices()
    return vals, idx


def _blocks(vals: np.ndarray, words: np.ndarray | None, block: int,
            config: AcceleratorConfig) -> np.ndarray:
    """Rows' slots (``[rows, 4 E]`` values, ``[rows, E]`` index words or None) in row blocks
    of ``block`` rows: each block entry by entry, an entry's values (row-major) then its
    index words."""
    rp, e = vals.shape[0], vals.shape[1] // 4
    word_dtype = np.dtype("<u2") if config.index_word_bits == 16 else np.dtype(np.uint8)
    out = []
    for r0 in range(0, rp, block):
        r1 = min(r0 + block, rp)
        # [entries, block rows x 4 value bytes (+ block rows x index word bytes)]
        parts = [vals[r0:r1].reshape(r1 - r0, e, 4).transpose(1, 0, 2).reshape(e, -1)]
        if words is not None:
            parts.append(np.ascontiguousarray(words[r0:r1].T.astype(word_dtype))
                         .view(np.uint8).reshape(e, -1))
        out.append(np.concatenate(parts, axis=1).reshape(-1))
    return np.concatenate(out)


def weight_banks(w: PackedNM, config: AcceleratorConfig) -> np.ndarray:
    """The device bytes (uint8) of packed weights ``w`` in ``config``'s layout, one row per
    weight port's bank: ``[weight_ports, linear_weight_bytes]``."""
    if not config.weight_port_bytes:
        return np.concatenate([w.values.astype(np.int8).reshape(-1).view(np.uint8),
                               w.indices.reshape(-1)])[None]
    e = entries(w.k, w.n, w.m)
    rp = rows_padded(w.rows, config)
    vals, idx = _slots(w, rp, e)
    ib = w.m.bit_length() - 1
    # [rows, entries] index words: slot j of an entry at bits ib * j
    words = (None if w.n == w.m
             else sum(idx[:, j::4].astype(np.uint32) << (ib * j) for j in range(4)))
    if config.weight_ports == 1:
        return _blocks(vals, words, config.pe_rows, config)[None]
    banks = []
    for p in range(config.weight_ports):
        rows = port_rows_of(rp, p, config)
        banks.append(_blocks(vals[rows], None if words is None else words[rows],
                             config.port_rows, config))
    return np.stack(banks)


def weight_blob(w: PackedNM, config: AcceleratorConfig) -> np.ndarray:
    """The device bytes (uint8) of packed weights ``w`` in ``config``'s layout with one weight
    port (or none); :func:`weight_banks` with several."""
    if config.weight_ports != 1:
        raise ValueError(f"config {config.name!r} has {config.weight_ports} weight ports: its "
                         f"weights are one bank per port (weight_banks)")
    return weight_banks(w, config)[0]


def _read_blocks(buf, pos: int, rows: int, block: int, e: int, dense: bool, ib: int,
                 config: AcceleratorConfig) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of :func:`_blocks`: ``rows`` rows' values and indices ``[rows, 4 e]``."""
    iw = config.index_word_bits
    vals = np.zeros((rows, 4 * e), np.int8)
    idx = np.zeros((rows, 4 * e), np.uint8)
    wb = 0 if dense else iw // 8  # index word bytes
    for r0 in range(0, rows, block):
        br = min(block, rows - r0)
        # [entries, block rows x 4 value bytes + block rows x index word bytes]
        blk = np.frombuffer(buf, np.uint8, count=e * br * (4 + wb), offset=pos).reshape(e, -1)
        vals[r0:r0 + br] = (blk[:, :4 * br].view(np.int8).reshape(e, br, 4).transpose(1, 0, 2)
                            .reshape(br, 4 * e))
        if not dense:
            dt = np.dtype("<u2") if iw == 16 else np.dtype(np.uint8)
            words = np.ascontiguousarray(blk[:, 4 * br:]).view(dt).reshape(e, br).T
            for j in range(4):
                idx[r0:r0 + br, j::4] = (words >> (ib * j)) & ((1 << ib) - 1)
        pos += e * br * (4 + wb)
    return vals, idx


def read_weights(buf, offset: int, rows: int, k: int, n: int, m: int,
                 config: AcceleratorConfig) -> PackedNM:
    """The inverse of :func:`weight_banks`: a LINEAR's weights read from device bytes ``buf``
    (with several weight ports, a sequence of the banks' bytes, port 0's first) at
    ``offset`` (as the kernel reads them: padding rows and slots are ignored)."""
    groups = -(-k // m)
    steps = groups * n
    ib = m.bit_length() - 1
    if not config.weight_port_bytes:
        nv = rows * steps
        values = np.frombuffer(buf, np.int8, count=nv, offset=offset).reshape(rows, steps)
        ibytes = 0 if n == m else -(-steps * ib // 8)
        idx = np.frombuffer(buf, np.uint8, count=rows * ibytes, offset=offset + nv)
        return PackedNM(values=values.astype(np.int64), indices=idx.reshape(rows, ibytes).copy(),
                        n=n, m=m, k=k)
    e = entries(k, n, m)
    rp = rows_padded(rows, config)
    P = config.weight_ports
    if P == 1:
        vals, idx = _read_blocks(buf, offset, rp, config.pe_rows, e, n == m, ib, config)
    else:
        if len(buf) != P:
            raise ValueError(f"{P} weight ports read {P} banks, got {len(buf)}")
        vals = np.zeros((rp, 4 * e), np.int8)
        idx = np.zeros((rp, 4 * e), np.uint8)
        for p in range(P):
            sel = port_rows_of(rp, p, config)
            vals[sel], idx[sel] = _read_blocks(buf[p], offset, rp // P, config.port_rows, e,
                                               n == m, ib, config)
    indices = (np.zeros((rows, 0), np.uint8) if n == m
               else _pack_bits(idx[:rows, :steps], ib).reshape(rows, -1))
    return PackedNM(values=vals[:rows, :steps].astype(np.int64), indices=indices, n=n, m=m, k=k)
