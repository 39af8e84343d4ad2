"""`runs:/<run id>` references (docs/cli.md, CKPT) against a real MLflow store (SQLite in
tmp_path): the run's best checkpoint, else its newest by step, and a clear error for every
way the lookup can fail (unknown run, a run without checkpoints, an unreachable tracking
server, a tag naming a folder that is gone). The tags are written here by their documented
names, not by the module's own writer."""

from __future__ import annotations

import socket

import mlflow.tracking
import pytest
import torch

from pix2seqd.platform.train import checkpoints


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, str]:
    """(tracking URI, experiment id) of one SQLite store for the module: creating its
    tables takes seconds."""
    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = mlflow.tracking.MlflowClient(uri)
    return uri, client.create_experiment("refs", artifact_location=(tmp / "art").as_uri())


@pytest.fixture
def mlc(store, monkeypatch):
    """A client of the store, which `runs:/` resolution reads through MLFLOW_TRACKING_URI."""
    uri, experiment = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.tracking.MlflowClient(uri)
    client.experiment_id = experiment
    return client


def _run(mlc, tags: dict[str, str]) -> str:
    run_id = mlc.create_run(mlc.experiment_id).info.run_id
    for key, value in tags.items():
        mlc.set_tag(run_id, key, value)
    return run_id


def _checkpoint(folder, step: int) -> str:
    """A minimal checkpoint folder whose weight is its step."""
    checkpoints.save(folder, {"ema": {"w": torch.tensor([float(step)])}, "step": step})
    return str(folder)


def test_without_a_best_tag_the_newest_step_is_chosen(mlc, tmp_path):
    # steps 4, 12, 9: by number the newest is 12 (as strings "9" > "4" > "12")
    refs = {s: _checkpoint(tmp_path / f"checkpoint_{s:08d}", s) for s in (4, 12, 9)}
    run_id = _run(mlc, {f"checkpoint/{s}": ref for s, ref in refs.items()})
    for ref in (f"runs:/{run_id}", f"runs:/{run_id}/"):
        assert checkpoints.checkpoint_location(ref) == refs[12]
    with checkpoints.inference_state(f"runs:/{run_id}") as state:
        assert state["step"] == 12 and state["ema"]["w"].item() == 12.0


def test_the_best_tag_wins_over_newer_checkpoints(mlc, tmp_path):
    best = _checkpoint(tmp_path / "best_00000004", 4)
    newer = _checkpoint(tmp_path / "checkpoint_00000012", 12)
    run_id = _run(
        mlc,
        {"checkpoint/12": newer, "best_checkpoint": best, "best_val_pq": "0.5", "best_step": "4"},
    )
    assert checkpoints.checkpoint_location(f"runs:/{run_id}") == best
    with checkpoints.inference_state(f"runs:/{run_id}") as state:
        assert state["ema"]["w"].item() == 4.0


def test_a_run_without_checkpoints_is_refused_by_its_id(mlc):
    run_id = _run(mlc, {"job": "train"})
    with pytest.raises(ValueError, match=f"MLflow run {run_id} recorded no checkpoint"):
        checkpoints.checkpoint_location(f"runs:/{run_id}")


def test_an_unknown_run_id_is_named(mlc):
    unknown = "0123456789abcdef0123456789abcdef"
    with pytest.raises(ValueError, match=f"runs:/{unknown}: .*Run with id={unknown} not found"):
        checkpoints.checkpoint_location(f"runs:/{unknown}")


def test_an_unreachable_tracking_server_is_named(monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once, no back-off
    with pytest.raises(ValueError, match=f"runs:/abc: .*127.0.0.1:{port}.*Connection refused"):
        checkpoints.checkpoint_location("runs:/abc")


def test_a_tag_naming_a_removed_folder_is_named_with_the_reference(mlc, tmp_path):
    run_id = _run(mlc, {"best_checkpoint": str(tmp_path / "gone")})
    ref = f"runs:/{run_id}"
    assert checkpoints.checkpoint_location(ref) == str(tmp_path / "gone")
    with (
        pytest.raises(FileNotFoundError, match=f"checkpoint '{ref}': no checkpoint.pt in"),
        checkpoints.inference_state(ref),
    ):
        pass
