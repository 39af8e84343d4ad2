"""`jobs/distill.py`: rounds of progressive distillation (docs/distillation.md), each an
ordinary training run of the image task (Ray Train, DDP, checkpoints, resume, EMA, periodic
and final evaluation, MLflow) whose loss is `models.distill.distillation_loss`, nested
under one parent MLflow run.

Round k trains a student initialised from the previous round's checkpoint (round 1: the
teacher's) to sample with `teacher_steps / 2^k` steps and the teacher's time difference
`teacher_td` (counted in the student's own steps), that checkpoint being its teacher; it is scored on the val split with
its own step count and is an ordinary checkpoint for `eval_coco`, `predict` and the
inference sweep.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from pix2seqd.platform import tracking
from pix2seqd.platform.benchmarks import gpu_bench
from pix2seqd.platform.config import Config, override
from pix2seqd.platform.evaluation.predict import load_for_inference
from pix2seqd.platform.tracking_buffer import set_final_status
from pix2seqd.platform.train.options import RunOptions
from pix2seqd.platform.train.run import train_coco

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillPlan:
    """teacher: CKPT reference; rounds: halvings; teacher_steps / teacher_td: the sampler
    the first round's student learns to halve (steps a power of two). Every student samples
    with τ_d = teacher_td in its own steps (docs/distillation.md, "Times")."""

    teacher: str
    rounds: int
    teacher_steps: int
    teacher_td: float

    def steps(self, k: int) -> int:
        return self.teacher_steps >> k

    def td(self, k: int) -> float:
        return self.teacher_td


def make_plan(cfg: Config, teacher: str, rounds: int, teacher_steps: int = 0) -> DistillPlan:
    """The plan of `rounds` halvings from `teacher_steps` (0: the largest power of two not
    above `sample.steps`, e.g. 16 for the paper's 20) with `sample.td`. ValueError when the
    steps are not a power of two or the rounds would go below one step."""
    steps = teacher_steps or 1 << (max(1, cfg.sample.steps).bit_length() - 1)
    if steps < 1 or steps & (steps - 1):
        raise ValueError(f"--teacher-steps {steps}: a power of two is halved exactly")
    if rounds < 1 or steps >> rounds < 1:
        raise ValueError(
            f"--rounds {rounds}: from {steps} teacher steps at most "
            f"{steps.bit_length() - 1} rounds halve to one step"
        )
    return DistillPlan(teacher, rounds, steps, cfg.sample.td)


def round_config(cfg: Config, plan: DistillPlan, k: int, teacher: str) -> Config:
    """Round k's config (k = 1..rounds): the student's sampler and its teacher."""
    return override(
        cfg,
        {"sample.steps": plan.steps(k), "sample.td": plan.td(k), "distill.teacher": teacher},
    )


def distill(cfg: Config, opts: RunOptions, plan: DistillPlan) -> dict[str, Any]:
    """Run the plan's rounds under a parent MLflow run; the summary of docs/cli.md
    (`distill`), also written to `opts.summary_json`."""
    mlc = tracking.client()
    name = opts.run_name or f"distill-{plan.teacher_steps}"
    parent = tracking.start_run(
        mlc,
        {
            "distill.teacher": plan.teacher,
            "distill.rounds": plan.rounds,
            "distill.teacher_steps": plan.teacher_steps,
            "distill.teacher_td": plan.teacher_td,
        },
        {**dict(opts.tags), "distill": "parent"},
        run_name=name,
        experiment=opts.experiment,
    )
    rounds, teacher = [], plan.teacher
    try:
        for k in range(1, plan.rounds + 1):
            done = _round(cfg, opts, plan, k, teacher, parent, name)
            tracking.log_metrics(mlc, parent, _parent_metrics(done), k)
            rounds.append(done)
            teacher = done["checkpoint"]
        set_final_status(mlc, parent, "FINISHED")
    except BaseException:
        set_final_status(mlc, parent, "FAILED")
        raise
    summary = {"mlflow_run_id": parent, "teacher": plan.teacher, "rounds": rounds}
    if opts.summary_json:
        Path(opts.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.summary_json).write_text(json.dumps(summary, indent=2))
    return summary


def _round(
    cfg: Config, opts: RunOptions, plan: DistillPlan, k: int, teacher: str, parent: str, name: str
) -> dict[str, Any]:
    steps = plan.steps(k)
    log.info("distillation round %d of %d: %d -> %d steps", k, plan.rounds, 2 * steps, steps)
    run = train_coco(
        round_config(cfg, plan, k, teacher),
        replace(
            opts,
            init_from=teacher,
            parent_run_id=parent,
            run_name=f"{name}-{steps}steps",
            summary_json="",
            tags=(*opts.tags, ("distill", f"round {k}")),
        ),
    )
    m = run["metrics"]
    return {
        "steps": steps,
        "mlflow_run_id": run["mlflow_run_id"],
        "checkpoint": run["checkpoint"],
        "metrics": {"pq": m["pq"], "pq_th": m["pq_th"], "pq_st": m["pq_st"]},
        "sample_ms": sample_ms(run["checkpoint"], steps),
    }


def _parent_metrics(done: dict[str, Any]) -> dict[str, float]:
    return {
        "distill/steps": done["steps"],
        "distill/pq": done["metrics"]["pq"],
        "distill/sample_ms": done["sample_ms"],
    }


def sample_ms(checkpoint: str, steps: int, batch: int = 1, reps: tuple[int, int] = (1, 5)) -> float:
    """Median ms per image of sampling `batch` random images at the checkpoint's canvas
    with `steps` steps (its own τ_d), as the prediction jobs sample (`gpu_bench.sample_ms`),
    on this process's device (a GPU when it sees one)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, cfg = load_for_inference(checkpoint, str(device))
    return gpu_bench.sample_ms(model, cfg, device, batch, reps, steps)
