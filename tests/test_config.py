"""AcceleratorConfig: validation, JSON round trip, presets."""

import json
import re

import pytest

from hw.config import ACC_SAFE_TERMS, PRESETS, AcceleratorConfig, ConfigError, preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trips_through_json(name, tmp_path):
    cfg = preset(name)
    assert AcceleratorConfig.from_json(cfg.to_json()) == cfg
    path = tmp_path / "config.json"
    cfg.to_json(path)
    assert AcceleratorConfig.from_json(path) == cfg
    assert AcceleratorConfig.from_json(str(path)) == cfg


def test_presets_are_sized_for_their_parts():
    assert {"tiny", "ecp5", "u200", "u280"} <= set(PRESETS)
    # the PE array must fit the DSPs of the card it was sized for
    for name in ("u200", "u280", "ecp5"):
        cfg = preset(name)
        assert 0 < cfg.dsps <= cfg.part_dsps, name
    assert preset("u200").dsps == 6144 and preset("u280").dsps == 8192
    for cfg in PRESETS.values():
        assert cfg.max_row >= 512  # issue 4: rows up to at least 512


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"m": 6}, r"AcceleratorConfig.m = 6: M must be 4, 8 or 16"),
        ({"m": 4, "n_max": 5}, r"n_max = 5: must be in 1..M = 1..4"),
        ({"n_max": 0}, r"n_max = 0"),
        ({"pe_rows": 0}, r"pe_rows = 0: must be at least 1"),
        ({"pe_cols": -3}, r"pe_cols = -3"),
        ({"act_bits": 4}, r"act_bits = 4: the numerics contract fixes it at 8"),
        ({"max_k": 1030}, r"max_k = 1030: must be a positive multiple of M = 4"),
        ({"max_k": ACC_SAFE_TERMS + 4 - ACC_SAFE_TERMS % 4}, r"int32 accumulation could overflow"),
        ({"clock_mhz": 0}, r"clock_mhz = 0"),
        ({"macs_per_dsp": 3}, r"macs_per_dsp = 3"),
        ({"layernorm_int8": 1}, r"layernorm_int8 = 1: must be true or false"),
        ({"macs_per_dsp": 2, "pe_cols": 5}, r"pe_cols = 5: macs_per_dsp = 2 packs columns in "
                                             r"pairs: pe_cols must be even"),
        ({"pe_rows": 2.0}, r"pe_rows = 2.0: must be an int"),
        ({"pe_rows": True}, r"pe_rows = True: must be an int"),
        ({"name": "a b"}, r"name = 'a b'"),
        ({"weight_port_bytes": 24}, r"weight_port_bytes = 24: must be 0 \(no weight port\) "
                                    r"or a power of two from 4 to 128"),
        ({"weight_port_bytes": 256}, r"weight_port_bytes = 256"),
        # M = 4: a 16-byte beat holds 4 rows' value words or 16 rows' index words
        ({"weight_port_bytes": 16, "pe_rows": 8}, r"pe_rows = 8: the 16-byte weight port "
                                                  r"fills 4 rows' value banks and 16 rows' "
                                                  r"index banks per beat: pe_rows must be a "
                                                  r"multiple of 16"),
        ({"spm_lanes": 3}, r"spm_lanes = 3: must be a power of two from 1 to 64"),
        ({"spm_lanes": 0}, r"spm_lanes = 0"),
        ({"spm_lanes": 128}, r"spm_lanes = 128"),
        ({"spm_kib": 2**22 + 1}, r"spm_kib = 4194305: scratchpad addresses are 32-bit"),
    ],
)
def test_bad_configs_name_the_field_and_value(changes, message):
    with pytest.raises(ConfigError, match=message):
        preset("tiny").replace(**changes)


def test_malformed_json_is_refused_clearly(tmp_path):
    with pytest.raises(ConfigError, match="malformed config JSON"):
        AcceleratorConfig.from_json('{"m": 4,')
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) \['pe_rowz'\]"):
        AcceleratorConfig.from_json(json.dumps({"pe_rowz": 4}))
    with pytest.raises(ConfigError, match="must be a JSON object"):
        AcceleratorConfig.from_json("[1, 2]")
    with pytest.raises(ConfigError, match=r"m = '4': must be an int"):
        AcceleratorConfig.from_json('{"m": "4"}')
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    with pytest.raises(ConfigError, match=str(bad)):
        AcceleratorConfig.from_json(bad)
    missing = tmp_path / "missing.json"
    for arg in (missing, str(missing), f"  {missing}"):
        with pytest.raises(ConfigError, match=re.escape(f"no config file '{arg}' (nor JSON")):
            AcceleratorConfig.from_json(arg)
    for arg in (tmp_path, str(tmp_path)):
        with pytest.raises(ConfigError, match=re.escape(f"config file '{tmp_path}' is a dir")):
            AcceleratorConfig.from_json(arg)
    with pytest.raises(ConfigError, match=r"cannot read config file 'x{297}\.\.\.': OSError: "
                                          r".{,300}$"):
        AcceleratorConfig.from_json("x" * 5000)  # longer than a file name may be
    with pytest.raises(ConfigError, match="a config is JSON text or a file path, got bytes"):
        AcceleratorConfig.from_json(b"{}")
    assert AcceleratorConfig.from_json("\n " + preset("tiny").to_json()) == preset("tiny")


def test_largest_scratchpad_is_accepted():
    assert preset("tiny").replace(spm_kib=2**22).spm_bytes == 2**32


def test_unknown_preset():
    with pytest.raises(ConfigError, match=r"unknown preset 'huge'; known presets: \["):
        preset("huge")


def test_check_nm():
    cfg = preset("tiny").replace(n_max=2)
    cfg.check_nm(1)
    cfg.check_nm(2)
    cfg.check_nm(4)  # dense is always available
    with pytest.raises(ValueError, match="N = 3"):
        cfg.check_nm(3)
    with pytest.raises(ValueError, match="M = 8"):
        cfg.check_nm(2, 8)


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        preset("tiny").m = 8


def test_wide_staging_needs_ports_that_hold_an_entry_or_a_row_block():
    tiny = preset("tiny")  # M = 4, 4 rows
    assert not tiny.wide_staging and not tiny.wide_v_staging  # one lane: the narrow paths
    assert tiny.replace(spm_lanes=2).wide_staging
    assert not tiny.replace(m=16, n_max=16, spm_lanes=2).wide_staging  # 8 bytes < M = 16
    assert tiny.replace(m=16, n_max=16, spm_lanes=4).wide_staging
    assert not tiny.replace(pe_rows=9, spm_lanes=2).wide_v_staging  # 9 rows > 8 bytes
    assert tiny.replace(pe_rows=8, spm_lanes=2).wide_v_staging


def test_derived_quantities():
    cfg = preset("u200")
    assert cfg.index_bits == 3
    assert cfg.num_pes == 96 * 128
    assert preset("tiny").index_bits == 2
    # the weight port's row granule: 4-byte value words, 8- or 16-bit index words per beat
    assert preset("tiny").weight_rows_align == 1
    assert cfg.weight_row_granule == 32  # M = 8: 16-bit words
    assert cfg.replace(weight_ports=1).weight_rows_align == 32
    assert preset("tiny").replace(weight_port_bytes=8, pe_rows=8).weight_rows_align == 8
    # several weight ports: rows pad to whole row blocks, each port streams R / P of them
    assert cfg.weight_ports == 3 and cfg.weight_rows_align == 96 and cfg.port_rows == 32


@pytest.mark.parametrize("changes, message", [
    ({"weight_ports": 0}, "weight_ports = 0: must be 1 to 4"),
    ({"weight_ports": 5}, "weight_ports = 5: must be 1 to 4"),
    ({"weight_ports": 2, "weight_port_bytes": 0}, "needs weight_port_bytes > 0"),
    ({"weight_ports": 2}, "pe_rows must be a multiple of 32 x weight_ports = 64"),
    ({"weight_ports": 4, "pe_rows": 64}, "pe_rows = 64: .* multiple of 32 x weight_ports = 128"),
])
def test_bad_weight_port_counts_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        preset("u200").replace(**changes)


def test_a_config_with_one_weight_port_serialises_as_before():
    """weight_ports postdates saved configs: at its default it is left out of the JSON (so
    Program fingerprints and bitstream summaries stay valid) and read back as 1."""
    cfg = preset("tiny")
    assert "weight_ports" not in cfg.to_dict()
    assert AcceleratorConfig.from_json(cfg.to_json()) == cfg
    u200 = preset("u200")
    assert u200.to_dict()["weight_ports"] == 3
    assert AcceleratorConfig.from_json(u200.to_json()) == u200


def test_mask_lanes_divide_the_softmax_lanes_and_fit_one_read():
    tiny = preset("tiny")  # P = 4, one-word ports: a byte a cycle
    assert tiny.mask_lanes == 1
    assert preset("u200").mask_lanes == 64  # a whole mask word from a 128-byte read
    # a read holds 4 L - 3 bytes from any byte; the keys of a cycle share a mask word
    assert tiny.replace(spm_lanes=2).mask_lanes == 4  # 5 bytes: the 4-key word
    assert tiny.replace(softmax_lanes=8, spm_lanes=2).mask_lanes == 4  # half a word
    assert tiny.replace(softmax_lanes=6, spm_lanes=2).mask_lanes == 3
    assert tiny.replace(softmax_lanes=7, spm_lanes=2).mask_lanes == 1  # no divisor fits


def test_device_memory_read_delay_is_model_only_and_serialises_as_before():
    """mem_read_delay (the kernel model's device-memory latency beyond the benches' RAM):
    left out of the JSON at its default 0, kept otherwise, refused outside 0..4096."""
    cfg = preset("u200")
    assert "mem_read_delay" not in cfg.to_dict()
    slow = cfg.replace(mem_read_delay=30)
    assert slow.to_dict()["mem_read_delay"] == 30
    assert AcceleratorConfig.from_json(slow.to_json()) == slow
    for bad in (-1, 4097):
        with pytest.raises(ConfigError, match=f"mem_read_delay = {bad}: must be in 0..4096"):
            cfg.replace(mem_read_delay=bad)
