"""Flags shared by the jobs (docs/cli.md) and their translation into a Config."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence

from pix2seqd.platform import tracking
from pix2seqd.platform.config import Config, flatten, override, parse_overrides
from pix2seqd.platform.log import configure_logging, level_for
from pix2seqd.platform.presets import PRESETS, get_preset
from pix2seqd.platform.train.options import RESUME_AUTO, RunOptions, resume_auto, resume_run


def job_parser(description: str) -> argparse.ArgumentParser:
    """The parser every job and sweep starts from: its description, -q, -v and --experiment."""
    parser = argparse.ArgumentParser(description=description)
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-q",
        "--quiet",
        dest="verbosity",
        action="store_const",
        const=-1,
        default=0,
        help="log warnings and errors only",
    )
    verbosity.add_argument(
        "-v",
        "--verbose",
        dest="verbosity",
        action="store_const",
        const=1,
        default=0,
        help="log debug messages too",
    )
    parser.add_argument(
        "--experiment",
        default="",
        metavar="NAME",
        help="MLflow experiment of the runs the job records (default: "
        f"${tracking.EXPERIMENT_ENV}, else {tracking.EXPERIMENT})",
    )
    return parser


def parse_job_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace:
    """Parse a job's flags, then log the package's messages at the level -q / -v chose
    (INFO without either) to stderr; the job's results go to stdout. --experiment goes to
    MLFLOW_EXPERIMENT_NAME, read by every run this process, or one it starts, records."""
    args = parser.parse_args(argv)
    configure_logging(level_for(args.verbosity))
    if args.experiment:
        os.environ[tracking.EXPERIMENT_ENV] = args.experiment
    return args


def add_data_root_flag(
    parser: argparse.ArgumentParser, help_text: str, alias: str = "", required: bool = False
) -> None:
    """--data-root DIR: the data set in its official layout, one name in every job. `alias`
    is the job's older spelling of the flag, still accepted (docs/cli.md)."""
    names = ("--data-root", alias) if alias else ("--data-root",)
    parser.add_argument(
        *names,
        dest="data_root",
        default="",
        required=required,
        metavar="DIR",
        help=help_text + (f"; {alias} is an older name of this flag" if alias else ""),
    )


def add_common_flags(parser: argparse.ArgumentParser, default_preset: str = "tiny") -> None:
    parser.add_argument(
        "--preset",
        default=default_preset,
        choices=sorted(PRESETS),
        help=f"configuration preset (default: {default_preset})",
    )
    add_overrides_flag(
        parser, "override a config field by dotted path, e.g. optim.lr=1e-5 (repeatable)"
    )
    parser.add_argument(
        "--storage-path",
        default="",
        help="where Ray Train keeps checkpoints (folder or s3://); default ~/.pix2seqd/ray_results",
    )


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--init-from",
        default="",
        metavar="CKPT",
        help="initialise from a checkpoint: folder, s3:// URI or runs:/<run_id>",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="MIN",
        help="stop training cleanly after MIN minutes, then evaluate",
    )
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip (and report) unreadable examples instead of failing",
    )
    parser.add_argument(
        "--resume",
        default="",
        metavar="RUN",
        help="continue a stopped run (runs:/<id> or the MLflow run id) from its "
        "latest checkpoint: same config, storage path and MLflow run; "
        "--set may change fields, e.g. train.steps. 'auto': the unfinished run of this "
        "command's run name in the experiment, else a new run (submit the same command "
        "again after a lost driver). Refused while another driver trains the run",
    )
    parser.add_argument(
        "--summary-json",
        default="",
        metavar="PATH",
        help="write the run summary (run id, checkpoint, metrics) here",
    )


def add_source_flags(parser: argparse.ArgumentParser, root_help: str, root_alias: str = "") -> None:
    """The data source of a training job (--data-root, a layout folder, or prepared shards)
    and its run name; `root_alias` as in `add_data_root_flag`."""
    add_data_root_flag(parser, root_help, root_alias)
    parser.add_argument(
        "--prepared",
        default="",
        metavar="URI",
        help="Parquet shards written by jobs/prepare_data.py (folder or s3://)",
    )
    parser.add_argument("--run-name", default="", help="MLflow run name")


def training_setup(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    root: str,
    transform: Callable[[Config], Config] | None = None,
):
    """(Config, RunOptions) of a training job: preset (through `transform`), data source
    flags, --set; with --resume, the stopped run's own config and storage, then --set;
    with --resume auto, the same for the unfinished run of the job's run name when there
    is one."""

    if root and args.prepared:
        parser.error("give a data root or --prepared, not both")
    extra = {"data.root": root} if root else {}
    if args.prepared:
        extra["data.prepared"] = args.prepared
    cfg = build_config(args, extra, transform)
    typed = flatten(cfg)  # the --set values as the config holds them
    name, about = tracking.training_run_naming(
        args.preset, cfg.data.dataset.value, {k: typed[k] for k in parse_overrides(args.overrides)}
    )
    opts = RunOptions(
        preset=args.preset,
        storage_path=args.storage_path,
        init_from=args.init_from,
        summary_json=args.summary_json,
        run_name=args.run_name or name,
        tags=((tracking.NOTE_TAG, about),),
    )
    if args.resume == RESUME_AUTO:
        cfg, opts = resume_auto(cfg, opts, parse_overrides(args.overrides))
    elif args.resume:
        cfg, opts = resume_run(args.resume, opts, parse_overrides(args.overrides))
    return cfg, opts


def build_config(
    args: argparse.Namespace,
    extra: dict[str, str] | None = None,
    transform: Callable[[Config], Config] | None = None,
) -> Config:
    """Preset (passed through `transform`, e.g. presets.as_video), then flag-derived values,
    then --set overrides (which win)."""
    cfg = get_preset(args.preset)
    if transform is not None:
        cfg = transform(cfg)
    updates: dict[str, object] = dict(extra or {})
    if getattr(args, "time_budget", None) is not None:
        updates["train.time_budget_min"] = args.time_budget
    if getattr(args, "skip_bad", False):
        updates["data.skip_bad"] = True
    updates.update(parse_overrides(args.overrides))
    return override(cfg, updates)


def add_checkpoint_flags(parser: argparse.ArgumentParser, video: bool = False) -> None:
    """--checkpoint and the sampler flags of the evaluation jobs; each sampler flag left out
    keeps the checkpoint's own config value (paper values in brackets)."""
    parser.add_argument(
        "--checkpoint",
        default="",
        metavar="CKPT",
        help="checkpoint: folder, s3:// URI or runs:/<mlflow run id>",
    )
    if video:
        parser.add_argument(
            "--first-steps", type=int, help="sampling steps on the first frame [32]"
        )
        parser.add_argument("--later-steps", type=int, help="sampling steps on later frames [8]")
    else:
        parser.add_argument("--steps", type=int, help="sampling steps [20]")
    parser.add_argument("--td", type=float, help="DDIM time difference τ_d [2; video 1]")
    parser.add_argument(
        "--min-pixels",
        type=int,
        help="segments smaller than this (original resolution) are dropped [80; video 10]",
    )
    add_overrides_flag(
        parser,
        "override a field of the checkpoint's config by dotted path, "
        "e.g. eval.num_actors=4 (repeatable)",
    )


def checkpoint_overrides(args: argparse.Namespace) -> dict[str, object]:
    """Sampler flags that were given, then --set (which wins), as dotted-path overrides."""
    flags = {
        "sample.steps": getattr(args, "steps", None) or getattr(args, "first_steps", None),
        "sample.later_steps": getattr(args, "later_steps", None),
        "sample.td": args.td,
        "sample.min_pixels": args.min_pixels,
    }
    updates: dict[str, object] = {k: v for k, v in flags.items() if v is not None}
    updates.update(parse_overrides(args.overrides))
    return updates


def add_overrides_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    """`--set KEY=VALUE` (repeatable) into `args.overrides`: config fields by dotted path."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help_text
    )
