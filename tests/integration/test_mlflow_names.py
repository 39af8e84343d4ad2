"""What the MLflow UI shows, read back from a real MLflow server: the experiment's kind
(`mlflow.experimentKind`), the experiment chosen by --experiment / MLFLOW_EXPERIMENT_NAME,
training runs' names and descriptions, and a sweep parent's tags and model output."""

from __future__ import annotations

import sys

import pytest
from helpers_jobs import ROOT, load_job

from pix2seqd.platform import tracking
from pix2seqd.platform.cli import job_parser, parse_job_args
from pix2seqd.platform.sweep import run as sweep_run
from pix2seqd.platform.sweep.spec import Axis, Sweep, SweepKind
from pix2seqd.platform.train.fit import open_run


@pytest.fixture
def mlc(mlflow_server, monkeypatch):
    import mlflow.tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    # set, then deleted: monkeypatch then removes what --experiment writes during a test
    monkeypatch.setenv(tracking.EXPERIMENT_ENV, "")
    monkeypatch.delenv(tracking.EXPERIMENT_ENV)
    return mlflow.tracking.MlflowClient(mlflow_server)


def _experiment_of(mlc, run_id: str):
    return mlc.get_experiment(mlc.get_run(run_id).info.experiment_id)


def test_experiments_are_tagged_as_model_training(mlc):
    run = tracking.start_run(mlc, {}, {"job": "eval_coco", "dataset": "coco"})
    exp = _experiment_of(mlc, run)
    assert exp.name == "pix2seqd"
    assert exp.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    note = mlc.get_run(run).data.tags[tracking.NOTE_TAG]
    assert note.startswith("eval_coco: dataset `coco`.") and "Command: `" in note


def test_an_experiment_made_without_a_kind_gets_it_and_a_chosen_kind_stays(mlc):
    bare = mlc.create_experiment("made-elsewhere")
    chosen = mlc.create_experiment(
        "chosen", tags={tracking.EXPERIMENT_KIND_TAG: "genai_development"}
    )
    assert tracking.experiment_id(mlc, "made-elsewhere") == bare
    tracking.experiment_id(mlc, "chosen")
    assert mlc.get_experiment(bare).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert mlc.get_experiment(chosen).tags[tracking.EXPERIMENT_KIND_TAG] == "genai_development"


def test_the_flag_wins_over_the_environment_which_wins_over_the_default(mlc, monkeypatch):
    monkeypatch.setenv(tracking.EXPERIMENT_ENV, "from-env")
    assert _experiment_of(mlc, tracking.start_run(mlc, {}, {})).name == "from-env"
    parse_job_args(job_parser("a job"), ["--experiment", "from-flag"])
    assert _experiment_of(mlc, tracking.start_run(mlc, {}, {})).name == "from-flag"
    monkeypatch.delenv(tracking.EXPERIMENT_ENV)
    assert _experiment_of(mlc, tracking.start_run(mlc, {}, {})).name == "pix2seqd"


def test_a_training_run_is_named_after_preset_data_set_and_overrides(mlc, tmp_path, monkeypatch):
    job = load_job("train_coco")
    parser = job.build_parser()
    argv = [
        "--experiment",
        "named",
        "--set",
        "optim.lr=5e-4",
        "--set",
        "loss.kind=l2",
        "--storage-path",
        str(tmp_path),
    ]
    monkeypatch.setattr(sys, "argv", [str(ROOT / "jobs" / "train_coco.py"), *argv])
    monkeypatch.chdir(ROOT)
    args = parse_job_args(parser, argv)
    cfg, opts = job.training_setup(parser, args, args.data_root)
    run = mlc.get_run(open_run(mlc, cfg, opts, {"preset": opts.preset}))
    assert run.info.run_name == "tiny-coco-lr5e-4-kind=l2"
    note = run.data.tags[tracking.NOTE_TAG]
    assert "Training: preset `tiny`, data set `coco`, `optim.lr=0.0005`, `loss.kind=l2`." in note
    assert note.endswith(
        "Command: `python jobs/train_coco.py --experiment named --set "
        f"optim.lr=5e-4 --set loss.kind=l2 --storage-path {tmp_path}`"
    )
    assert _experiment_of(mlc, run.info.run_id).name == "named"
    args = parse_job_args(parser, ["--run-name", "mine"])
    assert job.training_setup(parser, args, "")[1].run_name == "mine"


def test_a_sweep_parent_is_described_and_shows_the_best_model(mlc):
    from pix2seqd.platform.config import Config

    sweep = Sweep(
        name="lr",
        kind=SweepKind.TRAIN,
        paper="Table 9",
        metric="val/pq",
        axes=(Axis("optim.lr", (1e-4, 5e-4)),),
    )
    parent = sweep_run._open_parent(mlc, sweep, Config(), {"preset": "tiny"}, "")
    trial = tracking.start_run(
        mlc, {"optim.lr": 5e-4}, {}, run_name="tiny-coco-lr5e-4", parent_run_id=parent
    )
    exp = mlc.get_run(parent).info.experiment_id
    model = mlc.create_logged_model(exp, source_run_id=trial, name="model")
    sweep_run._link_best_model(mlc, parent, {"run_id": trial})
    got = mlc.get_run(parent)
    assert got.info.run_name == "sweep-lr"
    tags = got.data.tags
    assert tags["job"] == "sweep" and tags["sweep"] == "lr" and tags["preset"] == "tiny"
    assert tags["sweep_kind"] == "train" and tags["sweep_metric"] == "val/pq"
    assert tags[tracking.NOTE_TAG].startswith(
        "Sweep `lr` (Table 9), train: `optim.lr` in [0.0001, 0.0005]"
    )
    assert [m.model_id for m in got.outputs.model_outputs] == [model.model_id]
    assert mlc.get_experiment(exp).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
