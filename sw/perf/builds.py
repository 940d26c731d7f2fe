"""What the committed build summaries say about a preset: the clock its latency is projected
at (:func:`preset_clock`: nextpnr's Fmax for ECP5, a stated clock for the Alveo parts), whether
it fits its part (:func:`preset_resources`), and the largest array of its columns that does
(:func:`fit_variant`). ``make bench`` and ``nmaccel run`` both read them here, so the same
cycles project to the same latency in both. A summary built for another config, or from RTL
other than the sources' now (``rtl_digest``), is still read, and labelled as such."""

from __future__ import annotations

import json
from pathlib import Path

from hw.config import AcceleratorConfig

__all__ = ["ALVEO_CLOCK_MHZ", "BITSTREAMS", "ECP5_SUMMARY", "read_json", "preset_clock",
           "preset_resources", "fit_variant"]

#: The Alveo kernel clock the projections assume (no open flow gives an Alveo Fmax).
ALVEO_CLOCK_MHZ = 300.0
#: where ``make bitstream`` writes its summaries (the repository's, wherever the bench runs)
BITSTREAMS = Path(__file__).resolve().parents[2] / "bitstreams"
#: the routed ECP5 build's summary, whose Fmax the ``ecp5`` projections use
ECP5_SUMMARY = BITSTREAMS / "ecp5-ecp5" / "summary.json"


#: what a build summary is, for :func:`read_json`'s errors
_SUMMARY_KIND = "build summary (make bitstream writes it)"


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``, or a ValueError that names the file and what it should be."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable {what} ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a {what} (a JSON {type(data).__name__}, not an object)")
    return data


def preset_clock(config: AcceleratorConfig, *, ecp5_summary: str | Path = ECP5_SUMMARY,
                 alveo_clock_mhz: float = ALVEO_CLOCK_MHZ) -> dict:
    """The clock the projections use, with its source: ``mhz`` is None when there is none."""
    if config.name == "ecp5" or config.part.upper().startswith("LFE5U"):
        path = Path(ecp5_summary)
        if not path.is_file():
            return {"mhz": None, "source": "none",
                    "label": f"no Fmax measured ({path} absent)"}
        s = read_json(path, _SUMMARY_KIND)
        if s.get("fmax_mhz") is None:
            return {"mhz": None, "source": "none",
                    "label": f"no Fmax measured ({path} has no fmax_mhz)"}
        fmax = float(s["fmax_mhz"])
        matches = s.get("config") == config.to_dict()
        path, rtl, _ = _summary_origin(path, s)
        label = f"{fmax:.1f} MHz (nextpnr Fmax)"
        if not matches:
            label += ", measured on a different ecp5 config"
        if rtl is False:
            label += ", measured on other RTL"
        return {"mhz": fmax, "source": "nextpnr Fmax", "file": str(path),
                "meets_clock": s.get("meets_clock"), "config_matches": matches,
                "rtl_matches": rtl,
                "source_revision": s.get("source"), "label": label}
    if config.part.lower().startswith("xcu"):
        return {"mhz": float(alveo_clock_mhz), "source": "assumed",
                "label": f"{alveo_clock_mhz:g} MHz (assumed Alveo kernel clock)"}
    return {"mhz": float(config.clock_mhz), "source": "assumed",
            "label": f"{config.clock_mhz:g} MHz (assumed: config clock_mhz, no bitstream)"}


def preset_resources(config: AcceleratorConfig, *, bitstreams: str | Path = BITSTREAMS) -> dict:
    """Whether the preset fits its part, from the build summary ``make bitstream`` wrote:
    ``bitstreams/<preset>-xcup/summary.json`` (Yosys estimates for UltraScale+ parts) or
    ``bitstreams/ecp5-ecp5/summary.json`` (a routed ECP5 design). ``fits`` is None without a
    summary; ``over`` lists the resources an estimate puts above 100 % of the part;
    ``config_matches`` and ``rtl_matches`` whether it was built for this config and from the
    RTL the sources generate now (None: the summary records no ``rtl_digest``), the label
    saying so when not."""
    root = Path(bitstreams)
    for target in ("xcup", "ecp5"):
        path = root / f"{config.name}-{target}" / "summary.json"
        if path.is_file():
            break
    else:
        return {"fits": None, "label": "no resource figures (no bitstream summary)"}
    s = read_json(path, _SUMMARY_KIND)
    matches = s.get("config") == config.to_dict()
    path, rtl, other = _summary_origin(path, s)
    other = ("" if matches else ", for a different config") + other
    if target == "ecp5":
        return {"fits": True, "file": str(path), "config_matches": matches,
                "rtl_matches": rtl, "label": f"routed by nextpnr ({path}){other}: fits"}
    pct = s.get("percent", {})
    over = {k: v for k, v in pct.items() if v > 100}
    what = ", ".join(f"{k} {v:.0f} %" for k, v in sorted(over.items(), key=lambda kv: -kv[1]))
    label = (f"{s.get('label', 'estimate')} ({path}){other}: "
             + (f"does not fit the part ({what})" if over else
                f"fits the part (at most {max(pct.values(), default=0):.0f} %)"))
    return {"fits": not over, "over": over, "percent": pct, "file": str(path),
            "config_matches": matches, "rtl_matches": rtl, "label": label}


def fit_variant(config: AcceleratorConfig, *, bitstreams: str | Path = BITSTREAMS):
    """``(variant, resources)`` for an Alveo preset that its sliced estimate
    (``bitstreams/<preset>-xcup/summary.json``, built for this config) says does not fit:
    :func:`bitstreams.xcup.fitting_config`, the largest array of the preset's columns the
    same estimate puts within the part, and its resources in :func:`preset_resources`' form
    (``variant_of``: the preset). None without such an estimate, or when the preset fits."""
    from bitstreams import xcup

    path = Path(bitstreams) / f"{config.name}-xcup" / "summary.json"
    if not path.is_file():
        return None
    s = read_json(path, _SUMMARY_KIND)
    if s.get("method") != "slices" or s.get("config") != config.to_dict():
        return None  # not an estimate of this config: nothing to re-evaluate
    variant = xcup.fitting_config(config, s)
    if variant is None:
        return None
    pct = xcup.rescale(s, variant.pe_rows, variant.pe_cols)["percent"]
    path, rtl, other = _summary_origin(path, s)
    label = (f"{config.name}'s {s.get('label', 'estimate')} ({path}){other} re-evaluated at "
             f"{variant.pe_rows} x {variant.pe_cols} PEs (bitstreams.xcup.rescale): fits the "
             f"part (at most {max(pct.values()):.0f} %), the largest array of "
             f"{variant.pe_cols} columns that does, {variant.weight_ports} weight port"
             f"{'s' if variant.weight_ports > 1 else ''}")
    return variant, {"fits": True, "over": {}, "percent": pct, "file": str(path),
                     "variant_of": config.name, "config_matches": True, "rtl_matches": rtl,
                     "label": label}


def _summary_origin(path: Path, summary: dict) -> tuple[Path, bool | None, str]:
    """``(path, rtl_matches, note)`` of a build summary for a label: the path relative to the
    repository when it is the repository's own, :func:`_rtl_matches`, and ``", from other RTL
    (...)"`` when the summary was built from other RTL (else "")."""
    rtl = _rtl_matches(summary)
    note = (f", from other RTL (digest {summary['rtl_digest']}; the sources' now "
            f"{_rtl_digest()})" if rtl is False else "")
    if path.is_relative_to(BITSTREAMS.parent):  # the repository's own: say it as such
        path = path.relative_to(BITSTREAMS.parent)
    return path, rtl, note


def _rtl_digest() -> str:
    from bitstreams.xcup import rtl_digest

    return rtl_digest()


def _rtl_matches(summary: dict) -> bool | None:
    """Whether a build summary was made from the RTL the sources generate now (its
    ``rtl_digest`` against :func:`bitstreams.xcup.rtl_digest`); None when it records none."""
    digest = summary.get("rtl_digest")
    return None if digest is None else digest == _rtl_digest()
