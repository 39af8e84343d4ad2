"""Benchmarks that print figures and write the benchmark JSON of docs/cli.md.

python jobs/benchmark.py model --preset tiny --json /tmp/model.json
python jobs/benchmark.py model --preset coco_lowres --device cuda --batch 8
python jobs/benchmark.py data --preset coco_lowres --json /tmp/data.json
python jobs/benchmark.py gpu --preset r50_ablation --quick --json /tmp/gpu.json
python jobs/benchmark.py gpu --preset tiny --device cpu --quick --no-compile
python jobs/benchmark.py train-overhead --preset tiny --json /tmp/train_overhead.json
python jobs/benchmark.py scale --records 118287 --json /tmp/scale.json
python jobs/benchmark.py tracking-load --trials 8 --steps 200 --json /tmp/load.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pix2seqd.platform.benchmarks.report import environment, print_table
from pix2seqd.platform.cli import add_common_flags, build_config, job_parser, parse_job_args


def _config(args: argparse.Namespace):
    """The preset and --set, an auto canvas decided as training on its data decides it."""
    from pix2seqd.platform.data.size_report import with_canvas

    return with_canvas(build_config(args))


def model(args: argparse.Namespace) -> dict:
    from pix2seqd.platform.benchmarks.model_bench import benchmark_model

    return benchmark_model(_config(args), args.device, args.batch or 1, args.quick)


def gpu(args: argparse.Namespace) -> dict:
    from pix2seqd.platform.benchmarks.gpu_bench import GpuBenchSettings, run_gpu_benchmark

    head = {**environment(args.device), "preset": args.preset}
    settings = GpuBenchSettings(
        quick=args.quick,
        compile=not args.no_compile,
        compile_backend=args.compile_backend,
        peak_tflops=args.peak_tflops,
        batch=args.batch,
    )
    return run_gpu_benchmark(
        _config(args),
        args.preset,
        args.device,
        settings,
        save=lambda part: write_json(args.json, {**head, **part}),
    )


def data(args: argparse.Namespace) -> dict:
    from pix2seqd.platform.benchmarks.data_bench import benchmark_data

    return benchmark_data(_config(args), args.quick, batch=args.batch)


def train_overhead(args: argparse.Namespace) -> dict:
    from pix2seqd.platform.benchmarks.train_overhead import benchmark_train_overhead

    return benchmark_train_overhead(
        _config(args), args.device, args.quick, steps=args.steps, rounds=args.rounds
    )


def scale(args: argparse.Namespace) -> dict:
    from pix2seqd.platform.benchmarks.scale_bench import Phase, ScaleSettings, benchmark_scale

    head = {**environment(args.device), "preset": args.preset}
    names = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [n for n in names if n not in {p.value for p in Phase}]
    if unknown:
        raise SystemExit(f"--phases: no phase {unknown}; phases: {[p.value for p in Phase]}")
    phases = tuple(Phase(n) for n in names) or tuple(Phase)
    return benchmark_scale(
        _config(args),
        ScaleSettings(records=args.records, phases=phases),
        save=lambda part: write_json(args.json, {**head, **part}),
    )


def tracking_load(args: argparse.Namespace) -> dict:
    from pix2seqd.platform.benchmarks.tracking_load import LoadSettings, benchmark_tracking_load

    return benchmark_tracking_load(LoadSettings(trials=args.trials, steps=args.steps or 200))


SUBCOMMANDS = {
    "model": model,
    "data": data,
    "gpu": gpu,
    "train-overhead": train_overhead,
    "scale": scale,
    "tracking-load": tracking_load,
}
DEFAULT_DEVICE = {"gpu": "cuda"}


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument("what", choices=sorted(SUBCOMMANDS), help="what to measure")
    add_common_flags(parser)
    parser.add_argument(
        "--device",
        default=None,
        choices=("cpu", "cuda"),
        help="default: cuda for gpu, cpu otherwise",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=0,
        help="model: images per timed call (default 1); data: examples per "
        "batch (default 32); gpu: training batch (default the preset's "
        "per-GPU batch)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--json", default="", help="write the results here (gpu, scale: after each part)"
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=0.0,
        help="gpu: peak bf16 TFLOP/s for MFU (default 0: look up the card)",
    )
    parser.add_argument("--no-compile", action="store_true", help="gpu: skip torch.compile")
    parser.add_argument(
        "--compile-backend",
        default="inductor",
        help="gpu: torch.compile backend (inductor; aot_eager to debug)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        help="train-overhead: timed steps per side and round (default 60; quick 10); "
        "tracking-load: training steps per trial (default 200)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="train-overhead: plain/Ray rounds (default 2; quick 1)",
    )
    parser.add_argument(
        "--records",
        type=int,
        default=118_287,
        help="scale: train records of the linked set (default 118,287, COCO train's count)",
    )
    parser.add_argument(
        "--phases",
        default="",
        help="scale: phases to run, comma-separated, in order (default all: annotation,"
        "raw_stream,prepare,prepared_stream; prepared_stream needs prepare before it)",
    )
    parser.add_argument(
        "--trials", type=int, default=8, help="tracking-load: concurrent trials (default 8)"
    )
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    args = parse_job_args(build_parser(), argv)
    args.device = args.device or DEFAULT_DEVICE.get(args.what, "cpu")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = {**environment(args.device), "preset": args.preset, **SUBCOMMANDS[args.what](args)}
    print_table(f"benchmark {args.what} ({args.preset}, {result['device']})", result)
    write_json(args.json, result)
    return result


def write_json(path: str, result: dict[str, Any]) -> None:
    """Write `result` to `path` (no-op for an empty path); gpu calls it after every part."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
