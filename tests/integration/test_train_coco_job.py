"""The whole train_coco job on a tiny generated set, a real local Ray and a real MLflow
server: params, metrics and a checkpoint that loads must land in the MLflow run."""

from __future__ import annotations

import json
import signal

import pytest
from helpers_jobs import load_job

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def test_train_coco_end_to_end(ray_session, mlflow_server, tmp_path, monkeypatch):
    from pix2seqd.platform.synthetic.coco import make_coco
    from pix2seqd.platform.train import checkpoints

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    data = tmp_path / "coco"
    make_coco(data, seed=3, n_train=12, n_val=3, min_size=48, max_size=64)
    summary_path = tmp_path / "summary.json"
    sets = [
        "train.steps=4",
        "train.batch_size=4",
        "train.checkpoint_every=2",
        "train.log_every=1",
        "sample.steps=2",
        "eval.max_images=3",
        "eval.batch_size=3",
        "eval.overlays=2",
        "optim.warmup_steps=1",
    ]  # the tiny preset's data.image_size=auto
    args = [
        "--data-root",
        str(data),
        "--storage-path",
        str(tmp_path / "ray"),
        "--summary-json",
        str(summary_path),
        "--run-name",
        "itest",
    ]
    for s in sets:
        args += ["--set", s]
    sigint = signal.getsignal(signal.SIGINT)
    summary = load_job("train_coco").main(args)

    # Ray Train's Ctrl-C handler (it holds the finished controller) is not left behind
    assert signal.getsignal(signal.SIGINT) is sigint
    assert json.loads(summary_path.read_text()) == summary
    assert set(summary) == {"mlflow_run_id", "tracking_uri", "checkpoint", "metrics"}
    assert set(summary["metrics"]) == {"pq", "pq_th", "pq_st"}
    # plumbing only: 4 steps score PQ 0.0 (observed 2026-12-07); the score floors of a
    # model that has learnt: tests/integration/test_score_floors.py
    assert all(0.0 <= v <= 1.0 for v in summary["metrics"].values())

    import mlflow.tracking

    mlc = mlflow.tracking.MlflowClient(mlflow_server)
    run = mlc.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == "0.003"
    assert run.data.params["train.steps"] == "4"
    assert run.data.params["model.num_classes"] == "8"  # 7 generated categories + void
    for key in (
        "train/loss",
        "train/lr",
        "train/img_per_s",
        "train/data_wait_frac",
        "val/pq",
        "val/pq_th",
        "val/pq_st",
    ):
        assert key in run.data.metrics, key
    assert any(k.startswith("eval/pq_class/") for k in run.data.metrics)
    assert len(mlc.get_metric_history(run.info.run_id, "train/loss")) == 4
    assert run.data.metrics["data/bad_records"] == 0 and "data/voided_segments" in run.data.metrics
    # the size report, and the canvas auto chose from it: its least, 64, for images of
    # 48-64 px whose things are 22-45 % of the shorter side
    assert run.data.params["data.image_size"] == "64"
    assert run.data.tags["image_size_rule"].startswith("auto: the smallest square")
    assert run.data.metrics["data/thing_mask_px_p50"] > 12
    assert {"data/thing_mask_px_p25", "data/things_under_4px"} <= set(run.data.metrics)
    data_arts = {a.path for a in mlc.list_artifacts(run.info.run_id, "data")}
    assert {"data/size_report.json", "data/validation_report.json"} <= data_arts
    tags = run.data.tags
    assert tags["preset"] == "tiny" and "git_commit" in tags
    assert tags["dataset"] == "coco" and tags["data_source"] == str(data)
    assert {"checkpoint/2", "checkpoint/4"} <= set(tags)
    arts = {a.path for a in mlc.list_artifacts(run.info.run_id, "overlays")}
    assert len(arts) == 2
    assert "eval/predict_s" in run.data.metrics and "final/pq" in run.data.metrics
    # the final EMA weights as the served pyfunc model (tests/integration/test_served_model.py)
    import mlflow.models

    served = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model")
    assert "checkpoint" in served.flavors["python_function"]["artifacts"]
    assert served.signature.inputs.input_names() == ["image"]

    for ref in (summary["checkpoint"], f"runs:/{run.info.run_id}"):
        with checkpoints.fetched(ref) as d:
            snap = checkpoints.load(d)
        assert snap["step"] == 4
        assert snap["config"]["train.steps"] == 4
        from pix2seqd.platform.evaluation.predict import load_for_inference

        model, cfg = load_for_inference(ref)
        assert cfg.model.num_classes == 8


def test_train_on_the_cityscapes_layout(ray_session, mlflow_server, tmp_path, monkeypatch):
    """Cityscapes panoptic (string image ids, PNG images under leftImg8bit/<city>/) through
    the same job on a non-square canvas, as the cityscapes preset's 1024 x 2048: reader
    chosen by data.dataset, PQ scored against gtFine."""
    from pix2seqd.platform.synthetic.cityscapes import make_cityscapes

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    data = make_cityscapes(tmp_path / "cs", 0, 8, 2, 48, 64)
    sets = [
        "data.dataset=cityscapes",
        "data.train_split=train",
        "data.val_split=val",
        "train.steps=2",
        "train.batch_size=4",
        "train.checkpoint_every=2",
        "train.log_every=1",
        "sample.steps=2",
        "eval.batch_size=2",
        "eval.overlays=1",
        "data.image_size=32",
        "data.image_width=64",
    ]
    args = ["--data-root", str(data), "--storage-path", str(tmp_path / "ray"), "--run-name", "cs"]
    summary = load_job("train_coco").main(args + [x for s in sets for x in ("--set", s)])

    import mlflow.tracking

    run = mlflow.tracking.MlflowClient(mlflow_server).get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["dataset"] == "cityscapes"
    assert run.data.params["data.image_width"] == "64"
    assert all(0.0 <= v <= 1.0 for v in summary["metrics"].values())  # 2 steps: PQ 0.0
    assert "val/pq" in run.data.metrics


def test_periodic_evaluation_keeps_the_best_checkpoint(
    ray_session, mlflow_server, tmp_path, monkeypatch
):
    """eval.every_steps: rank 0 scores the EMA weights on a val subset at checkpoints; the
    best by val/pq is copied apart and becomes the run's checkpoint and summary."""
    import mlflow.tracking

    from pix2seqd.platform.synthetic.coco import make_coco
    from pix2seqd.platform.train import checkpoints

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    data = make_coco(tmp_path / "coco", 4, 12, 3, 40, 56)
    sets = [
        "train.steps=6",
        "train.batch_size=4",
        "train.checkpoint_every=2",
        "train.log_every=2",
        "train.keep_checkpoints=1",
        "eval.every_steps=2",
        "eval.periodic_images=2",
        "sample.steps=2",
        "sample.min_pixels=0",
        "eval.overlays=0",
        "data.image_size=32",
    ]
    args = [
        "--data-root",
        str(data),
        "--storage-path",
        str(tmp_path / "ray"),
        "--run-name",
        "periodic",
    ]
    summary = load_job("train_coco").main(args + [x for s in sets for x in ("--set", s)])

    mlc = mlflow.tracking.MlflowClient(mlflow_server)
    run = mlc.get_run(summary["mlflow_run_id"])
    hist = {m.step: m.value for m in mlc.get_metric_history(run.info.run_id, "val/pq")}
    assert sorted(hist) == [2, 4, 6]
    tags = run.data.tags
    best_step = max(hist, key=lambda s: (hist[s], -s))  # first of the best: strictly better wins
    assert tags["best_step"] == str(best_step) and float(tags["best_val_pq"]) == hist[best_step]
    assert tags["best_checkpoint"].endswith(f"best_{best_step:08d}")
    assert summary["checkpoint"] == tags["best_checkpoint"]
    assert checkpoints.load_meta(summary["checkpoint"])["step"] == best_step
    assert [k for k in tags if k.startswith("checkpoint/")] == ["checkpoint/6"]  # keep 1
    assert "final/pq" in run.data.metrics
