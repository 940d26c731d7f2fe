"""`make bitstream`: log parsing, summaries, the README table, and (marked synth) a real ECP5
synthesis + place and route of the whole kernel's self-test top on a small config."""

import json

import pytest

from bitstreams.build import BEGIN, END, main, table, update_readme
from bitstreams.ecp5 import parse_nextpnr_log, parse_yosys_cells
from hw.config import preset

# Excerpts in the formats nextpnr-ecp5 0.11 and Yosys 0.70 print (two timing reports: the
# pre-route estimate first, then the final one).
NEXTPNR_LOG = """\
Info: Device utilisation:
Info: 	          TRELLIS_IO:       11/     365     3%
Info: 	          MULT18X18D:       90/     156    57%
Info: 	              DP16KD:      150/     208    72%
Info: 	        TRELLIS_COMB:    40000/   83640    47%
Info:
Info: Max frequency for clock '$glbnet$clk': 71.30 MHz (FAIL at 100.00 MHz)
Info: Routing..
Info: Critical path report for clock '$glbnet$clk' (posedge -> posedge):
Info:       type curr  total name
Info:   clk-to-q  0.52  0.52 Source selftest.kernel.w3_DFFR_Q.Q
Info:    routing  1.10  1.62 Net selftest.kernel.w3 (10,10) -> (11,12)
Info:       logic 0.24  1.86 Source selftest.kernel.eng.add.A
Info:      setup  0.10 11.20 Sink selftest.kernel.eng.acc_DFF.D
Info: 11.2 ns logic, 3.1 ns routing
Info:
Info: Max frequency for clock '$glbnet$clk': 88.50 MHz (FAIL at 100.00 MHz)
"""

YOSYS_LOG = """\
3.50. Printing statistics.

=== top ===

     1304 cells
      150   DP16KD
       90   MULT18X18D
    40000   LUT4
"""


def test_the_final_timing_report_gives_fmax_and_the_utilisation_is_read():
    rep = parse_nextpnr_log(NEXTPNR_LOG)
    assert rep["fmax"]["$glbnet$clk"] == {"mhz": 88.5, "target_mhz": 100.0, "pass": False}
    assert rep["utilisation"]["MULT18X18D"] == {"used": 90, "available": 156}
    assert rep["utilisation"]["TRELLIS_COMB"] == {"used": 40000, "available": 83640}
    assert rep["critical_path"][0].endswith("Source selftest.kernel.w3_DFFR_Q.Q")
    assert rep["critical_path"][-1] == "11.2 ns logic, 3.1 ns routing"


def test_yosys_cell_counts_skip_the_totals():
    assert parse_yosys_cells(YOSYS_LOG) == {"DP16KD": 150, "MULT18X18D": 90, "LUT4": 40000}


def test_the_table_is_generated_from_the_summaries(tmp_path):
    (tmp_path / "ecp5-ecp5").mkdir()
    (tmp_path / "ecp5-ecp5" / "summary.json").write_text(json.dumps({
        "preset": "ecp5", "target": "ecp5", "fmax_mhz": 88.5, "clock_mhz": 100.0,
        "meets_clock": False, "utilisation": parse_nextpnr_log(NEXTPNR_LOG)["utilisation"]}))
    (tmp_path / "u200-xcup").mkdir()
    (tmp_path / "u200-xcup" / "summary.json").write_text(json.dumps({
        "preset": "u200", "target": "xcup", "label": "Yosys estimate",
        "utilisation": {"LUT": 123456, "FF": 2000, "DSP48E2": 6144, "BRAM": 10, "URAM": 0},
        "part_capacity": {"DSP48E2": 6840}}))
    text = table(tmp_path)
    assert "| ecp5 | ecp5 | 40,000 LUT4 / 83,640 |" in text
    assert "88.5 MHz (misses 100)" in text
    assert "| u200 | xcup | 123,456 LUT6 |" in text and "6,144 / 6,840 DSP48E2" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold\n{END}\noutro\n")
    update_readme(readme, text)
    assert readme.read_text() == f"intro\n{BEGIN}\n{text}\n{END}\noutro\n"
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="has no <!-- bitstreams:begin -->"):
        update_readme(readme, text)


def test_the_command_line_refuses_half_a_build(capsys):
    with pytest.raises(SystemExit):
        main(["--preset", "ecp5"])
    assert "--preset and --target go together" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([])
    assert "nothing to do" in capsys.readouterr().err


def test_a_preset_too_big_for_the_ecp5_is_refused_before_building(tmp_path):
    from bitstreams.ecp5 import BuildFailed, build

    with pytest.raises(BuildFailed, match="needs 6144 multipliers; the LFE5U-85F has 156"):
        build(preset("u200"), tmp_path / "out", tmp_path / "work")


@pytest.mark.synth
def test_a_small_kernel_self_test_places_and_routes_and_keeps_its_multipliers(tmp_path):
    """The whole kernel's self-test top on the ULX3S 85F through Yosys, nextpnr and ecppack:
    the tiny preset's 4 x 4 array with a 16 KiB scratchpad (its 1 MiB one does not fit an
    ECP5) and one-lane vector units, so that CI can afford it (a few minutes)."""
    import hashlib

    from bitstreams.ecp5 import build

    cfg = preset("tiny").replace(name="tiny-ecp5", spm_kib=16, softmax_lanes=1, vector_lanes=1,
                                 layernorm_int8=False, max_row=64, max_hidden=128, max_k=512)
    s = build(cfg, tmp_path / "out", tmp_path / "work", clock_mhz=50,
              layer={"hidden": 16, "intermediate": 32, "tokens": 4}, log=print)
    used = s["utilisation"]["MULT18X18D"]["used"]
    print(f"MULT18X18D {used}, Fmax {s['fmax_mhz']} MHz, {s['wall_s']} s")
    # place and route kept every multiplier synthesis inferred, the engine's among them
    assert used == s["yosys_cells"]["MULT18X18D"]
    assert used >= cfg.num_pes
    assert s["fmax_mhz"] > 0 and s["clock_mhz"] == 50
    bit = (tmp_path / "out" / "top.bit").read_bytes()
    assert len(bit) > 100_000 and hashlib.sha256(bit).hexdigest() == s["bitstream"]["sha256"]
