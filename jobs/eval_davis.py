"""DAVIS-2017 unsupervised J&F (the official evaluator's rules), from palette PNGs or from a
checkpoint's streaming video model.

    # score results/<sequence>/<frame>.png
    python jobs/eval_davis.py --data-root /data/DAVIS --results-dir results/ --split val --out J.json
    # segment the split's videos with a checkpoint (Ray Data actors), then score them
    python jobs/eval_davis.py --checkpoint runs:/<run id> --data-root /data/DAVIS --results-dir results/ --out J.json
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


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(__doc__.splitlines()[0])
    add_checkpoint_flags(parser, video=True)
    add_data_root_flag(
        parser, "DAVIS 2017 folder (official layout)", alias="--davis-root", required=True
    )
    parser.add_argument(
        "--results-dir",
        required=True,
        help="palette PNGs <seq>/<frame>.png: read, or written in checkpoint mode",
    )
    parser.add_argument("--split", default="val", help="ImageSets/2017/<split>.txt")
    parser.add_argument(
        "--resolution", default="480p", help="frame folder (480p or Full-Resolution)"
    )
    parser.add_argument("--out", required=True, help="where to write J.json")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = parse_job_args(build_parser(), argv)
    # keeps --help fast: checkpoint evaluation imports torch and Ray
    from pix2seqd.platform.evaluation.davis_job import (
        VideoCheckpointEval,
        eval_checkpoint,
        score_results,
    )

    if args.checkpoint:
        req = VideoCheckpointEval(
            args.checkpoint,
            args.data_root,
            args.split,
            args.results_dir,
            args.out,
            checkpoint_overrides(args),
            args.resolution,
        )
        result = eval_checkpoint(req)
    else:
        result = score_results(
            args.data_root, args.results_dir, args.split, args.out, args.resolution
        )
    print(
        "  ".join(
            f"{k} {result[k]:.3f}"
            for k in ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
        )
    )
    print(
        f"{len(result['per_object'])} objects; predict {result['timing']['predict_s']:.1f} s, "
        f"score {result['timing']['score_s']:.1f} s"
    )
    return result


if __name__ == "__main__":
    main()
