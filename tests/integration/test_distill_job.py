"""jobs/distill.py on a tiny generated set, a real local Ray and a real MLflow server: a
round nested under the distillation's parent run, its checkpoint an ordinary one with the
student's step count, the summary JSON of docs/cli.md, and the round resumed as any
training run is."""

from __future__ import annotations

import json

import pytest
from helpers_ckpt import image_config, write_checkpoint
from helpers_jobs import load_job

# a drill (`bash tests/run_all.sh drills`): two training runs; the objective, its resume and
# the round plan are unit tests (tests/unit/test_distill.py)
pytestmark = [pytest.mark.ray, pytest.mark.drill, pytest.mark.timeout(600)]

SETS = [
    "train.steps=2",
    "train.batch_size=4",
    "train.checkpoint_every=2",
    "train.log_every=1",
    "train.time_budget_min=0",
    "eval.max_images=3",
    "eval.batch_size=3",
    "eval.overlays=0",
    "eval.every_steps=0",
    "data.image_size=32",
    "optim.warmup_steps=1",
]


def test_distill_job_round_resume_and_summary(ray_session, mlflow_server, tmp_path, monkeypatch):
    import mlflow.tracking

    from pix2seqd.platform.evaluation.predict import load_for_inference
    from pix2seqd.platform.synthetic.coco import make_coco
    from pix2seqd.platform.train import checkpoints

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    data = make_coco(tmp_path / "coco", seed=3, n_train=8, n_val=3, min_size=48, max_size=64)
    teacher = write_checkpoint(tmp_path / "teacher", image_config(8))  # 7 categories + void
    out = tmp_path / "distill.json"
    args = [
        *("--teacher", str(teacher), "--rounds", "1", "--teacher-steps", "4"),
        *("--data-root", str(data), "--storage-path", str(tmp_path / "ray")),
        *("--summary-json", str(out), "--run-name", "dist"),
    ]
    summary = load_job("distill").main(args + [x for s in SETS for x in ("--set", s)])

    assert json.loads(out.read_text()) == summary
    assert set(summary) == {"mlflow_run_id", "teacher", "rounds"}
    assert summary["teacher"] == str(teacher)
    (done,) = summary["rounds"]
    assert set(done) == {"steps", "mlflow_run_id", "checkpoint", "metrics", "sample_ms"}
    assert done["steps"] == 2 and done["sample_ms"] > 0
    assert set(done["metrics"]) == {"pq", "pq_th", "pq_st"}

    mlc = mlflow.tracking.MlflowClient(mlflow_server)
    parent = mlc.get_run(summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params["distill.teacher_steps"] == "4"
    assert parent.data.metrics["distill/steps"] == 2
    run = mlc.get_run(done["mlflow_run_id"])
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.params["distill.teacher"] == str(teacher)
    # the student keeps the preset's τ_d 2, counted in its own steps
    assert (run.data.params["sample.steps"], run.data.params["sample.td"]) == ("2", "2.0")
    assert run.info.status == "FINISHED" and run.data.tags["distill"] == "round 1"
    _, cfg = load_for_inference(done["checkpoint"])
    assert (cfg.sample.steps, cfg.distill.teacher) == (2, str(teacher))

    # the round goes on as any training run does, teacher and all
    more = load_job("train_coco").main(
        ["--resume", f"runs:/{done['mlflow_run_id']}", "--set", "train.steps=4"]
    )
    assert more["mlflow_run_id"] == done["mlflow_run_id"]
    assert checkpoints.load_meta(more["checkpoint"])["step"] == 4
    resumed = mlc.get_run(done["mlflow_run_id"])
    assert resumed.data.metrics["train/restored_from"] == 2
    assert resumed.data.params["distill.teacher"] == str(teacher)
