"""sw/compiler/weight_layout.py: LINEAR weights as the weight port streams them."""

import numpy as np
import pytest

from hw.config import AcceleratorConfig
from sw.compiler.isa import Command, Op, check_shape, linear_param_bytes
from sw.compiler.weight_layout import (
    entries,
    linear_weight_bytes,
    read_weights,
    rows_padded,
    weight_banks,
    weight_blob,
)
from sw.nm import nm_mask, pack, unpack

SEED = 11


def _weights(rng, rows, k, n, m):
    w = rng.integers(-128, 128, (rows, k))
    return w * nm_mask(w, n, m) if n != m else w


@pytest.mark.parametrize("port", [0, 4, 8, 64])
@pytest.mark.parametrize("m, n, rows, k", [(4, 2, 5, 37), (8, 3, 70, 100), (8, 8, 33, 16),
                                           (16, 1, 3, 50), (4, 4, 1, 4)])
def test_blobs_round_trip_and_have_the_stated_size(port, m, n, rows, k):
    rng = np.random.default_rng(SEED)
    R = 64 if port else 4
    cfg = AcceleratorConfig(m=m, n_max=m, pe_rows=R, weight_port_bytes=port)
    w = _weights(rng, rows, k, n, m)
    blob = weight_blob(pack(w, n, m), cfg)
    assert blob.dtype == np.uint8
    assert blob.size == linear_weight_bytes(rows, k, n, m, cfg)
    assert linear_param_bytes(rows, k, n, m, cfg)[0] == blob.size
    if port:
        assert blob.size % port == 0  # whole beats
    buf = bytes(7) + blob.tobytes() + bytes(5)
    assert np.array_equal(unpack(read_weights(buf, 7, rows, k, n, m, cfg)), w)


def test_without_a_port_the_blob_is_sw_nm_pack():
    rng = np.random.default_rng(SEED)
    w = _weights(rng, 6, 40, 2, 8)
    p = pack(w, 2, 8)
    blob = weight_blob(p, AcceleratorConfig(m=8, n_max=8))
    assert blob.tobytes() == p.values.astype(np.int8).tobytes() + p.indices.tobytes()


def test_the_port_layout_interleaves_rows_entry_by_entry():
    """M = 8 (16-bit index words), 8-byte beats (a granule of 4 rows), 8-row blocks: per row
    block, entry by entry, every row's 4 values then every row's index word (so an entry is
    whole before the next one starts); padding rows and slots are zero."""
    cfg = AcceleratorConfig(m=8, n_max=8, pe_rows=8, weight_port_bytes=8)
    rows, k, n = 10, 24, 2  # G = 3 groups, 6 slots: 2 entries; rows padded to 12, blocks 8 + 4
    assert cfg.weight_rows_align == 4
    assert rows_padded(rows, cfg) == 12 and entries(k, n, 8) == 2
    w = np.zeros((rows, k), np.int64)
    w[9, 8 + 5] = -3  # row 9 (row 1 of block 1), group 1, position 5
    blob = weight_blob(pack(w, n, 8), cfg)
    block0 = 2 * 8 * (4 + 2)  # 2 entries x 8 rows x (4 value bytes + 2 index bytes)
    assert blob.size == block0 + 2 * 4 * 6
    ent = blob[block0:].reshape(2, 4 * 4 + 4 * 2)  # block 1: [entry, 4 rows' values, words]
    v = ent[:, :16].reshape(2, 4, 4)  # [entry, row, lane]
    # group 1's two slots are 2 and 3 (entry 0, lanes 2 and 3): positions 0 (a zero) and 5
    assert v.view(np.int8)[0, 1, 3] == -3 and np.count_nonzero(v) == 1
    idx = np.ascontiguousarray(ent[:, 16:]).view("<u2").reshape(2, 4)  # [entry, row]
    # row 9's entry 0: slots 0, 1 (group 0, all zero) at positions 0, 1; slots 2, 3 at 0, 5
    assert idx[0, 1] == 0 | 1 << 3 | 0 << 6 | 5 << 9
    assert not idx[:, 2:].any()  # rows 10 and 11 pad the block: zero values and indices


def test_a_weight_offset_off_the_beat_is_refused():
    cfg = AcceleratorConfig(m=4, n_max=4, pe_rows=16, weight_port_bytes=16)
    args = {"a": 0, "a_stride": 64, "tokens": 8, "k": 64, "rows": 8, "n": 2, "m": 4,
            "w_off": 8, "rq_off": 4096, "out": 2048, "out_stride": 8, "out_bits": 8}
    assert "w_off = 8 must be a multiple of the weight port's 16 bytes" in check_shape(
        Command(Op.LINEAR, args), cfg)
    assert check_shape(Command(Op.LINEAR, args | {"w_off": 32}), cfg) is None


@pytest.mark.parametrize("ports, R, port", [(2, 16, 8), (3, 96, 64), (4, 128, 64)])
@pytest.mark.parametrize("m, n, rows, k", [(8, 4, 100, 72), (8, 8, 33, 16), (16, 1, 130, 20),
                                           (8, 2, 384, 40)])
def test_several_ports_split_every_row_block_into_equal_banks(ports, R, port, m, n, rows, k):
    """Port p's bank holds rows [p R / P, (p + 1) R / P) of every row block, laid out as a
    one-port config with blocks of R / P rows would lay them out; rows pad to whole blocks."""
    rng = np.random.default_rng(SEED + ports)
    cfg = AcceleratorConfig(m=m, n_max=m, pe_rows=R, weight_port_bytes=port,
                            weight_ports=ports)
    w = _weights(rng, rows, k, n, m)
    banks = weight_banks(pack(w, n, m), cfg)
    rp = -(-rows // R) * R
    assert rows_padded(rows, cfg) == rp
    assert banks.shape == (ports, linear_weight_bytes(rows, k, n, m, cfg))
    assert linear_param_bytes(rows, k, n, m, cfg)[0] == banks.shape[1]
    assert banks.shape[1] % port == 0  # whole beats
    one = cfg.replace(pe_rows=R // ports, weight_ports=1)
    if rows % R == 0:  # no padding rows (whose indices pack() would choose differently)
        for p in range(ports):
            mine = np.concatenate([w[b + p * R // ports: b + (p + 1) * R // ports]
                                   for b in range(0, rows, R)])
            assert np.array_equal(banks[p], weight_blob(pack(mine, n, m), one))
    bufs = [bytes(9) + b.tobytes() for b in banks]
    assert np.array_equal(unpack(read_weights(bufs, 9, rows, k, n, m, cfg)), w)
    with pytest.raises(ValueError, match="weight_banks"):
        weight_blob(pack(w, n, m), cfg)


@pytest.mark.parametrize("R", [8, 24, 40, 96, 128, 160, 192, 224, 2040])
def test_the_kernel_counts_row_blocks_exactly_for_every_32_bit_row_count(R):
    """With several weight ports the kernel sizes a LINEAR's banks from ceil(rows / R),
    computed as a multiply by a reciprocal through its 32 x 32 check multiplier: exact at the
    ends of the 32-bit range and on random counts, and its operands fit 32 bits."""
    from hw.top.accelerator import _RowBlocks

    rb = _RowBlocks(R)
    rng = np.random.default_rng(SEED)
    counts = [0, 1, R - 1, R, R + 1, 2**31, 2**32 - R, 2**32 - 2, 2**32 - 1]
    counts += rng.integers(0, 2**32, 20_000, dtype=np.uint64).tolist()
    for rows in counts:
        y = rb.operand(int(rows))
        assert y < 2**32 and rb.mult < 2**32
        assert rb.blocks(y * rb.mult) == -(-int(rows) // R), rows
