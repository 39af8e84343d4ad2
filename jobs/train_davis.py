"""Train the streaming video model of Pix2Seq-D on a DAVIS-2017 layout with Ray Train,
score J&F (DAVIS unsupervised), log to MLflow. Image presets become their video model
(`presets.as_video`); start from an image checkpoint with --init-from.

    python jobs/train_davis.py --preset tiny --init-from runs:/<train_coco run id>
    python jobs/train_davis.py --preset davis --data-root /data/DAVIS --init-from CKPT
    python jobs/train_davis.py --preset davis --data-root /data/DAVIS --init-from CKPT --resume auto
"""

from __future__ import annotations

import argparse

from pix2seqd.platform.cli import (
    add_common_flags,
    add_source_flags,
    add_training_flags,
    job_parser,
    parse_job_args,
    training_setup,
)
from pix2seqd.platform.presets import as_video
from pix2seqd.platform.tracking import run_page, ui_command


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(__doc__.splitlines()[0])
    add_common_flags(parser)
    add_training_flags(parser)
    add_source_flags(
        parser,
        "DAVIS 2017 folder (default: the generated video set, made once)",
        root_alias="--davis-root",
    )
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parse_job_args(parser, argv)
    cfg, opts = training_setup(parser, args, args.data_root, transform=as_video)
    # keeps --help fast: the training stack imports torch, Ray and MLflow
    from pix2seqd.platform.train.run_davis import train_davis

    summary = train_davis(cfg, opts)
    m = summary["metrics"]
    print(f"\nJ&F {m['J&F-Mean']:.4f}   J {m['J-Mean']:.4f}   F {m['F-Mean']:.4f}")
    print(f"best checkpoint: {summary['checkpoint']}")
    uri, run_id = summary["tracking_uri"], summary["mlflow_run_id"]
    print(
        f"MLflow run {run_id}; open the UI with:\n  {ui_command(uri)}\nthen {run_page(uri, run_id)}"
    )
    return summary


if __name__ == "__main__":
    main()
