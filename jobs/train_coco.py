"""Train Pix2Seq-D on a COCO-panoptic layout with Ray Train, evaluate PQ, log to MLflow.

python jobs/train_coco.py                       # tiny preset on the generated data set
python jobs/train_coco.py --data-root /data/coco --preset coco_lowres
python jobs/train_coco.py --prepared s3://bucket/coco-prepared --preset coco_lowres
python jobs/train_coco.py --data-root /data/coco --preset coco_lowres --resume auto  # again after a lost driver
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
from pix2seqd.platform.tracking import run_page, ui_command


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(__doc__.splitlines()[0])
    add_common_flags(parser)
    add_training_flags(parser)
    add_source_flags(parser, "COCO-panoptic folder (default: the generated data set, made once)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parse_job_args(parser, argv)
    cfg, opts = training_setup(parser, args, args.data_root)
    # keeps --help fast: the training stack imports torch, Ray and MLflow
    from pix2seqd.platform.train.run import train_coco

    summary = train_coco(cfg, opts)
    m = summary["metrics"]
    print(f"\nPQ {m['pq']:.4f}   PQ_th {m['pq_th']:.4f}   PQ_st {m['pq_st']:.4f}")
    print(f"best checkpoint: {summary['checkpoint']}")
    uri, run_id = summary["tracking_uri"], summary["mlflow_run_id"]
    print(
        f"MLflow run {run_id}; open the UI with:\n  {ui_command(uri)}\nthen {run_page(uri, run_id)}"
    )
    return summary


if __name__ == "__main__":
    main()
