"""Progressive distillation of an image model's sampler: rounds halving its steps, each a
training run nested under one MLflow run (docs/distillation.md).

python jobs/distill.py --teacher runs:/<id> --rounds 2 --time-budget 5   # tiny: 16 -> 8 -> 4
python jobs/distill.py --teacher runs:/<id> --rounds 3 --preset coco_lowres --data-root /data/coco
"""

from __future__ import annotations

import argparse

from pix2seqd.platform.cli import (
    add_common_flags,
    add_source_flags,
    job_parser,
    parse_job_args,
    training_setup,
)


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(__doc__.splitlines()[0])
    add_common_flags(parser)
    add_source_flags(parser, "COCO-panoptic folder (default: the generated data set)")
    parser.add_argument("--teacher", required=True, metavar="CKPT", help="the model to distil")
    parser.add_argument("--rounds", type=int, required=True, help="halvings of the steps")
    parser.add_argument(
        "--teacher-steps",
        type=int,
        default=0,
        help="the teacher's steps the first round halves, a power of two (default: the "
        "largest one not above the preset's sample.steps)",
    )
    parser.add_argument(
        "--time-budget", type=float, default=None, metavar="MIN", help="minutes per round"
    )
    parser.add_argument("--summary-json", default="", metavar="PATH")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parse_job_args(parser, argv)
    args.init_from, args.resume, args.skip_bad = args.teacher, "", False
    # keeps --help fast: the training stack imports torch, Ray and MLflow
    from pix2seqd.platform.train.distill_run import distill, make_plan

    cfg, opts = training_setup(parser, args, args.data_root)
    summary = distill(cfg, opts, make_plan(cfg, args.teacher, args.rounds, args.teacher_steps))
    for r in summary["rounds"]:
        m = r["metrics"]
        print(
            f"{r['steps']:>3} steps: PQ {m['pq']:.4f}  PQ_th {m['pq_th']:.4f}  "
            f"PQ_st {m['pq_st']:.4f}  {r['sample_ms']:.1f} ms/image  {r['checkpoint']}"
        )
    print(f"MLflow parent run {summary['mlflow_run_id']}")
    return summary


if __name__ == "__main__":
    main()
