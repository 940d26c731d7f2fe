"""The ECP5 board's built-in self-test, in the Amaranth simulator: the whole kernel runs a
compiled BERT layer from on-chip memory, the CRC of its output matches the ref backend's, and
a corrupted image is reported as a failure."""

import zlib

import pytest
from amaranth.sim import Simulator

from hw.config import AcceleratorConfig, preset
from hw.platform.axi_ram import RESP_SLVERR, AxiRam
from hw.platform.self_test import SelfTest, simulate
from hw.platform.ulx3s import pll_settings
from sw.compiler.selftest import selftest_image

SEED = 3
SMALL = {"hidden": 16, "intermediate": 32, "tokens": 4}  # what the simulator affords
MAX_CYCLES = 400_000


def _run(dut):
    return simulate(dut, MAX_CYCLES)


@pytest.mark.parametrize(("seed", "layer"), [(SEED, SMALL), (0, None)],
                         ids=["small", "the-ecp5-bitstream-image"])
def test_the_self_test_passes_and_its_crc_is_the_ref_outputs(seed, layer):
    cfg = preset("ecp5")
    img = selftest_image(cfg, seed=seed, layer=layer)
    padded = img.output + bytes(-len(img.output) % 4)
    assert img.crc == img.crc_as_loaded == zlib.crc32(padded)
    res = _run(SelfTest(config=cfg, image=img.words, buffers=img.buffers, expected_crc=img.crc))
    print(f"seed {seed}: {res['cycles']} cycles")
    assert res["done"] and res["status"] == 0
    assert res["crc"] == img.crc  # the hardware CRC-32 is zlib's, over the ref's output
    assert res["passed"]


def test_a_corrupted_image_fails_the_self_test():
    """One input byte flipped in on-chip memory: the kernel computes what the ref backend
    computes from the corrupted image, and the check against the good CRC fails."""
    cfg = preset("ecp5")
    good = selftest_image(cfg, seed=SEED, layer=SMALL)
    bad = selftest_image(cfg, seed=SEED, layer=SMALL, corrupt=("input", 64 + 5))
    assert bad.crc == good.crc and bad.crc_as_loaded != good.crc
    res = _run(SelfTest(config=cfg, image=bad.words, buffers=bad.buffers, expected_crc=bad.crc))
    assert res["done"] and res["status"] == 0  # the kernel runs; the result is wrong
    assert res["crc"] == bad.crc_as_loaded
    assert not res["passed"]


def test_self_test_arguments_are_checked():
    cfg = AcceleratorConfig()
    with pytest.raises(ValueError, match=r"must name \('program', 'params', 'input', 'output'\)"):
        SelfTest(config=cfg, image=[0] * 8, buffers={"program": (0, 4)}, expected_crc=0)
    bufs = {"program": (0, 4), "params": (4, 4), "input": (8, 4), "output": (12, 40)}
    with pytest.raises(ValueError, match=r"'output' = \(12, 40\) is not a word-aligned range"):
        SelfTest(config=cfg, image=[0] * 8, buffers=bufs, expected_crc=0)
    with pytest.raises(ValueError, match="AxiRam init has 9 words, more than depth 8"):
        AxiRam(depth=8, init=[0] * 9)


def test_axi_ram_answers_out_of_range_beats_with_slverr_and_writes_nothing():
    dut = AxiRam(depth=4, init=[0x11111111, 0x22222222, 0x33333333, 0x44444444])
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    seen = {}

    async def bench(ctx):
        axi = dut.axi
        # a 3-beat write burst from word 3: beat 0 lands, beats 1-2 are outside
        ctx.set(axi.awaddr, 12)
        ctx.set(axi.awlen, 2)
        ctx.set(axi.awvalid, 1)
        await ctx.tick().until(axi.awready)
        ctx.set(axi.awvalid, 0)
        for beat in range(3):
            ctx.set(axi.wdata, 0xA0 + beat)
            ctx.set(axi.wstrb, 0b1111)
            ctx.set(axi.wlast, beat == 2)
            ctx.set(axi.wvalid, 1)
            await ctx.tick().until(axi.wready)
        ctx.set(axi.wvalid, 0)
        ctx.set(axi.bready, 1)
        (seen["bresp"],) = await ctx.tick().sample(axi.bresp).until(axi.bvalid)
        ctx.set(axi.bready, 0)
        # read words 2..5 back
        ctx.set(axi.araddr, 8)
        ctx.set(axi.arlen, 3)
        ctx.set(axi.arvalid, 1)
        await ctx.tick().until(axi.arready)
        ctx.set(axi.arvalid, 0)
        ctx.set(axi.rready, 1)
        beats = []
        while len(beats) < 4:
            await ctx.tick()
            if ctx.get(axi.rvalid):
                beats.append((ctx.get(axi.rdata), ctx.get(axi.rresp), ctx.get(axi.rlast)))
        seen["beats"] = beats

    sim.add_testbench(bench)
    sim.run()
    assert seen["bresp"] == RESP_SLVERR
    assert seen["beats"] == [(0x33333333, 0, 0), (0xA0, 0, 0), (0, RESP_SLVERR, 0),
                             (0, RESP_SLVERR, 1)]


def test_pll_settings_hit_the_clock_exactly_or_refuse():
    assert pll_settings(100) == {"CLKI_DIV": 1, "CLKFB_DIV": 4, "CLKOP_DIV": 6,
                                 "CLKOP_CPHASE": 2}  # what ecppll -i 25 -o 100 gives
    for mhz in (50, 75, 125):
        p = pll_settings(mhz)
        assert 25 * p["CLKFB_DIV"] / p["CLKI_DIV"] == mhz
        assert 400 <= mhz * p["CLKOP_DIV"] <= 800
    with pytest.raises(ValueError, match="no EHXPLLL setting gives exactly 33.3 MHz"):
        pll_settings(33.3)
