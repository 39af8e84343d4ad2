"""eval_coco, eval_davis and predict as command lines, on tiny generated sets, a real local
Ray and a real MLflow server: files mode, checkpoint mode (nested under the training run),
R.json / J.json contents, prediction files anyone can re-score."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers_ckpt import image_config, video_config, write_checkpoint
from helpers_jobs import load_job
from PIL import Image

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

R_KEYS = {"All", "Things", "Stuff", "per_class", "miou", "iou_per_class", "ap_th_pan", "timing"}
J_KEYS = {
    "J&F-Mean",
    "J-Mean",
    "J-Recall",
    "J-Decay",
    "F-Mean",
    "F-Recall",
    "F-Decay",
    "per_object",
    "timing",
}


@pytest.fixture
def mlflow_env(mlflow_server, monkeypatch):
    import mlflow.tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    return mlflow.tracking.MlflowClient(mlflow_server)


def _training_run(mlc, tags=None) -> str:
    from pix2seqd.platform import tracking

    return tracking.start_run(mlc, {"train.steps": 7}, tags or {}, run_name="train")


def _child(mlc, parent: str):
    runs = mlc.search_runs(
        [mlc.get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'"
    )
    assert len(runs) == 1
    return runs[0]


def test_eval_coco_scores_files(ray_session, mlflow_env, tmp_path):
    from pix2seqd.platform.synthetic.coco import make_coco

    root = make_coco(tmp_path / "coco", 1, 0, 4, 40, 56)
    gt_json, gt_dir = (
        root / "annotations/panoptic_val2017.json",
        root / "annotations/panoptic_val2017",
    )
    out = tmp_path / "R.json"
    args = [
        "--gt-json",
        str(gt_json),
        "--gt-dir",
        str(gt_dir),
        "--pred-json",
        str(gt_json),
        "--pred-dir",
        str(gt_dir),
        "--out",
        str(out),
    ]
    result = load_job("eval_coco").main(args)
    assert json.loads(out.read_text()) == result and set(result) == R_KEYS
    assert result["All"]["pq"] == 1.0 and result["timing"]["predict_s"] == 0.0
    run = mlflow_env.search_runs(
        [mlflow_env.get_experiment_by_name("pix2seqd").experiment_id], "tags.job = 'eval_coco'"
    )[0]
    assert run.info.status == "FINISHED" and run.data.metrics["val/pq"] == 1.0
    assert "eval/score_s" in run.data.metrics

    bad = json.loads(gt_json.read_text())
    bad["annotations"] = bad["annotations"][1:]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    missing = json.loads(gt_json.read_text())["annotations"][0]["image_id"]
    with pytest.raises(ValueError, match=f"image {missing}: no prediction"):
        load_job("eval_coco").main(
            args[:4] + ["--pred-json", str(tmp_path / "bad.json")] + args[6:]
        )


def test_eval_coco_from_a_checkpoint_nests_under_its_training_run(
    ray_session, mlflow_env, tmp_path
):
    from pix2seqd.platform.data.coco_panoptic import load_coco_panoptic
    from pix2seqd.platform.evaluation.pq import pq_compute
    from pix2seqd.platform.synthetic.coco import make_coco

    root = make_coco(tmp_path / "coco", 2, 0, 3, 40, 56)
    records, cmap = load_coco_panoptic(root, "val2017")
    parent = _training_run(mlflow_env)
    ckpt = write_checkpoint(
        tmp_path / "ckpt", image_config(cmap.num_classes), cmap.to_coco(), parent
    )
    pred_dir, out = tmp_path / "pred", tmp_path / "R.json"
    result = load_job("eval_coco").main(
        [
            "--checkpoint",
            str(ckpt),
            "--data-root",
            str(root),
            "--pred-dir",
            str(pred_dir),
            "--out",
            str(out),
            "--steps",
            "2",
            "--min-pixels",
            "0",
        ]
    )
    assert set(result) == R_KEYS and result["timing"]["predict_s"] > 0
    assert sorted(p.name for p in pred_dir.glob("*.png")) == sorted(
        r.png_path.name for r in records
    )
    # the written files are panopticapi's format: scoring them again gives the same numbers
    again = pq_compute(
        pred_dir / "groundtruth.json",
        pred_dir / "predictions.json",
        root / "annotations/panoptic_val2017",
        pred_dir,
    )
    assert {k: again[k] for k in ("All", "Things", "Stuff", "per_class")} == {
        k: result[k] for k in ("All", "Things", "Stuff", "per_class")
    }
    child = _child(mlflow_env, parent)
    assert child.info.status == "FINISHED" and child.data.tags["checkpoint"] == str(ckpt)
    assert (
        child.data.params["sample.steps"] == "2" and child.data.params["sample.min_pixels"] == "0"
    )
    assert child.data.metrics["val/pq"] == pytest.approx(result["All"]["pq"])
    assert {f"eval/pq_class/{c['id']}" for c in cmap.to_coco()} <= set(child.data.metrics)
    arts = {a.path for a in mlflow_env.list_artifacts(child.info.run_id, "eval")}
    assert {"eval/pq.json", "eval/pq_per_class.md"} <= arts
    assert len(mlflow_env.list_artifacts(child.info.run_id, "overlays")) == 2


def test_eval_davis_scores_the_ground_truth_perfectly(ray_session, mlflow_env, tmp_path):
    from pix2seqd.platform.synthetic.davis import make_davis

    root = make_davis(tmp_path / "davis", 3, 0, 2, 40, 56)
    results = tmp_path / "results"
    for png in (root / "Annotations_unsupervised/480p").rglob("*.png"):
        target = results / png.parent.name / png.name
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(png) as im:
            ids = np.asarray(im).copy()
            ids[ids == 255] = 0
            out = Image.fromarray(ids)
            out.putpalette(im.getpalette())
            out.save(target)
    out = tmp_path / "J.json"
    result = load_job("eval_davis").main(
        [
            "--davis-root",
            str(root),
            "--results-dir",
            str(results),
            "--split",
            "val",
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == result and set(result) == J_KEYS
    assert result["J&F-Mean"] == 1.0 and result["J-Decay"] == 0.0
    assert all(v == {"J-Mean": 1.0, "F-Mean": 1.0} for v in result["per_object"].values())

    shutil.rmtree(results / sorted(p.name for p in results.iterdir())[0])
    with pytest.raises(FileNotFoundError, match="00000"):
        load_job("eval_davis").main(
            ["--davis-root", str(root), "--results-dir", str(results), "--out", str(out)]
        )


def test_eval_davis_from_a_checkpoint_reference_in_mlflow(ray_session, mlflow_env, tmp_path):
    from pix2seqd.platform.synthetic.davis import make_davis

    root = make_davis(tmp_path / "davis", 4, 0, 2, 40, 56)
    ckpt = write_checkpoint(tmp_path / "ckpt", video_config())
    parent = _training_run(mlflow_env, {"best_checkpoint": str(ckpt)})
    results, out = tmp_path / "results", tmp_path / "J.json"
    result = load_job("eval_davis").main(
        [
            "--checkpoint",
            f"runs:/{parent}",
            "--davis-root",
            str(root),
            "--results-dir",
            str(results),
            "--out",
            str(out),
            "--first-steps",
            "2",
            "--later-steps",
            "1",
        ]
    )
    assert set(result) == J_KEYS | {"proposals_dropped", "mean_later_steps"}
    # random weights: J&F 0.04 (observed 2026-12-07); floors: test_score_floors.py
    assert 0.0 <= result["J&F-Mean"] <= 1.0 and result["timing"]["predict_s"] > 0
    assert result["mean_later_steps"] == 1.0 and result["timing"]["predict_ms_per_frame"] > 0
    for seq in (root / "ImageSets/2017/val.txt").read_text().split():
        gt = sorted(p.name for p in (root / "Annotations_unsupervised/480p" / seq).glob("*.png"))
        assert sorted(p.name for p in (results / seq).glob("*.png")) == gt
    child = _child(mlflow_env, parent)
    assert child.data.metrics["val/jf"] == pytest.approx(result["J&F-Mean"])
    assert child.data.params["sample.later_steps"] == "1"
    assert child.data.metrics["eval/mean_later_steps"] == 1.0

    # sample.adaptive: a rule that accepts any change stops every later frame after its
    # second of 4 steps
    adaptive = load_job("eval_davis").main(
        [
            *("--checkpoint", str(ckpt), "--davis-root", str(root)),
            *("--results-dir", str(tmp_path / "adaptive"), "--out", str(tmp_path / "A.json")),
            *("--first-steps", "2", "--later-steps", "4"),
            *("--set", "sample.adaptive=true", "--set", "sample.adaptive_change=1.0"),
        ]
    )
    assert adaptive["mean_later_steps"] == 2.0


def test_predict_an_image_folder_and_a_frames_folder(ray_session, mlflow_env, tmp_path):
    from pix2seqd.platform.data.coco_panoptic import load_coco_panoptic, read_id_png
    from pix2seqd.platform.synthetic.coco import make_coco
    from pix2seqd.platform.synthetic.davis import make_davis

    root = make_coco(tmp_path / "coco", 5, 0, 2, 40, 56)
    _, cmap = load_coco_panoptic(root, "val2017")
    ckpt = write_checkpoint(tmp_path / "ckpt", image_config(cmap.num_classes), cmap.to_coco())
    out = tmp_path / "out"
    summary = load_job("predict").main(
        [
            "--checkpoint",
            str(ckpt),
            "--input",
            str(root / "val2017"),
            "--out",
            str(out),
            "--steps",
            "2",
            "--min-pixels",
            "0",
        ]
    )
    assert summary == {"mode": "images", "outputs": 2, "out": str(out)}
    preds = json.loads((out / "predictions.json").read_text())
    assert preds["categories"] == cmap.to_coco() and len(preds["images"]) == 2
    for ann in preds["annotations"]:
        ids = read_id_png(out / ann["file_name"])
        assert set(np.unique(ids)) - {0} == {s["id"] for s in ann["segments_info"]}
        assert (out / "overlays" / ann["file_name"]).is_file()

    davis = make_davis(tmp_path / "davis", 6, 0, 1, 40, 56)
    frames = next((davis / "JPEGImages/480p").iterdir())
    vckpt = write_checkpoint(tmp_path / "vckpt", video_config())
    vout = tmp_path / "vout"
    summary = load_job("predict").main(
        ["--checkpoint", str(vckpt), "--input", str(frames), "--out", str(vout)]
    )
    n = len(list(frames.glob("*.jpg")))
    assert summary["mode"] == "video" and summary["outputs"] == n
    assert (
        len(list((vout / frames.name).glob("*.png")))
        == n
        == len(list((vout / "overlays").glob("*.png")))
    )


def test_inference_actor_count_follows_the_cluster(ray_session):
    from pix2seqd.platform.ray_env import cluster_gpus, inference_actors

    cpus = int(ray_session.cluster_resources()["CPU"])
    assert cluster_gpus() == 0
    assert inference_actors(3, False) == 3
    assert inference_actors(0, False) == cpus - 1  # one CPU left to the feeding operators
    assert inference_actors(0, True) == 1  # no GPU yet: one actor waits for one


def test_inference_sweep_of_a_video_checkpoint_with_the_adaptive_rule(
    ray_session, mlflow_env, tmp_path
):
    from pix2seqd.platform.sweep.cli import main
    from pix2seqd.platform.synthetic.davis import make_davis
    from pix2seqd.sweeps.inference import SWEEP

    root = make_davis(tmp_path / "davis", 3, 0, 2, 40, 56)
    ckpt = str(write_checkpoint(tmp_path / "ckpt", video_config()))
    summary = main(
        SWEEP,
        [
            *("--checkpoint", ckpt, "--data-root", str(root), "--set", "sample.steps=2"),
            *("--later-steps", "3", "--td", "1", "--adaptive", "false,true"),
            *("--adaptive-change", "1.0"),  # any change stops: after the second step
        ],
    )
    trials = {
        (t["params"]["sample.later_steps"], t["params"]["sample.adaptive"]): t
        for t in summary["trials"]
    }
    steps = {k: t["mean_later_steps"] for k, t in trials.items()}
    assert steps == {(3, False): 3.0, (3, True): 2.0}
    parent = mlflow_env.get_run(summary["parent_run_id"])
    assert parent.data.tags["split"] == "val" and parent.data.tags["sweep"] == "inference_video"
    assert "best/j_and_f" in parent.data.metrics
    arts = {a.path for a in mlflow_env.list_artifacts(parent.info.run_id, "sweep")}
    assert "sweep/j_and_f_vs_later_steps.png" in arts
    fixed = trials[(3, False)]
    run = mlflow_env.get_run(fixed["run_id"])
    assert run.data.metrics["val/jf"] == pytest.approx(fixed["j_and_f"])
    assert run.data.metrics["eval/mean_later_steps"] == 3.0
    assert run.data.params["sample.adaptive"] == "False"
    assert fixed["predict_ms_per_frame"] > 0

    # the grid point with eval_davis's settings scores what eval_davis scores
    result = load_job("eval_davis").main(
        [
            *("--checkpoint", ckpt, "--davis-root", str(root)),
            *("--results-dir", str(tmp_path / "r"), "--out", str(tmp_path / "J.json")),
            *("--first-steps", "2", "--later-steps", "3", "--td", "1"),
        ]
    )
    assert (fixed["j_and_f"], fixed["j"], fixed["f"]) == (
        result["J&F-Mean"],
        result["J-Mean"],
        result["F-Mean"],
    )
