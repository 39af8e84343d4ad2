"""Convert a panoptic data set (official layout) into validated Parquet shards.

    python jobs/prepare_data.py --dataset coco --data-root /data/coco --out s3://bucket/coco-prepared
    python jobs/prepare_data.py --dataset cityscapes --data-root /data/cityscapes --out /data/cs --skip-bad
    python jobs/prepare_data.py --dataset davis --data-root /data/DAVIS --out /data/davis-prepared --preset davis

Writes <out>/<split>/shard-*.parquet, <out>/<split>/_index.json and
<out>/validation_report.json; train with `python jobs/train_coco.py --prepared <out>`.
"""

from __future__ import annotations

import argparse
import json

from pix2seqd.platform.cli import (
    add_common_flags,
    add_data_root_flag,
    build_config,
    job_parser,
    parse_job_args,
)


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(__doc__.splitlines()[0])
    add_common_flags(parser)
    parser.add_argument("--dataset", required=True, choices=("coco", "cityscapes", "davis"))
    add_data_root_flag(parser, "the data set in its official layout", alias="--root", required=True)
    parser.add_argument("--out", required=True, help="output folder or s3:// URI")
    parser.add_argument(
        "--splits",
        default="",
        help="comma-separated splits "
        "(default coco: train2017,val2017; cityscapes and davis: train,val)",
    )
    parser.add_argument("--resolution", default="480p", help="DAVIS resolution folder")
    parser.add_argument(
        "--rows-per-shard",
        type=int,
        default=500,
        help="records per Parquet file (500 COCO images = about 90 MB)",
    )
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave bad records out (listed in the report) instead of failing",
    )
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parse_job_args(parser, argv)
    cfg = build_config(args)
    if args.rows_per_shard <= 0:
        parser.error("--rows-per-shard must be > 0")
    # keeps --help fast: data preparation imports Ray Data
    from pix2seqd.platform.data.prepare import prepare_dataset
    from pix2seqd.platform.data.size_report import Geometry
    from pix2seqd.platform.ray_env import ray_session

    with ray_session():
        report = prepare_dataset(
            args.dataset,
            args.data_root,
            args.out,
            [s for s in args.splits.split(",") if s],
            crowd=cfg.data.crowd,
            max_instances=cfg.model.max_instances,
            rows_per_shard=args.rows_per_shard,
            skip_bad=args.skip_bad,
            resolution=args.resolution,
            geometry=Geometry.of(cfg),
        )
    for split, r in report["splits"].items():
        print(
            f"{split}: {r['n_records']} records, {r['n_bad']} bad, "
            f"{r['voided_segments']} segments beyond K-1 (K={r['max_instances']})"
        )
    print(json.dumps({"report": f"{args.out.rstrip('/')}/validation_report.json"}))
    return report


if __name__ == "__main__":
    main()
