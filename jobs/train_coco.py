"""Train Pix2Seq-D on a COCO-panoptic layout with Ray Train, evaluate PQ, log to MLflow.

    python jobs/train_coco.py                       # tiny preset on the generated data set
    python jobs/train_coco.py --data-root /data/coco --preset coco_lowres --set train.use_gpu=true
    python jobs/train_coco.py --prepared s3://bucket/coco-prepared --preset coco_lowres
"""
from __future__ import annotations

import argparse

from pix2seqd.platform.cli import add_common_flags, add_training_flags, build_config
from pix2seqd.platform.tracking import ui_command
from pix2seqd.platform.train.run import RunOptions, train_coco


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser)
    add_training_flags(parser)
    parser.add_argument("--data-root", default="",
                        help="COCO-panoptic folder (default: the generated data set, made once)")
    parser.add_argument("--prepared", default="", metavar="URI",
                        help="Parquet shards written by jobs/prepare_data.py (folder or s3://)")
    parser.add_argument("--run-name", default="", help="MLflow run name")
    args = parser.parse_args(argv)
    if args.data_root and args.prepared:
        parser.error("give --data-root or --prepared, not both")
    extra = {"data.root": args.data_root} if args.data_root else {}
    if args.prepared:
        extra["data.prepared"] = args.prepared
    cfg = build_config(args, extra)
    opts = RunOptions(preset=args.preset, storage_path=args.storage_path, init_from=args.init_from,
                      summary_json=args.summary_json, run_name=args.run_name)
    summary = train_coco(cfg, opts)
    m = summary["metrics"]
    print(f"\nPQ {m['pq']:.4f}   PQ_th {m['pq_th']:.4f}   PQ_st {m['pq_st']:.4f}")
    print(f"best checkpoint: {summary['checkpoint']}")
    print(f"MLflow run {summary['mlflow_run_id']}; open the UI with:\n  {ui_command(summary['tracking_uri'])}")
    return summary


if __name__ == "__main__":
    main()
