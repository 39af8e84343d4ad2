"""Convert an official Pix2Seq TensorFlow checkpoint's image encoder into a checkpoint for --init-from.

python jobs/convert_official.py --tf-checkpoint resnetc_640x640_b256_s400k --out ckpt/obj365
python jobs/train_coco.py --preset coco_lowres --init-from ckpt/obj365

Reads the TF checkpoint with numpy (no TensorFlow needed): a prefix (`.../ckpt-400000`), its
`.index` file or the folder holding it. Converts the ResNet-50 C4 backbone, the tokeniser
and the transformer encoder (the EMA copy when the checkpoint has one), checks them against
the model of --preset / --set, writes DIR/checkpoint.pt and prints a JSON summary.
docs/official_checkpoint.md has the name mapping.
"""

from __future__ import annotations

import argparse
import json

from pix2seqd.platform.cli import (
    add_overrides_flag,
    build_config,
    job_parser,
    parse_job_args,
)
from pix2seqd.platform.presets import PRESETS


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--tf-checkpoint",
        required=True,
        metavar="PATH",
        help="the TF checkpoint: prefix, .index file or its folder",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for checkpoint.pt")
    parser.add_argument(
        "--preset",
        default="coco_lowres",
        choices=sorted(PRESETS),
        help="config the converted encoder must fit (default: coco_lowres)",
    )
    add_overrides_flag(
        parser, "override a config field by dotted path, e.g. model.encoder.tf_layers=12"
    )
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parse_job_args(parser, argv)
    cfg = build_config(args)
    # keeps --help fast: the conversion imports torch
    from pix2seqd.platform.official.convert import convert_checkpoint

    summary = convert_checkpoint(args.tf_checkpoint, cfg, args.out)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
