"""Train Pix2Seq-D on a COCO-panoptic layout with Ray Train, evaluate PQ, log to MLflow.

    python jobs/train_coco.py                       # tiny preset on the generated data set
    python jobs/train_coco.py --data-root /data/coco --preset coco_lowres --set train.use_gpu=true
    python jobs/train_coco.py --prepared s3://bucket/coco-prepared --preset coco_lowres
"""
from __future__ import annotations

import argparse

from pix2seqd.platform.cli import add_common_flags, add_source_flags, add_training_flags, training_setup
from pix2seqd.platform.tracking import ui_command
from pix2seqd.platform.train.run import train_coco


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser)
    add_training_flags(parser)
    add_source_flags(parser, "--data-root",
                     "COCO-panoptic folder (default: the generated data set, made once)")
    args = parser.parse_args(argv)
    cfg, opts = training_setup(parser, args, args.data_root)
    summary = train_coco(cfg, opts)
    m = summary["metrics"]
    print(f"\nPQ {m['pq']:.4f}   PQ_th {m['pq_th']:.4f}   PQ_st {m['pq_st']:.4f}")
    print(f"best checkpoint: {summary['checkpoint']}")
    print(f"MLflow run {summary['mlflow_run_id']}; open the UI with:\n  {ui_command(summary['tracking_uri'])}")
    return summary


if __name__ == "__main__":
    main()
