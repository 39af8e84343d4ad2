"""The train_coco job over a `make_synthetic.py --realistic` set (COCO's 133 categories,
grayscale and CMYK JPEGs, a 121-segment image, crowd regions, images without segments in
both splits): validation passes every record, training keeps a finite loss, and PQ is
scored over every val image."""

from __future__ import annotations

import json
import math

import pytest
from helpers_jobs import load_job

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

K = 8  # the tiny preset's max_instances


def _voided(root, split):
    """Segments beyond K - 1 per image, counted from the JSON (crowds are segments)."""
    data = json.loads((root / "annotations" / f"panoptic_{split}.json").read_text())
    return sum(max(0, len(a["segments_info"]) - (K - 1)) for a in data["annotations"])


def test_train_and_evaluate_over_real_coco_quirks(
    ray_session, mlflow_server, tmp_path, monkeypatch
):
    import mlflow.tracking

    from pix2seqd.platform.synthetic.realistic import make_realistic_coco

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    data, quirks = make_realistic_coco(tmp_path / "coco", 5, 3, 1, 40, 56)
    n_val = 1 + sum(len(v) for v in quirks["val"].values())
    sets = [
        "train.steps=4",
        "train.batch_size=4",
        "train.checkpoint_every=4",
        "train.log_every=1",
        "sample.steps=2",
        f"eval.batch_size={n_val}",
        "eval.overlays=0",
        "eval.every_steps=0",
        "data.image_size=32",
        "optim.warmup_steps=1",
    ]
    args = [
        "--data-root",
        str(data),
        "--storage-path",
        str(tmp_path / "ray"),
        "--run-name",
        "quirks",
    ]
    summary = load_job("train_coco").main(args + [x for s in sets for x in ("--set", s)])

    assert all(0.0 <= v <= 1.0 for v in summary["metrics"].values())
    mlc = mlflow.tracking.MlflowClient(mlflow_server)
    run = mlc.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["model.num_classes"] == "134"  # COCO's 133 categories + void
    losses = [m.value for m in mlc.get_metric_history(run.info.run_id, "train/loss")]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    m = run.data.metrics
    assert m["data/bad_records"] == 0 and m["data/val_bad_records"] == 0
    assert m["data/voided_segments"] == _voided(data, "train2017") >= 121 - (K - 1)
    assert math.isfinite(m["final/pq"])
    per_class = {k.rsplit("/", 1)[1] for k in m if k.startswith("eval/pq_class/")}
    assert {"1", "200"} <= per_class  # COCO ids, not contiguous classes
