"""The ``nmaccel`` command."""

from __future__ import annotations

import argparse
import json
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


def _bench_cpu(args) -> int:
    from sw.perf.cpu import format_report, run_cpu_bench

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    report = run_cpu_bench(models=models, backends=backends, seq=args.seq, rounds=args.rounds,
                           iters=args.iters, threads=args.threads, out=Path(args.out))
    print(format_report(report))
    print(f"report written to {args.out}")
    return 0


def _bench_encoder(args) -> int:
    from sw.perf.encoder_bench import main as encoder_bench

    return encoder_bench(args.rest, prog="nmaccel bench encoder")


def _prune(args) -> int:
    from sw.prune.experiment import prune_run

    if args.model != "minilm" or args.task != "rt-sentiment":
        raise ValueError("only --model minilm --task rt-sentiment is available so far")
    _threads(args.threads)
    if args.qat_from:
        from sw.prune.experiment import qat_run

        qat_run(source=args.qat_from, nm=args.nm, qat_epochs=args.qat_epochs, qat_lr=args.qat_lr,
                kd=args.kd, kd_hidden=args.kd_hidden, bucket=args.bucket,
                dense_epochs=args.dense_epochs, seq=args.seq, seed=args.seed, out=args.out)
        return 0
    prune_run(nm=args.nm, method=args.method, recovery_epochs=args.recovery_epochs,
              dense_epochs=args.dense_epochs, kd=args.kd, parent=args.parent, seq=args.seq,
              seed=args.seed, out=args.out, int8=args.int8, lr=args.lr, kd_hidden=args.kd_hidden,
              prune_end=args.prune_end, bucket=args.bucket, qat_epochs=args.qat_epochs,
              qat_lr=args.qat_lr)
    return 0


def _threads(n: int | None) -> None:
    if n is None:
        return
    if n < 1:
        raise ValueError(f"--threads must be >= 1, got {n}")
    import torch

    torch.set_num_threads(n)


def _eval(args) -> int:
    from sw.prune.experiment import eval_run

    _threads(args.threads)
    eval_run(args.path, args.data, seq=args.seq, int8=args.int8)
    return 0


def _run(args) -> int:
    from sw import checks
    from sw.driver.encoder_run import format_profile, format_report, run_encoder, write_report

    # output paths checked before the run (which may take long), not when it is done
    if args.json is not None:
        checks.output_path(args.json, "--json")
    if args.save_ir == "":
        raise ValueError("--save-ir: an empty path")
    if args.device == "rtl":  # SIM=<unknown> was met after calibrating and compiling
        from sim.runner import simulator

        simulator()
    if args.save_ir and Path(args.save_ir).exists() and not Path(args.save_ir).is_dir():
        raise ValueError(f"--save-ir {args.save_ir}: exists and is not a directory")
    report = run_encoder(model=args.model, config=_config_arg(args.preset), nm=args.nm,
                         device=args.device, seq=args.seq, layers=args.layers, seed=args.seed,
                         save_ir=args.save_ir, profile=args.profile is not None)
    print(format_report(report))
    if args.profile is not None:
        print(format_profile(report, every_layer=args.profile == "all"))
    if args.json is not None:
        write_report(report, args.json)
        print(f"report written to {args.json}")
    if report.get("bit_exact_with_ref") is False:
        print("nmaccel: error: the device output differs from the ref backend", file=sys.stderr)
        return 1
    return 0


def _config_arg(text: str):
    """A preset name, or a path to a config JSON file."""
    from hw.config import AcceleratorConfig

    if text in PRESETS:
        return preset(text)
    if Path(text).is_file():
        return AcceleratorConfig.from_json(Path(text))
    if text.endswith(".json") or "/" in text:
        raise ValueError(f"--preset {text}: no such config file (or a preset name: "
                         f"{', '.join(sorted(PRESETS))})")
    return preset(text)  # raises, listing the presets


def _config_show(args) -> int:
    print(preset(args.preset).to_json(), end="")
    return 0


def _synth(args) -> int:
    from bitstreams.build import synth

    s = synth(args.preset, args.target, clock_mhz=args.clock_mhz)
    if s["target"] == "ecp5":
        verdict = "meets" if s["meets_clock"] else "MISSES"
        print(f"Fmax {s['fmax_mhz']:.1f} MHz ({verdict} {s['clock_mhz']:g} MHz); bitstream "
              f"bitstreams/{args.preset}-ecp5/{s['bitstream']['file']}")
    else:
        print(json.dumps(s["utilisation"]))
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

    cpu = bench_sub.add_parser("cpu", help="CPU baselines of the encoder (fresh processes, "
                                           "interleaved rounds)")
    cpu.add_argument("--models", default="bert-base,minilm")
    cpu.add_argument("--backends", default="torch-fp32,ort-fp32,torch-int8,ort-int8")
    cpu.add_argument("--seq", type=int, default=128)
    cpu.add_argument("--rounds", type=int, default=5)
    cpu.add_argument("--iters", type=int, default=10, help="timed passes per round")
    cpu.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    cpu.add_argument("--out", default="build/bench/cpu.json")
    cpu.set_defaults(func=_bench_cpu)

    enc = bench_sub.add_parser("encoder", add_help=False,
                               help="make bench: CPU baselines beside accelerator projections "
                                    "(options: nmaccel bench encoder --help)")
    enc.set_defaults(func=_bench_encoder, rest=[])

    pr = sub.add_parser("prune", help="N:M-prune MiniLM for sentiment and measure accuracy")
    pr.add_argument("--model", default="minilm")
    pr.add_argument("--task", default="rt-sentiment")
    pr.add_argument("--nm", required=True, help="N:M, e.g. 2:4")
    pr.add_argument("--method", default="oneshot", choices=["oneshot", "gradual", "srste"])
    pr.add_argument("--recovery-epochs", type=float, default=0.25)
    pr.add_argument("--dense-epochs", type=float, default=1.0)
    pr.add_argument("--kd", action="store_true", help="distil from the dense model")
    pr.add_argument("--from", dest="parent", help="a saved parent: masks nest inside its own")
    pr.add_argument("--int8", action="store_true",
                    help="also measure int8 (post-training, through the integer encoder)")
    pr.add_argument("--lr", type=float, default=5e-5, help="recovery learning rate (default "
                                                            "5e-5, linear decay)")
    pr.add_argument("--kd-hidden", type=float, default=1.0,
                    help="weight of the hidden-state term of --kd (0: logits only)")
    pr.add_argument("--prune-end", type=float, default=0.75,
                    help="gradual: fraction of the recovery steps at which the target N:M is "
                         "reached (default 0.75)")
    pr.add_argument("--bucket", action="store_true",
                    help="batch sentences of similar length together (less padding, faster)")
    pr.add_argument("--qat-epochs", type=float, default=0.0,
                    help="then this many epochs of quantization-aware fine-tuning (fake-quant "
                         "int8 with the integer encoder's scales, STE); implies --int8")
    pr.add_argument("--qat-lr", type=float, default=1e-5, help="QAT learning rate")
    pr.add_argument("--qat-from", metavar="PATH",
                    help="skip pruning and recovery: int8 of this saved N:M model after "
                         "--qat-epochs of QAT (0: post-training only)")
    pr.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    pr.add_argument("--seq", type=int, default=64)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--out", help="model name or path (default: build/models/<derived name>)")
    pr.set_defaults(func=_prune)

    ev = sub.add_parser("eval", help="accuracy of a saved model")
    ev.add_argument("path")
    ev.add_argument("--data", help="CSV/TSV with a text and a label column (default: the "
                                   "built-in Rotten Tomatoes test split)")
    ev.add_argument("--seq", type=int, default=64)
    ev.add_argument("--int8", action="store_true",
                    help="evaluate through the bit-exact int8 integer encoder (PTQ; when PATH "
                         "has packed.safetensors, calibrated as it records and checked "
                         "against it)")
    ev.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ev.set_defaults(func=_eval)

    run = sub.add_parser("run", help="prune, quantize, compile and run a BERT encoder on a "
                                     "device backend; compare with ref and the float model")
    run.add_argument("--model", default="minilm",
                     help="minilm (pretrained), bert-base (seeded random) or a model directory")
    run.add_argument("--preset", default="tiny", help="preset name or config JSON file")
    run.add_argument("--nm", help="N:M for one-shot pruning of a dense model (default: half "
                                   "the weights in the preset's M: 2:4 on M = 4, 4:8 on M = 8; "
                                   "an M dividing the preset's runs as its density there: 2:4 "
                                   "as 4:8)")
    run.add_argument("--device", default="ref", choices=["ref", "rtl", "xrt"],
                     help="ref: golden model; rtl: the generated Verilog in simulation (SIM="
                          "icarus|verilator); xrt: an Alveo card")
    run.add_argument("--seq", type=int, default=16, help="tokens (default 16)")
    run.add_argument("--layers", type=int, help="run only the first K encoder layers")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--save-ir", metavar="DIR", help="save every compiler step's IR there")
    run.add_argument("--json", metavar="OUT", help="write the report as JSON")
    run.add_argument("--profile", nargs="?", const="first", choices=["first", "all"],
                     help="print where the kernel's cycles go (the cycle model, equal to the "
                          "RTL's): by opcode, and command by command for the first layer (or "
                          "--profile all: every layer); the JSON report gets every command")
    run.set_defaults(func=_run)

    syn = sub.add_parser("synth", help="ECP5 bitstream (self-test top) or UltraScale+ estimate "
                         "with open tools; writes bitstreams/<preset>-<target>/summary.json")
    syn.add_argument("--preset", choices=sorted(PRESETS), required=True)
    syn.add_argument("--target", choices=["ecp5", "xcup"], required=True)
    syn.add_argument("--clock-mhz", type=float, help="ECP5 kernel clock (default: the preset's)")
    syn.set_defaults(func=_synth)

    cfg = sub.add_parser("config", help="print a preset's AcceleratorConfig as JSON")
    cfg.add_argument("preset", choices=sorted(PRESETS))
    cfg.set_defaults(func=_config_show)

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["bench", "encoder"]:  # its own parser: every option (and --help) passes on
        return _bench_encoder(argparse.Namespace(rest=argv[2:]))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ValueError, RuntimeError, OSError) as e:
        print(f"nmaccel: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
