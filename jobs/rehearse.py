"""A dress rehearsal of the paper's training chain: every stage for a few steps on generated data.

    python jobs/rehearse.py                          # the paper-sized model, small images
    python jobs/rehearse.py --small --storage-path s3://bucket/rehearsal --summary-json R.json

A ResNet-50 file in torchvision's key layout (random weights, standing in for the user's
download) -> decoder_pretrain -> coco_lowres -> coco_highres -> cityscapes and davis, each
through jobs/train_coco.py or jobs/train_davis.py on whatever the Ray cluster has, each
starting from the previous stage's runs:/ reference and evaluated (platform/rehearsal.py).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from pix2seqd.platform.cli import add_overrides_flag, job_parser, parse_job_args
from pix2seqd.platform.config import parse_overrides


def build_parser():
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--storage-path", default="", metavar="URI", help="checkpoints (folder or s3://)"
    )
    parser.add_argument(
        "--small", action="store_true", help="the same architecture at reduced widths (CI)"
    )
    parser.add_argument("--summary-json", default="", metavar="PATH", help="write the summary here")
    parser.add_argument(
        "--workdir",
        default="",
        metavar="DIR",
        help="data, logs, ResNet file (default: a temporary folder)",
    )
    add_overrides_flag(
        parser, "config override for every stage, after the rehearsal's own (repeatable)"
    )
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = parse_job_args(build_parser(), argv)
    # keeps --help fast: the rehearsal imports torch and MLflow
    from pix2seqd.platform.rehearsal import Rehearsal, rehearse, stage_line

    with tempfile.TemporaryDirectory(prefix="pix2seqd-rehearsal-") as tmp:
        plan = Rehearsal(
            workdir=Path(args.workdir or tmp),
            jobs_dir=Path(__file__).resolve().parent,
            storage=args.storage_path,
            small=args.small,
            overrides=parse_overrides(args.overrides),
            verbosity=args.verbosity,
        )
        summary = rehearse(plan)
    for row in summary["stages"]:
        print(stage_line(row))
    if args.summary_json:
        Path(args.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary_json).write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
