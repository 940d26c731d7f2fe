"""The built-in self-test workload: a seeded random pruned BERT layer as an on-chip memory image.

A board with no host (the ECP5 self-test top, :mod:`hw.platform.self_test`) runs the kernel on
a Program held in on-chip memory. This module makes that memory: a random BERT layer with
seeded weights, pruned to N:M, quantized and compiled for the config by :mod:`sw.compiler`,
with a seeded random input sequence (and a padded tail, so the key mask matters). The ``ref``
backend runs the same buffers and gives the expected output; the board folds the output
buffer into a CRC-32 and compares it with :attr:`SelfTestImage.crc`.

Memory layout (byte addresses, each buffer 64-byte aligned): program, params, input, output
(then the weight banks of a config with several weight ports).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from hw.config import AcceleratorConfig
from sw.compiler.isa import Status, buffers

__all__ = ["SelfTestImage", "selftest_image", "DEFAULT_LAYER"]

#: hidden, heads, intermediate, tokens (of which the last two are padding), N:M (N of config.m)
DEFAULT_LAYER = {"hidden": 32, "heads": 2, "intermediate": 64, "tokens": 8, "n": 2}
_ALIGN = 64


@dataclass(frozen=True)
class SelfTestImage:
    """Device memory for a self-test run and what the run must give."""

    words: list[int]  #: little-endian 32-bit words from byte address 0
    buffers: dict[str, tuple[int, int]]  #: name -> (byte address, bytes), isa.buffers order
    output: bytes  #: the output buffer the ``ref`` backend computed
    crc: int  #: CRC-32 (zlib / ISO-HDLC) of the words covering the correct output buffer
    crc_as_loaded: int  #: the same for the image as loaded (differs if it was corrupted)
    layer: dict  #: the layer's shape and seed

    @property
    def output_words(self) -> range:
        addr, size = self.buffers["output"]
        return range(addr // 4, (addr + size + 3) // 4)


def _align(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def selftest_image(config: AcceleratorConfig, *, seed: int = 0, layer: dict | None = None,
                   corrupt: tuple[str, int] | None = None) -> SelfTestImage:
    """Compile the self-test layer for ``config``; run it on ``ref`` for the expected output.

    ``corrupt = (buffer, byte)`` flips every bit of that byte in the returned image *after* the
    expected output was computed: a memory fault the self-test must report.
    :attr:`SelfTestImage.crc_as_loaded` is what the ref backend computes from that image.
    """
    import torch
    from transformers import BertConfig, BertModel

    from sw.compiler.encoder import compile_encoder
    from sw.prune.sparsify import NMPlan, apply_masks, squash

    shape = {**DEFAULT_LAYER, **(layer or {})}
    n, m = shape["n"], config.m
    if not 1 <= n <= m:
        raise ValueError(f"self-test N must be in 1..{m} (config m), got {n!r}")
    torch.manual_seed(seed)
    model = BertModel(BertConfig(
        hidden_size=shape["hidden"], num_hidden_layers=1, num_attention_heads=shape["heads"],
        intermediate_size=shape["intermediate"], vocab_size=100)).eval()
    if n != m:
        apply_masks(model, NMPlan.uniform(model, f"{n}:{m}"))
        squash(model)
    tokens = shape["tokens"]
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 100, (5, tokens), generator=g)
    masks = torch.ones(5, tokens, dtype=torch.bool)
    masks[4, max(1, tokens - 2):] = False
    with torch.no_grad():
        emb = model.embeddings(input_ids=ids)
    comp = compile_encoder(model, config, emb[:4], masks[:4])
    x = np.clip(np.round(emb[4].numpy() / comp.in_scale), -128, 127).astype(np.int8)

    contents = {**comp.buffers(), "input": comp.pack_input(x, masks[4].numpy()),
                "output": bytes(comp.output_bytes)}
    places, addr = {}, 0
    for name in buffers(config):
        places[name] = (addr, len(contents[name]))
        addr = _align(addr + len(contents[name]))
    memory = bytearray(addr)
    for name, (a, size) in places.items():
        memory[a: a + size] = contents[name]

    output = _ref_output(config, memory, places)
    loaded = bytearray(memory)
    if corrupt is not None:
        name, offset = corrupt
        if name not in places or not 0 <= offset < places[name][1]:
            raise ValueError(f"corrupt={corrupt!r}: not a byte of the program, params, input "
                             f"or output buffer ({places})")
        loaded[places[name][0] + offset] ^= 0xFF
    words = np.frombuffer(bytes(loaded), "<u4").tolist()
    return SelfTestImage(words=words, buffers=places, output=output, crc=_crc(output),
                         crc_as_loaded=_crc(_ref_output(config, loaded, places)),
                         layer={**shape, "seed": seed})


def _crc(output: bytes) -> int:
    """CRC-32 of the words covering ``output`` (the board reads whole words; the tail is 0)."""
    return zlib.crc32(output + bytes(-len(output) % 4))


def _ref_output(config, memory: bytearray, buffers) -> bytes:
    """The output buffer after the ref backend runs ``memory`` (a copy; ``memory`` is kept)."""
    from sw.driver.executor import execute

    memory = bytearray(memory)
    view = memoryview(memory)
    mem = {k: view[a: a + s] for k, (a, s) in buffers.items()}
    try:
        status, index, detail, _ = execute(config, mem, bytearray(config.spm_bytes))
    finally:
        for v in mem.values():
            v.release()
        view.release()
    if status != Status.OK:
        raise RuntimeError(f"the self-test Program stops on the ref backend: {status.name} at "
                           f"command {index} ({detail})")
    a, n = buffers["output"]
    return bytes(memory[a: a + n])
