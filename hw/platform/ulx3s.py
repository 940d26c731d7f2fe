"""ULX3S (ECP5 LFE5U-85F) board top: the built-in self-test at a PLL clock, verdict on the LEDs."""

from __future__ import annotations

from amaranth import ClockDomain, ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from .self_test import SelfTest

__all__ = ["Ulx3sSelfTest", "pll_settings", "LEDS"]

#: What each LED shows (LED index -> meaning), for the README and the summary.
LEDS = {0: "pass", 1: "fail", 2: "running", 7: "heartbeat (clock alive)"}
_CLKIN_MHZ = 25.0


def pll_settings(out_mhz: float, in_mhz: float = _CLKIN_MHZ) -> dict[str, int]:
    """EHXPLLL dividers giving exactly ``out_mhz`` from ``in_mhz`` (feedback from CLKOP).

    ``out = in * CLKFB_DIV / CLKI_DIV``, VCO ``= out * CLKOP_DIV`` in [400, 800] MHz, phase
    detector input ``in / CLKI_DIV`` >= 10 MHz (the ranges ecppll uses), VCO nearest 600 MHz.
    """
    for ci in range(1, 129):
        if in_mhz / ci < 10:
            break
        for fb in range(1, 81):
            out = in_mhz * fb / ci
            if abs(out - out_mhz) > 1e-9:
                continue
            ops = [op for op in range(1, 129) if 400 <= out * op <= 800]
            if ops:  # the VCO nearest the middle of its range, as ecppll chooses
                op = min(ops, key=lambda op: abs(out * op - 600))
                return {"CLKI_DIV": ci, "CLKFB_DIV": fb, "CLKOP_DIV": op,
                        "CLKOP_CPHASE": op // 2 - 1 if op > 1 else 0}
    raise ValueError(f"no EHXPLLL setting gives exactly {out_mhz} MHz from {in_mhz} MHz "
                     f"(choose a multiple of {in_mhz} / k for small k, e.g. 50, 75, 100)")


class Ulx3sSelfTest(Elaboratable):
    """:class:`~hw.platform.self_test.SelfTest` on a ULX3S at ``clock_mhz`` (EHXPLLL from the
    25 MHz oscillator). The fire button 1 (``button_fire`` 0) holds it in reset; releasing it
    runs the test again. LEDs as :data:`LEDS`.

    Parameters
    ----------
    clock_mhz : float
        Kernel clock; the timing constraint nextpnr closes against.
    **selftest
        Arguments of :class:`SelfTest` (config, image, buffers, expected_crc).
    """

    def __init__(self, *, clock_mhz: float, **selftest):
        self.pll = pll_settings(clock_mhz)
        self.clock_mhz = clock_mhz
        self.selftest = SelfTest(**selftest)

    def elaborate(self, platform):
        m = Module()
        m.submodules.clk25 = clk25 = io.Buffer("i", platform.request("clk25", 0, dir="-"))
        m.domains.sync = ClockDomain("sync")
        locked, clk = Signal(), Signal()
        m.d.comb += ClockSignal("sync").eq(clk)
        p = self.pll
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=str(int(_CLKIN_MHZ)),
            a_FREQUENCY_PIN_CLKOP=f"{self.clock_mhz:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
            p_CLKI_DIV=p["CLKI_DIV"], p_CLKFB_DIV=p["CLKFB_DIV"], p_CLKOP_DIV=p["CLKOP_DIV"],
            p_CLKOP_CPHASE=p["CLKOP_CPHASE"], p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            i_CLKI=clk25.i, i_CLKFB=clk, i_RST=0, i_STDBY=0,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=0, i_PHASESTEP=0, i_PHASELOADREG=0,
            i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_CLKOP=clk, o_LOCK=locked,
        )
        platform.add_clock_constraint(clk, self.clock_mhz * 1e6)
        m.submodules.fire = fire = io.Buffer("i", platform.request("button_fire", 0, dir="-"))
        m.submodules.reset_sync = ResetSynchronizer(~locked | fire.i, domain="sync")

        m.submodules.selftest = st = self.selftest
        leds = []
        for k in range(8):
            m.submodules[f"led{k}"] = led = io.Buffer("o", platform.request("led", k, dir="-"))
            leds.append(led)
        heartbeat = Signal(28)
        m.d.sync += heartbeat.eq(heartbeat + 1)
        m.d.comb += [
            leds[0].o.eq(st.passed),
            leds[1].o.eq(st.done & ~st.passed),
            leds[2].o.eq(st.busy),
            leds[7].o.eq(heartbeat[-1]),
        ]
        return m
