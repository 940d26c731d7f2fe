"""LINEAR weights in device memory: the layout the kernel's weight port streams.

Without a weight port (``config.weight_port_bytes == 0``) a LINEAR's weights are
:func:`sw.nm.pack`'s bytes: every row's values, then every row's bit-packed indices, and the
kernel reads them a row at a time through its 32-bit master.

With a weight port of ``B`` bytes the rows are interleaved so that one beat fills several
rows' weight banks at once. The engine keeps, per PE row, a value bank and an index bank of
*entries*: 4 consecutive stored slots (``ceil(G * N / 4)`` entries per row, ``G =
ceil(K / M)``). Rows are padded with zero rows to ``rows_padded``, a multiple of
``config.weight_rows_align``, and cut into row blocks of ``R = pe_rows`` (the last one
shorter). Each block, in order, is

* its values: for each entry, for each row of the block, the entry's 4 int8 values (4 bytes;
  slots past ``G * N`` are zero);
* its indices (sparse rows only, ``N < M``): for each entry, for each row, the entry's 4
  indices, ``log2(M)`` bits each, LSB first, in an ``index_word_bits`` (8 or 16) little-endian
  word.

A beat of the value region is then ``B / 4`` rows' words of one entry, a beat of the index
region ``8 B / index_word_bits`` rows' words, and every region is a whole number of beats.
Zero rows and zero slots multiply as zeros, so the padding never changes a result.
"""

from __future__ import annotations

import numpy as np

from hw.config import AcceleratorConfig
from sw.nm import PackedNM, _pack_bits

__all__ = ["rows_padded", "block_bytes", "linear_weight_bytes", "weight_blob", "read_weights",
           "entries"]


def entries(k: int, n: int, m: int) -> int:
    """Bank entries (4 slots each) of one row: ``ceil(ceil(k / m) * n / 4)``."""
    return -(-(-(-k // m) * n) // 4)


def rows_padded(rows: int, config: AcceleratorConfig) -> int:
    """``rows`` rounded up to the weight port's row granule."""
    a = config.weight_rows_align
    return -(-rows // a) * a


def block_bytes(block_rows: int, k: int, n: int, m: int, config: AcceleratorConfig) -> int:
    """Bytes of a row block of ``block_rows`` (padded) rows with a weight port: per entry and
    row, 4 value bytes and, for sparse rows, an index word."""
    return block_rows * entries(k, n, m) * (4 + (0 if n == m else config.index_word_bits // 8))


def linear_weight_bytes(rows: int, k: int, n: int, m: int, config: AcceleratorConfig) -> int:
    """Bytes of a LINEAR's weights in ``config``'s layout (see the module docstring)."""
    if not config.weight_port_bytes:
        groups = -(-k // m)
        indices = 0 if n == m else rows * (-(-groups * n * (m.bit_length() - 1) // 8))
        return rows * groups * n + indices
    return block_bytes(rows_padded(rows, config), k, n, m, config)


def _slots(w: PackedNM, rows: int, e: int) -> tuple[np.ndarray, np.ndarray]:
    """Values (int8 as uint8) and indices, ``[rows, 4 e]``, zero-padded."""
    steps = w.groups * w.n
    vals = np.zeros((rows, 4 * e), np.uint8)
    idx = np.zeros((rows, 4 * e), np.uint32)
    vals[:w.rows, :steps] = w.values.astype(np.int8).view(np.uint8).reshape(w.rows, steps)
    if w.n != w.m:
        idx[:w.rows, :steps] = w.unpacked_indices()
    return vals, idx


def weight_blob(w: PackedNM, config: AcceleratorConfig) -> np.ndarray:
    """The device bytes (uint8) of packed weights ``w`` in ``config``'s layout."""
    if not config.weight_port_bytes:
        return np.concatenate([w.values.astype(np.int8).reshape(-1).view(np.uint8),
                               w.indices.reshape(-1)])
    e = entries(w.k, w.n, w.m)
    rp = rows_padded(w.rows, config)
    vals, idx = _slots(w, rp, e)
    ib, iw = w.m.bit_length() - 1, config.index_word_bits
    # [rows, entries] index words: slot j of an entry at bits ib * j
    words = sum(idx[:, j::4].astype(np.uint32) << (ib * j) for j in range(4))
    word_dtype = np.dtype("<u2") if iw == 16 else np.dtype(np.uint8)
    out = []
    for r0 in range(0, rp, config.pe_rows):
        r1 = min(r0 + config.pe_rows, rp)
        # [entries, block rows, 4] -> entry-major, row inside
        out.append(vals[r0:r1].reshape(r1 - r0, e, 4).transpose(1, 0, 2).reshape(-1))
        if w.n != w.m:
            out.append(words[r0:r1].T.astype(word_dtype).reshape(-1).view(np.uint8))
    return np.concatenate(out)


def read_weights(buf, offset: int, rows: int, k: int, n: int, m: int,
                 config: AcceleratorConfig) -> PackedNM:
    """The inverse of :func:`weight_blob`: a LINEAR's weights read from device bytes ``buf``
    at ``offset`` (as the kernel reads them: padding rows and slots are ignored)."""
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
    iw = config.index_word_bits
    vals = np.zeros((rp, 4 * e), np.int8)
    idx = np.zeros((rp, 4 * e), np.uint8)
    pos = offset
    for r0 in range(0, rp, config.pe_rows):
        br = min(config.pe_rows, rp - r0)
        block = np.frombuffer(buf, np.int8, count=e * br * 4, offset=pos)
        vals[r0:r0 + br] = block.reshape(e, br, 4).transpose(1, 0, 2).reshape(br, 4 * e)
        pos += e * br * 4
        if n != m:
            dt = np.dtype("<u2") if iw == 16 else np.dtype(np.uint8)
            words = np.frombuffer(buf, dt, count=e * br, offset=pos).reshape(e, br).T
            for j in range(4):
                idx[r0:r0 + br, j::4] = (words >> (ib * j)) & ((1 << ib) - 1)
            pos += e * br * (iw // 8)
    indices = (np.zeros((rows, 0), np.uint8) if n == m
               else _pack_bits(idx[:rows, :steps], ib).reshape(rows, -1))
    return PackedNM(values=vals[:rows, :steps].astype(np.int64), indices=indices, n=n, m=m, k=k)
