"""Panoptic quality of COCO-panoptic predictions (panopticapi's rules), from files or from a
checkpoint; mIoU and AP^Th_pan beside it (docs/pq.md).

    # score result files (a JSON + a folder of PNGs, panopticapi's format)
    python jobs/eval_coco.py --gt-json GT.json --gt-dir GT/ --pred-json P.json --pred-dir P/ --out R.json
    # predict the val split with a checkpoint (Ray Data actors), then score it
    python jobs/eval_coco.py --checkpoint runs:/<run id> --data-root /data/coco --pred-dir preds/ --out R.json
"""

from __future__ import annotations

import argparse

from pix2seqd.platform.cli import (
    add_checkpoint_flags,
    add_data_root_flag,
    checkpoint_overrides,
    job_parser,
    parse_job_args,
)

FILE_FLAGS = ("gt_json", "gt_dir", "pred_json")


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(__doc__.splitlines()[0])
    add_checkpoint_flags(parser)
    parser.add_argument("--gt-json", default="", help="ground-truth panoptic JSON (files mode)")
    parser.add_argument("--gt-dir", default="", help="ground-truth PNG folder (files mode)")
    parser.add_argument("--pred-json", default="", help="prediction JSON (files mode)")
    parser.add_argument(
        "--pred-dir",
        required=True,
        help="prediction PNG folder: read (files mode) or written (checkpoint mode)",
    )
    add_data_root_flag(parser, "data set to predict (checkpoint mode; default: the generated set)")
    parser.add_argument("--split", default="val2017", help="split to predict (checkpoint mode)")
    parser.add_argument("--out", required=True, help="where to write R.json")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parse_job_args(parser, argv)
    given = [f for f in FILE_FLAGS if getattr(args, f)]
    if args.checkpoint and given:
        parser.error("give --checkpoint or the --gt-json/--gt-dir/--pred-json files, not both")
    if not args.checkpoint and len(given) != len(FILE_FLAGS):
        parser.error("files mode needs --gt-json, --gt-dir and --pred-json (or give --checkpoint)")
    # keeps --help fast: checkpoint evaluation imports torch and Ray
    from pix2seqd.platform.evaluation.coco_job import CheckpointEval, eval_checkpoint, score_files

    if args.checkpoint:
        result = eval_checkpoint(
            CheckpointEval(
                args.checkpoint,
                args.data_root,
                args.split,
                args.pred_dir,
                args.out,
                checkpoint_overrides(args),
            )
        )
    else:
        result = score_files(args.gt_json, args.gt_dir, args.pred_json, args.pred_dir, args.out)
    print_table(result)
    return result


def print_table(result: dict) -> None:
    print(f"{'':8}{'PQ':>7}{'SQ':>7}{'RQ':>7}{'N':>5}")
    for split in ("All", "Things", "Stuff"):
        r = result[split]
        print(f"{split:8}{100 * r['pq']:7.1f}{100 * r['sq']:7.1f}{100 * r['rq']:7.1f}{r['n']:5d}")
    for label, key in (("mIoU", "miou"), ("AP^Th_pan", "ap_th_pan")):
        print(label + _percent(result.get(key)).rjust(15 - len(label)))
    t = result["timing"]
    print(f"predict {t['predict_s']:.1f} s, score {t['score_s']:.1f} s")


def _percent(value: float | None) -> str:
    """A fraction as a percent under the PQ column; '-' when R.json has null (no segment
    scores for AP^Th_pan, or no category to average)."""
    return "-" if value is None else f"{100 * value:.1f}"


if __name__ == "__main__":
    main()
