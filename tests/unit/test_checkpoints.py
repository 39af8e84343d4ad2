"""The checkpoint module: references under the storage path; the MLflow checkpoint tags,
written and read back by one class, and rank 0's record of them; remote checkpoints (an S3
bucket on a local moto server, named through `runs:/<id>`) fetched for inference without
the optimizer and without a temporary folder left behind."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import torch
from helpers_ckpt import image_config, write_checkpoint

from pix2seqd.platform.train import checkpoints
from pix2seqd.platform.train.checkpoints import CheckpointLog, CheckpointTags, checkpoint_ref


@pytest.fixture
def mlc(tmp_path, monkeypatch):
    from pix2seqd.platform import tracking

    monkeypatch.setattr(tracking, "HOME_DIR", tmp_path / "home")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # what `runs:/` resolution reads
    return tracking.client(uri)


def test_checkpoint_references_keep_the_storage_query():
    assert (
        checkpoint_ref("/data/ray", "run", "checkpoint_00000002")
        == "/data/ray/run/checkpoint_00000002"
    )
    assert (
        checkpoint_ref("s3://b/ray?endpoint_override=http://127.0.0.1:9000", "run", "best_00000004")
        == "s3://b/ray/run/best_00000004?endpoint_override=http://127.0.0.1:9000"
    )


def test_log_tags_the_last_k_and_keeps_the_best_apart(mlc, tmp_path):
    from pix2seqd.platform import tracking

    run = tracking.start_run(mlc, {}, {})
    local = tmp_path / "ckpt"
    local.mkdir()
    (local / "checkpoint.pt").write_bytes(b"weights")
    log = CheckpointLog(mlc, run, str(tmp_path / "store"), "r", keep=2)
    for step, score in ((2, 0.1), (4, 0.5), (6, 0.3)):
        log.record(step, f"checkpoint_{step:08d}", str(local), score)
    tags = mlc.get_run(run).data.tags
    assert sorted(k for k in tags if k.startswith("checkpoint/")) == [
        "checkpoint/4",
        "checkpoint/6",
    ]
    assert tags["best_checkpoint"] == f"{tmp_path}/store/r/best_00000004"
    assert tags["best_step"] == "4" and float(tags["best_val_pq"]) == 0.5
    # the earlier best copy was removed once the tag had moved on
    assert os.listdir(tmp_path / "store" / "r") == ["best_00000004"]
    assert (tmp_path / "store/r/best_00000004/checkpoint.pt").read_bytes() == b"weights"
    again = CheckpointLog(mlc, run, str(tmp_path / "store"), "r", keep=2)  # a restarted rank 0
    assert again.steps == [4, 6] and again.best_score == 0.5

    plain = tracking.start_run(mlc, {}, {})
    log = CheckpointLog(mlc, plain, str(tmp_path / "store"), "p", keep=2)
    log.record(8, "checkpoint_00000008", str(local), None)  # no periodic evaluation
    assert (
        mlc.get_run(plain).data.tags["best_checkpoint"] == f"{tmp_path}/store/p/checkpoint_00000008"
    )


def test_init_from_a_checkpoint_with_another_head_is_refused_on_the_driver(tmp_path):
    from pix2seqd.models.pix2seq_d import Pix2SeqD
    from pix2seqd.platform.config import override
    from pix2seqd.platform.presets import tiny
    from pix2seqd.platform.train.init_weights import start_weights

    paper_head = override(tiny(), {"model.decoder.softmax_groups": 2})
    model = Pix2SeqD(paper_head.model, paper_head.diffusion, paper_head.loss)
    checkpoints.save(tmp_path, {"ema": model.state_dict(), "config": {}})
    assert len(start_weights(paper_head, str(tmp_path)).fresh) == 0
    with pytest.raises(
        ValueError,
        match=f"--init-from {tmp_path}: its output head has 512 "
        "channels per mask pixel, this model's 64",
    ):
        start_weights(tiny(), str(tmp_path))


def test_checkpoint_tags_round_trip_through_mlflow(mlc):
    from pix2seqd.platform import tracking

    run = tracking.start_run(mlc, {}, {})
    assert CheckpointTags.of_run(mlc, run) == CheckpointTags()
    refs = {
        2: "s3://b/r/checkpoint_00000002?endpoint_override=h:9000",
        10: "/data/r/checkpoint_00000010",
    }
    tags = {CheckpointTags.step_key(s): ref for s, ref in refs.items()}
    tracking.set_tags(
        mlc, run, {**tags, **CheckpointTags.best_tags("/data/r/best_00000002", 0.25, 2)}
    )
    read = CheckpointTags.of_run(mlc, run)
    assert read == CheckpointTags(refs, "/data/r/best_00000002", 0.25, 2)
    assert list(read.refs) == [2, 10] and read.latest_step == 10
    assert read.chosen() == "/data/r/best_00000002"
    # the names docs/cli.md documents
    assert {"checkpoint/2", "checkpoint/10", "best_checkpoint", "best_val_pq", "best_step"} <= set(
        mlc.get_run(run).data.tags
    )


def test_checkpoint_tags_without_a_score_choose_the_newest():
    plain = CheckpointTags.read({"checkpoint/4": "/a", "checkpoint/12": "/b", "job": "train"})
    assert plain.chosen() == "/b" and plain.best_step is None and plain.best_score == -math.inf
    unscored = CheckpointTags.read(CheckpointTags.best_tags("/c"))
    assert unscored.chosen() == "/c" and unscored.best_step is None and unscored.refs == {}
    assert CheckpointTags.read({}).chosen() == "" and CheckpointTags.read({}).latest_step == 0


def _temp_folders(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith(checkpoints.TEMP_PREFIX))


def test_runs_reference_to_s3_is_fetched_weights_only_and_leaves_no_temp_folder(
    s3_server, mlc, tmp_path, monkeypatch
):
    s3 = s3_server
    from pix2seqd.platform import tracking
    from pix2seqd.platform.evaluation.predict import checkpoint_info, load_for_inference

    cfg = image_config(3)
    local = write_checkpoint(tmp_path / "ckpt", cfg)
    snap = checkpoints.load(local)
    snap["optimizer"] = {"state": {0: {"exp_avg": torch.ones(4)}}, "param_groups": []}
    checkpoints.save(local, snap)
    fs, path = pafs.FileSystem.from_uri(f"{s3}/ray/r/best_00000007")
    fs.create_dir(path, recursive=True)
    pafs.copy_files(str(local), path, destination_filesystem=fs)
    run = tracking.start_run(mlc, {}, {})
    tracking.set_tags(mlc, run, CheckpointTags.best_tags(f"{s3}/ray/r/best_00000007", 0.5, 7))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmp))

    ref = f"runs:/{run}"
    assert checkpoints.checkpoint_location(ref) == f"{s3}/ray/r/best_00000007"
    with checkpoints.fetched(ref) as folder:
        assert folder.parent == tmp and (folder / checkpoints.FILE).is_file()
        assert _temp_folders(tmp) == [folder.name]
    assert _temp_folders(tmp) == []
    with checkpoints.inference_state(ref) as state:
        assert set(state) == set(checkpoints.INFERENCE_KEYS)  # no optimizer, no raw model
        assert torch.equal(
            state["ema"]["decoder.conv_out.weight"], snap["ema"]["decoder.conv_out.weight"]
        )
    assert _temp_folders(tmp) == []
    model, loaded_cfg = load_for_inference(ref)
    assert loaded_cfg == cfg and _temp_folders(tmp) == []
    assert torch.equal(
        model.state_dict()["decoder.conv_out.weight"], snap["ema"]["decoder.conv_out.weight"]
    )
    assert checkpoint_info(ref)[1]["step"] == 7 and _temp_folders(tmp) == []
    with pytest.raises(RuntimeError, match="boom"), checkpoints.fetched(ref):
        raise RuntimeError("boom")
    assert _temp_folders(tmp) == []


def test_a_local_checkpoint_is_used_in_place(tmp_path, monkeypatch):
    local = write_checkpoint(tmp_path / "ckpt", image_config(3))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmp))
    for ref in (str(local), f"file://{local}"):
        with checkpoints.fetched(ref) as folder:
            assert folder == local
    assert checkpoints.load_meta(str(local))["step"] == 7 and list(tmp.iterdir()) == []
    with (
        pytest.raises(FileNotFoundError, match="no checkpoint.pt"),
        checkpoints.fetched(str(tmp_path)),
    ):
        pass
