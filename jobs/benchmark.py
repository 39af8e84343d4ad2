"""Benchmarks that print figures and write the benchmark JSON of docs/cli.md.

    python jobs/benchmark.py model --preset tiny --json /tmp/model.json
    python jobs/benchmark.py model --preset coco_lowres --device cuda --batch 8
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pix2seqd.platform.benchmarks.report import environment, print_table
from pix2seqd.platform.cli import add_common_flags, build_config


def model(args: argparse.Namespace) -> dict:
    from pix2seqd.platform.benchmarks.model_bench import benchmark_model

    return benchmark_model(build_config(args), args.device, args.batch, args.quick)


SUBCOMMANDS = {"model": model}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=sorted(SUBCOMMANDS), help="what to measure")
    add_common_flags(parser)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch", type=int, default=1, help="images per timed call")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", default="", help="write the results here")
    args = parser.parse_args(argv)
    result = {**environment(args.device), "preset": args.preset, **SUBCOMMANDS[args.what](args)}
    print_table(f"benchmark {args.what} ({args.preset}, {result['device']})", result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
