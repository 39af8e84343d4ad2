"""Write a synthetic data set in an official layout (COCO panoptic, Cityscapes panoptic or
DAVIS 2017), byte-identical for equal arguments.

    python jobs/make_synthetic.py --out data/synth_coco --seed 0 --train 800 --val 100 \
        --min-size 64 --max-size 96 --layout coco

Things are told apart by shape, stuff by texture; colours are random for every class.
For --layout davis, --train/--val count sequences of 10-16 frames.
--realistic (coco only) uses COCO's 133 categories and adds to each split with images the
quirks of real COCO: grayscale and CMYK JPEGs, an image with 121 segments, crowd regions
and images without segments (platform/synthetic/realistic.py); the JSON printed lists them.
--heldout (coco only) writes the held-out family instead, for evaluation only: images of
64-640 px and aspects 1/2-2, small rings, diamonds, bars and half discs as things
(platform/synthetic/heldout.py, docs/data_report.md).
"""

import argparse
import json
import time

from pix2seqd.platform.cli import job_parser, parse_job_args
from pix2seqd.platform.synthetic.cityscapes import make_cityscapes
from pix2seqd.platform.synthetic.coco import make_coco
from pix2seqd.platform.synthetic.davis import make_davis
from pix2seqd.platform.synthetic.heldout import make_heldout
from pix2seqd.platform.synthetic.realistic import make_realistic_coco

WRITERS = {"coco": make_coco, "cityscapes": make_cityscapes, "davis": make_davis}
# Split sizes when --train/--val are not given: images (coco, cityscapes) or sequences.
DEFAULT_COUNTS = {"coco": (800, 100), "cityscapes": (200, 50), "davis": (30, 10)}


def _count(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser():
    parser = job_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write the data set into")
    parser.add_argument("--layout", choices=sorted(WRITERS), default="coco")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--train",
        type=_count,
        default=None,
        help="training images (sequences for davis); default per layout",
    )
    parser.add_argument(
        "--val",
        type=_count,
        default=None,
        help="validation images (sequences for davis); default per layout",
    )
    parser.add_argument("--min-size", type=int, default=None, help="smallest image side, px [64]")
    parser.add_argument(
        "--max-size", type=int, default=None, help="largest image side, px [96; heldout 640]"
    )
    parser.add_argument(
        "--heldout", action="store_true", help="coco: the held-out family (evaluation only)"
    )
    parser.add_argument(
        "--realistic",
        action="store_true",
        help="coco: COCO's 133 categories (ids 1-200) and, after each split's images, "
        "grayscale and CMYK JPEGs, a 121-segment image, crowd regions and unannotated images",
    )
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parse_job_args(parser, argv)
    args.min_size = 64 if args.min_size is None else args.min_size
    args.max_size = args.max_size or (640 if args.heldout else 96)
    if not 8 <= args.min_size <= args.max_size:
        parser.error("need 8 <= --min-size <= --max-size")
    for flag in ("realistic", "heldout"):
        if getattr(args, flag) and args.layout != "coco":
            parser.error(f"--{flag} is for --layout coco")
    if args.realistic and args.heldout:
        parser.error("--realistic and --heldout are two different data sets: give one")
    return args


def main(argv=None):
    args = parse_args(argv)
    n_train, n_val = DEFAULT_COUNTS[args.layout]
    n_train = n_train if args.train is None else args.train
    n_val = n_val if args.val is None else args.val
    start = time.perf_counter()
    sizes = {"min_size": args.min_size, "max_size": args.max_size}
    extra = {}
    if args.realistic:
        out, quirks = make_realistic_coco(args.out, args.seed, n_train, n_val, **sizes)
        extra = {"realistic": True, "quirks": quirks}
    elif args.heldout:
        out = make_heldout(args.out, args.seed, n_train, n_val, **sizes)
        extra = {"heldout": True}
    else:
        out = WRITERS[args.layout](args.out, args.seed, n_train, n_val, **sizes)
    print(
        json.dumps(
            {
                "layout": args.layout,
                "out": str(out),
                "train": n_train,
                "val": n_val,
                **extra,
                "seconds": round(time.perf_counter() - start, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
