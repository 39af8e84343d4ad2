"""prepare_data to s3:// and train_coco --prepared s3:// --storage-path s3:// against a local
S3-compatible server (moto, started here; no internet), with a real MLflow server: a bad
record is skipped, counted and logged; checkpoints, the best one included, land in S3 and
resolve from their MLflow tags."""

from __future__ import annotations

import json

import pytest
from helpers_bad_data import corrupt
from helpers_jobs import load_job

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]


def test_prepare_to_s3_and_train_from_it(s3_server, mlflow_server, tmp_path, monkeypatch):
    from pix2seqd.platform.data import prepared
    from pix2seqd.platform.synthetic.coco import make_coco

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    data = make_coco(tmp_path / "coco", seed=3, n_train=10, n_val=3, min_size=48, max_size=64)
    corrupt(data, "truncated_jpeg")
    out = f"{s3_server}/coco"
    load_job("prepare_data").main(
        [
            "--dataset",
            "coco",
            "--root",
            str(data),
            "--out",
            out,
            "--rows-per-shard",
            "4",
            "--skip-bad",
        ]
    )
    report = json.loads(prepared.read_text(f"{out}/validation_report.json"))
    assert report["splits"]["train2017"]["n_bad"] == 1
    rows, _, _ = prepared.load_prepared(out, "train2017")
    assert len(rows) == 9 and all(r["shard"].startswith(f"{out}/train2017/shard-") for r in rows)

    sets = [
        "train.steps=3",
        "train.batch_size=4",
        "train.checkpoint_every=3",
        "train.log_every=1",
        "sample.steps=2",
        "eval.max_images=2",
        "eval.batch_size=2",
        "eval.overlays=1",
        "data.image_size=32",
        "optim.warmup_steps=1",
        "data.exact_order=true",  # each worker reads its own ordered dataset
        "eval.every_steps=3",
        "eval.periodic_images=2",
    ]
    args = ["--prepared", out, "--storage-path", f"{s3_server}/ray", "--run-name", "s3"]
    summary = load_job("train_coco").main(args + [x for s in sets for x in ("--set", s)])

    import mlflow.tracking

    mlc = mlflow.tracking.MlflowClient(mlflow_server)
    run = mlc.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["data.prepared"] == out
    assert run.data.metrics["data/bad_records"] == 1
    assert "data/voided_segments" in run.data.metrics
    assert run.data.tags["data_source"] == out and run.data.tags["dataset"] == "coco"
    # prepared shards: the size report of the val split's annotation file
    assert {a.path for a in mlc.list_artifacts(run.info.run_id, "data")} == {
        "data/validation_report.json",
        "data/size_report.json",
    }
    assert "data/thing_mask_px_p50" in run.data.metrics
    # plumbing only: 2-4-step runs score PQ 0.0 (test_train_coco_job.py, 2026-12-07);
    # the score floors: tests/integration/test_score_floors.py
    assert 0.0 <= summary["metrics"]["pq"] <= 1.0

    from pix2seqd.platform.train import checkpoints

    tags = run.data.tags
    assert tags["checkpoint/3"].startswith(f"{s3_server}/ray/") and tags["best_step"] == "3"
    assert (
        summary["checkpoint"] == tags["best_checkpoint"]
        and "/best_00000003" in summary["checkpoint"]
    )
    for ref in (tags["checkpoint/3"], summary["checkpoint"], f"runs:/{run.info.run_id}"):
        snap = checkpoints.load_meta(ref)
        assert snap["step"] == 3 and snap["mlflow_run_id"] == run.info.run_id
