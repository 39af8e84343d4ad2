"""Checkpoint bookkeeping of the training loop: references under the storage path, the
MLflow record of persisted checkpoints and of the best one, snapshot contents."""
import os

import pytest
import torch

from pix2seqd.platform.train.checkpointing import CheckpointLog, checkpoint_ref, restore, snapshot


def test_checkpoint_references_keep_the_storage_query():
    assert checkpoint_ref("/data/ray", "run", "checkpoint_00000002") == "/data/ray/run/checkpoint_00000002"
    assert (checkpoint_ref("s3://b/ray?endpoint_override=http://127.0.0.1:9000", "run", "best_00000004")
            == "s3://b/ray/run/best_00000004?endpoint_override=http://127.0.0.1:9000")


@pytest.fixture
def mlc(tmp_path, monkeypatch):
    from pix2seqd.platform import tracking

    monkeypatch.setattr(tracking, "HOME_DIR", tmp_path / "home")
    return tracking.client(f"sqlite:///{tmp_path}/mlflow.db")


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
    assert sorted(k for k in tags if k.startswith("checkpoint/")) == ["checkpoint/4", "checkpoint/6"]
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
    assert mlc.get_run(plain).data.tags["best_checkpoint"] == f"{tmp_path}/store/p/checkpoint_00000008"


def test_snapshot_holds_what_exact_resume_needs():
    from pix2seqd.platform.presets import tiny
    from pix2seqd.platform.train.step import build_model, make_ema, make_optimizer, rng_state

    cfg = tiny()
    model = build_model(cfg)
    state = {"model": model, "ema": make_ema(model), "step": 300,
             "optimizer": make_optimizer(model, cfg, "cpu"), "meta": {"mlflow_run_id": "abc"}}
    rngs = [rng_state(), {"torch": torch.random.default_generator.get_state()}]
    snap = snapshot(state, cfg, rngs, num_train=800)
    assert snap["data_position"] == 300 * 16 and snap["epoch"] == 4800 // 800
    assert snap["mlflow_run_id"] == "abc" and len(snap["rng"]) == 2
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    snap["rng"][1] = {"torch": torch.get_rng_state()}
    state["step"] = 0
    restore(state, snap, rank=1)  # rank 1 gets its own RNG state back
    assert state["step"] == 300 and torch.equal(torch.rand(3), expected)


def test_init_from_a_checkpoint_with_another_head_is_refused_on_the_driver(tmp_path):
    from pix2seqd.models.pix2seq_d import Pix2SeqD
    from pix2seqd.platform.config import override
    from pix2seqd.platform.presets import tiny
    from pix2seqd.platform.train import checkpoint as ckpt_io
    from pix2seqd.platform.train.fit import init_checkpoint

    paper_head = override(tiny(), {"model.decoder.softmax_groups": 2})
    model = Pix2SeqD(paper_head.model, paper_head.diffusion, paper_head.loss)
    ckpt_io.save(tmp_path, {"ema": model.state_dict(), "config": {}})
    assert init_checkpoint(paper_head, str(tmp_path)) == str(tmp_path)
    with pytest.raises(ValueError, match=f"--init-from {tmp_path}: its output head has 512 "
                                         "channels per mask pixel, this model's 64"):
        init_checkpoint(tiny(), str(tmp_path))
