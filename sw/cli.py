"""The ``nmaccel`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hw.config import PRESETS, ConfigError, preset


def _bench_engine(args) -> int:
    from sw.perf.bench_engine import run_engine_bench

    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    for p in presets:
        preset(p)  # refuse unknown names before building anything
    run_engine_bench(presets, max_tiles=args.tiles, seed=args.seed, out=Path(args.out))
    return 0


def _bench_vector(args) -> int:
    from sw.perf.bench_vector import run_vector_bench

    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    for p in presets:
        preset(p)
    run_vector_bench(presets, seq=args.seq, rtl=not args.no_rtl, out=Path(args.out))
    return 0


def _config_show(args) -> int:
    print(preset(args.preset).to_json(), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nmaccel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="benchmarks (JSON out)")
    bench_sub = bench.add_subparsers(dest="what", required=True)
    eng = bench_sub.add_parser("engine", help="spmm engine utilisation on BERT-base GEMMs, RTL")
    eng.add_argument("--presets", default="tiny,ecp5",
                     help=f"comma-separated presets ({', '.join(PRESETS)}); default tiny,ecp5")
    eng.add_argument("--tiles", type=int, default=8, help="tiles simulated per case (default 8)")
    eng.add_argument("--seed", type=int, default=1)
    eng.add_argument("--out", default="build/bench/engine.json")
    eng.set_defaults(func=_bench_engine)

    vec = bench_sub.add_parser("vector", help="softmax/LayerNorm/GELU: float error on MiniLM, "
                                              "cycles per row, RTL check on real rows")
    vec.add_argument("--presets", default="tiny,ecp5")
    vec.add_argument("--seq", type=int, default=128, help="tokens per sentence (default 128)")
    vec.add_argument("--no-rtl", action="store_true", help="skip the Verilator check")
    vec.add_argument("--out", default="build/bench/vector.json")
    vec.set_defaults(func=_bench_vector)

    cfg = sub.add_parser("config", help="print a preset's AcceleratorConfig as JSON")
    cfg.add_argument("preset", choices=sorted(PRESETS))
    cfg.set_defaults(func=_config_show)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ValueError) as e:
        print(f"nmaccel: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
