"""Segment an image, a folder of images, or a folder of video frames with a checkpoint.

    python jobs/predict.py --checkpoint runs:/<run id> --input photo.jpg --out preds/
    python jobs/predict.py --checkpoint CKPT --input frames/ --out preds/   # a video model

Writes panoptic PNGs, predictions.json (each segment with its confidence `score`, docs/pq.md)
and overlays/<name>.png (image | prediction); a video model writes DAVIS palette PNGs
<folder>/<frame>.png instead (see platform/evaluation/predict_job.py).
"""

from __future__ import annotations

import argparse
import json

from pix2seqd.platform.cli import (
    add_checkpoint_flags,
    checkpoint_overrides,
    job_parser,
    parse_job_args,
)


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(__doc__.splitlines()[0])
    add_checkpoint_flags(parser, video=True)
    parser.add_argument("--steps", type=int, help="sampling steps (image model) [20]")
    parser.add_argument("--input", required=True, help="an image, a folder of images or of frames")
    parser.add_argument("--out", required=True, help="output folder")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parse_job_args(parser, argv)
    if not args.checkpoint:
        parser.error("--checkpoint is required")
    # keeps --help fast: prediction imports torch and Ray
    from pix2seqd.platform.evaluation.predict_job import predict_path

    summary = predict_path(args.checkpoint, args.input, args.out, checkpoint_overrides(args))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
