"""The command line of the `sweeps/*.py` files (docs/cli.md): each file holds a `Sweep`
and calls `main(SWEEP)`."""

from __future__ import annotations

import argparse
from typing import Any

from pix2seqd.platform.cli import (
    add_common_flags,
    add_data_root_flag,
    add_overrides_flag,
    build_config,
    job_parser,
    parse_job_args,
)
from pix2seqd.platform.config import Config, flatten, override, parse_overrides
from pix2seqd.platform.sweep.spec import Sweep, SweepKind
from pix2seqd.platform.train.options import RunOptions

# inference flags -> the sample.* axis they set (the last three: video checkpoints)
_SAMPLER_FLAGS = {
    "steps": "sample.steps",
    "td": "sample.td",
    "min_pixels": "sample.min_pixels",
    "later_steps": "sample.later_steps",
    "adaptive": "sample.adaptive",
    "adaptive_change": "sample.adaptive_change",
}


def main(sweep: Sweep, argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_job_args(build_parser(sweep), argv)
    # keeps the sweeps' --help fast: the sweep runner imports torch, Ray and MLflow
    from pix2seqd.platform.sweep.run import (
        InferenceSweepInputs,
        run_inference_sweep,
        run_train_sweep,
    )
    from pix2seqd.platform.sweep.train_sweep import TrainSweepOptions

    if sweep.kind == SweepKind.INFERENCE:
        picked = {
            path: getattr(args, flag)
            for flag, path in _SAMPLER_FLAGS.items()
            if getattr(args, flag)
        }
        inputs = InferenceSweepInputs(
            args.checkpoint,
            args.data_root,
            args.split,
            parse_overrides(args.overrides),
            {p: parse_values(p, v) for p, v in picked.items()},
        )
        return run_inference_sweep(sweep, inputs, args.summary_json)
    grid = parse_overrides(args.grid)
    sweep = sweep.with_values({p: parse_values(p, v) for p, v in grid.items()})
    # the sweep's fixed values lie over the preset, under --time-budget and --set
    extra: dict[str, Any] = dict(sweep.fixed)
    if args.data_root:
        extra["data.root"] = args.data_root
    if args.prepared:
        extra["data.prepared"] = args.prepared
    cfg = build_config(args, extra)
    opts = TrainSweepOptions(
        args.max_concurrent,
        args.asha,
        RunOptions(preset=args.preset, storage_path=args.storage_path),
        args.fresh,
    )
    return run_train_sweep(sweep, cfg, opts, args.summary_json)


def parse_values(path: str, text: str) -> tuple[Any, ...]:
    """'0.1,0.3' for `path` -> (0.1, 0.3), each value parsed as the config field's type."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"{path}: no values in {text!r}")
    return tuple(flatten(override(Config(), {path: t}))[path] for t in items)


def build_parser(sweep: Sweep) -> argparse.ArgumentParser:
    grid = "; ".join(f"{a.path} in {list(a.values)}" for a in sweep.axes)
    parser = job_parser(
        f"Sweep '{sweep.name}' ({sweep.paper}): {grid}. One MLflow parent run, "
        "a nested run per trial, summary table and plot on the parent."
    )
    video = ", or DAVIS 2017 for a video checkpoint" if sweep.kind == SweepKind.INFERENCE else ""
    add_data_root_flag(parser, f"COCO-panoptic folder{video} (default: the generated data set)")
    parser.add_argument(
        "--summary-json",
        default="",
        metavar="PATH",
        help="write the sweep summary (parent run, trials, scores) here",
    )
    if sweep.kind == SweepKind.INFERENCE:
        _inference_flags(parser)
    else:
        _training_flags(parser, sweep)
    return parser


def _training_flags(parser: argparse.ArgumentParser, sweep: Sweep) -> None:
    add_common_flags(parser, sweep.preset)
    parser.add_argument(
        "--prepared",
        default="",
        metavar="URI",
        help="Parquet shards written by jobs/prepare_data.py (folder or s3://)",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="MIN",
        help="training minutes per trial (then the trial evaluates)",
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=0,
        metavar="N",
        help="trials at once (default: as many as the cluster's CPUs/GPUs hold)",
    )
    parser.add_argument(
        "--asha",
        action="store_true",
        help="stop weak trials early on val/pq (ASHA; turns on periodic evaluation)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start a new sweep even when an unfinished one of this same command exists "
        "(by default that one continues: finished trials kept, the others resumed)",
    )
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="PATH=V1,V2",
        help="other values for an axis of the sweep, e.g. "
        f"{sweep.axes[0].path}={','.join(map(str, sweep.axes[0].values[:2]))}",
    )


def _inference_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="CKPT",
        help="checkpoint: folder, s3:// URI or runs:/<mlflow run id>",
    )
    parser.add_argument(
        "--split",
        default="",
        help="split scored (default: the checkpoint's data.val_split; video: val)",
    )
    for flag, path in _SAMPLER_FLAGS.items():
        parser.add_argument(
            f"--{flag.replace('_', '-')}",
            dest=flag,
            default="",
            metavar="V1,V2",
            help=f"values of {path} (default: the sweep's)",
        )
    add_overrides_flag(
        parser, "override a field of the checkpoint's config, e.g. eval.max_images=100"
    )
