"""Sweeps end to end on a real local Ray and a real MLflow server, as command lines: a
two-trial training sweep (Tune trials each running Ray Train), a one-trial sweep with ASHA
(worker reports forwarded to Tune) and an inference sweep on a trial's checkpoint. Checked: the parent run, its nested child runs with the
swept values as params and val/pq, val/pq_th, val/pq_st as metrics, the parent's summary
table, plot and JSON, and that the inference grid point equal to eval_coco's settings
scores exactly what eval_coco scores."""

from __future__ import annotations

import csv
import io
import json

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

SETS = [
    "train.steps=20",
    "train.batch_size=4",
    "train.checkpoint_every=10",
    "train.log_every=5",
    "sample.steps=2",
    "sample.min_pixels=0",
    "eval.max_images=3",
    "eval.overlays=0",
    "eval.periodic_images=2",
]


@pytest.fixture(scope="module")
def mlc(mlflow_server):
    import mlflow.tracking

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        yield mlflow.tracking.MlflowClient(mlflow_server)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    from pix2seqd.platform.synthetic.coco import make_coco

    return make_coco(tmp_path_factory.mktemp("sweep") / "coco", 7, 16, 3, 40, 56)


@pytest.fixture(scope="module")
def train_sweep(ray_session, mlc, coco, tmp_path_factory):
    from pix2seqd.platform.sweep.cli import main
    from pix2seqd.sweeps.input_scale import SWEEP

    tmp = tmp_path_factory.mktemp("train_sweep")
    argv = [
        "--data-root",
        str(coco),
        "--grid",
        "diffusion.b_scale=0.1,0.3",
        "--storage-path",
        str(tmp / "storage"),
        "--summary-json",
        str(tmp / "S.json"),
    ]
    summary = main(SWEEP, argv + [x for s in SETS for x in ("--set", s)])
    assert json.loads((tmp / "S.json").read_text()) == summary
    return summary


def _artifact(mlc, run_id: str, path: str, dst) -> str:
    return open(mlc.download_artifacts(run_id, path, str(dst))).read()


def test_training_sweep_nests_one_run_per_trial(mlc, train_sweep, tmp_path):
    parent = mlc.get_run(train_sweep["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep"] == "input_scale"
    assert (
        parent.data.tags["failed_trials"] == "0" and "diffusion.b_scale" not in parent.data.params
    )
    trials = train_sweep["trials"]
    assert [t["params"] for t in trials] == [{"diffusion.b_scale": 0.1}, {"diffusion.b_scale": 0.3}]
    for t in trials:
        run = mlc.get_run(t["run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED" and t["status"] == "FINISHED"
        assert run.data.params["diffusion.b_scale"] == str(t["params"]["diffusion.b_scale"])
        assert {"val/pq", "val/pq_th", "val/pq_st"} <= set(run.data.metrics)
        assert t["pq"] == pytest.approx(run.data.metrics["val/pq"])  # the final evaluation
    arts = {a.path for a in mlc.list_artifacts(parent.info.run_id, "sweep")}
    assert arts == {
        "sweep/summary.csv",
        "sweep/summary.md",
        "sweep/summary.json",
        "sweep/pq_vs_b_scale.png",
    }
    table = list(
        csv.DictReader(
            io.StringIO(_artifact(mlc, parent.info.run_id, "sweep/summary.csv", tmp_path))
        )
    )
    assert [r["run_id"] for r in table] == [t["run_id"] for t in trials]
    assert "Table 3" in _artifact(mlc, parent.info.run_id, "sweep/summary.md", tmp_path)
    assert parent.data.tags["best_run_id"] in {t["run_id"] for t in trials}


def test_asha_sees_the_periodic_scores(mlc, ray_session, coco, tmp_path):
    from pix2seqd.platform.sweep.cli import main
    from pix2seqd.sweeps.loss_weight import SWEEP

    argv = [
        "--data-root",
        str(coco),
        "--grid",
        "loss.p=0.2",
        "--asha",
        "--storage-path",
        str(tmp_path),
    ]
    [trial] = main(SWEEP, argv + [x for s in SETS for x in ("--set", s)])["trials"]
    run = mlc.get_run(trial["run_id"])
    assert run.info.status == "FINISHED" and trial["status"] == "FINISHED"
    assert run.data.params["eval.every_steps"] == "10"  # --asha turned periodic evaluation on
    assert len(mlc.get_metric_history(run.info.run_id, "val/pq")) == 2  # steps 10 and 20
    assert trial["pq"] == pytest.approx(run.data.metrics["final/pq"])  # the full val split
    # Tune received the workers' checkpoint reports (ASHA's input), then the final one
    tune_dir = next(tmp_path.glob("sweep-loss_weight-*"))
    results = [
        json.loads(line)
        for f in tune_dir.glob("*/result.json")
        for line in f.read_text().splitlines()
    ]
    assert [r.get("step") for r in results][:2] == [10, 20] and "val/pq" in results[0]


def test_inference_sweep_on_a_trial_checkpoint(mlc, train_sweep, coco, tmp_path):
    from helpers_jobs import load_job

    from pix2seqd.platform.sweep.cli import main
    from pix2seqd.sweeps.inference import SWEEP

    ckpt = f"runs:/{train_sweep['trials'][1]['run_id']}"
    summary = main(
        SWEEP,
        [
            "--checkpoint",
            ckpt,
            "--data-root",
            str(coco),
            "--steps",
            "1,2",
            "--td",
            "1,2",
            "--min-pixels",
            "0,5",
            "--summary-json",
            str(tmp_path / "S.json"),
        ],
    )
    trials = summary["trials"]
    assert len(trials) == 8 and trials[0]["params"] == {
        "sample.steps": 1,
        "sample.td": 1.0,
        "sample.min_pixels": 0,
    }
    parent = mlc.get_run(summary["parent_run_id"])
    assert parent.data.tags["checkpoint"] == ckpt and parent.data.tags["sweep_kind"] == "inference"
    assert parent.data.tags["source_run_id"] == train_sweep["trials"][1]["run_id"]
    assert "eval/predict_s" in parent.data.metrics
    for t in trials:
        run = mlc.get_run(t["run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert {k: run.data.params[k] for k in t["params"]} == {
            k: str(v) for k, v in t["params"].items()
        }
        assert run.data.metrics["val/pq"] == pytest.approx(t["pq"])
        assert {"val/pq_th", "val/pq_st"} <= set(run.data.metrics)
        # the checkpoint scored and the steps it samples with (a distilled student's own)
        assert run.data.tags["checkpoint"] == ckpt and run.data.tags["checkpoint_steps"] == "2"
        assert "distill_teacher" not in run.data.tags  # not a distilled student
    arts = {a.path for a in mlc.list_artifacts(parent.info.run_id, "sweep")}
    assert "sweep/pq_vs_steps.png" in arts and "sweep/summary.csv" in arts

    # the checkpoint's own settings (steps 2, td 2, min_pixels 0): eval_coco scores the same
    result = load_job("eval_coco").main(
        [
            "--checkpoint",
            ckpt,
            "--data-root",
            str(coco),
            "--pred-dir",
            str(tmp_path / "pred"),
            "--out",
            str(tmp_path / "R.json"),
        ]
    )
    same = next(
        t
        for t in trials
        if t["params"] == {"sample.steps": 2, "sample.td": 2.0, "sample.min_pixels": 0}
    )
    assert (same["pq"], same["pq_th"], same["pq_st"]) == (
        result["All"]["pq"],
        result["Things"]["pq"],
        result["Stuff"]["pq"],
    )


def test_a_sweep_whose_trials_all_fail_fails_with_the_cause(mlc, ray_session, tmp_path):
    from pix2seqd.platform.sweep.cli import main
    from pix2seqd.sweeps.loss import SWEEP

    missing = tmp_path / "no_such_coco"
    argv = ["--data-root", str(missing), "--storage-path", str(tmp_path), "--max-concurrent", "2"]
    argv += ["--set", "train.max_failures=0"]  # no retries: the data is missing every time
    cause = "FileNotFoundError: data root '.*no_such_coco' is not a folder"
    with pytest.raises(RuntimeError, match=f"no trial produced a score.*{cause}"):
        main(SWEEP, argv)
    exp = mlc.get_experiment_by_name("pix2seqd").experiment_id
    parent = mlc.search_runs([exp], "tags.sweep = 'loss'", order_by=["attributes.start_time DESC"])[
        0
    ]
    assert parent.info.status == "FAILED"


def test_an_invalid_trial_config_fails_before_any_run(mlc, ray_session, coco, tmp_path):
    from pix2seqd.platform.sweep.cli import main
    from pix2seqd.sweeps.loss_weight import SWEEP

    exp = mlc.get_experiment_by_name("pix2seqd").experiment_id
    before = len(mlc.search_runs([exp], "tags.sweep = 'loss_weight'"))
    # a batch that does not split over the 2 workers
    with pytest.raises(ValueError, match="train.batch_size=3"):
        main(SWEEP, ["--data-root", str(coco), "--set", "train.batch_size=3"])
    assert len(mlc.search_runs([exp], "tags.sweep = 'loss_weight'")) == before


def test_sweep_runs_read_well_in_the_mlflow_ui(mlc, train_sweep):
    """Trials are named after preset, data set and swept value and carry their model; the
    parent carries the best trial's model too, so MLflow's UI lists it with the training
    runs, not the evaluation runs."""
    from pix2seqd.platform import tracking

    parent = mlc.get_run(train_sweep["parent_run_id"])
    runs = [mlc.get_run(t["run_id"]) for t in train_sweep["trials"]]
    assert [r.info.run_name for r in runs] == ["tiny-coco-b_scale0.1", "tiny-coco-b_scale0.3"]
    for r in runs:
        assert r.outputs.model_outputs
        assert r.data.tags[tracking.NOTE_TAG].startswith("Sweep trial `b_scale=")
    exp = parent.info.experiment_id
    best = mlc.search_logged_models([exp], f"source_run_id = '{parent.data.tags['best_run_id']}'")
    assert [m.model_id for m in parent.outputs.model_outputs] == [best[0].model_id]
    assert parent.data.tags[tracking.NOTE_TAG].startswith("Sweep `input_scale`")
    assert (
        mlc.get_experiment(exp).tags[tracking.EXPERIMENT_KIND_TAG] == tracking.MODEL_TRAINING_KIND
    )
