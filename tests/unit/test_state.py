"""The training state and its checkpoint snapshot (the checkpoint module itself:
tests/unit/test_checkpoints.py)."""

import torch

from pix2seqd.platform.presets import tiny
from pix2seqd.platform.train.state import (
    CheckpointMeta,
    build_state,
    ddp_kwargs,
    restore,
    rng_state,
    snapshot,
)

# the keys of checkpoint.pt that docs/cli.md lists and resume reads
CHECKPOINT_KEYS = {
    "model",
    "ema",
    "optimizer",
    "step",
    "train_seconds",
    "data_position",
    "epoch",
    "rng",
    "config",
    "trained_scope",
    "mlflow_run_id",
    "tracking_uri",
    "categories",
}


def _plain(module, kwargs):
    return module


def test_snapshot_holds_what_exact_resume_needs():
    cfg = tiny()
    state = build_state(cfg, torch.device("cpu"), 1, _plain)
    state.step, state.meta = 300, CheckpointMeta("abc", "sqlite:///m.db", [{"id": 1}])
    state.train_seconds = 754.5
    rngs = [rng_state(), rng_state()]
    snap = snapshot(state, cfg, rngs, num_train=800)
    assert set(snap) == CHECKPOINT_KEYS
    assert snap["data_position"] == 300 * 16 and snap["epoch"] == 4800 // 800
    assert (snap["mlflow_run_id"], snap["tracking_uri"], snap["categories"]) == (
        "abc",
        "sqlite:///m.db",
        [{"id": 1}],
    )
    assert len(snap["rng"]) == 2 and snap["config"]["train.batch_size"] == 16
    fresh = build_state(cfg, torch.device("cpu"), 1, _plain)
    restore(fresh, snap, rank=1)
    assert fresh.step == 300 and fresh.restored
    assert fresh.train_seconds == 754.5  # the time budget goes on from here
    name, weight = next(iter(state.model.state_dict().items()))
    assert torch.equal(fresh.model.state_dict()[name], weight)


def _saved_stream(seed: int) -> tuple[dict, torch.Tensor]:
    """(an RNG state as rng_state() records it, the numbers torch.rand draws from it)."""
    torch.manual_seed(seed)
    saved = rng_state()
    return saved, torch.rand(5)


def test_restore_gives_each_rank_its_own_rng_stream():
    """Each rank continues its own saved stream: not a fresh one, not another rank's, not
    merely the last entry. The global generator is moved to an unrelated state before each
    restore, so a restore that left the RNG alone would draw other numbers (checked)."""
    cfg = tiny()
    state = build_state(cfg, torch.device("cpu"), 1, _plain)
    saved, continuations = zip(*(_saved_stream(seed) for seed in (100, 101, 102)))
    snap = snapshot(state, cfg, list(saved), num_train=800)
    for rank in (0, 1, 2):
        torch.manual_seed(999)
        unrestored = torch.rand(5)
        assert not any(torch.equal(unrestored, c) for c in continuations)
        torch.manual_seed(999)
        restore(state, snap, rank=rank)
        drawn = torch.rand(5)
        assert torch.equal(drawn, continuations[rank]), rank
        assert sum(torch.equal(drawn, c) for c in continuations) == 1
    # rank 4 of a checkpoint written by 3 ranks: rank % 3; an older checkpoint's single state
    # goes to every rank
    restore(state, snap, rank=4)
    assert torch.equal(torch.rand(5), continuations[1])
    restore(state, {**snap, "rng": saved[2]}, rank=1)
    assert torch.equal(torch.rand(5), continuations[2])


def test_state_wraps_the_loss_module_with_the_ddp_kwargs():
    seen = {}

    def wrap(module, kwargs):
        seen.update(kwargs, module=type(module).__name__)
        return module

    state = build_state(tiny(), torch.device("cpu"), 1, wrap)
    assert seen == {**ddp_kwargs(tiny()), "module": "LossModule"}
    assert state.ddp.model is state.model and state.step == 0 and not state.restored
    assert all(not p.requires_grad for p in state.ema.parameters())


def test_a_checkpoint_without_training_seconds_restores_with_none_spent():
    # checkpoints written before the budget spanned restarts: the budget starts afresh
    cfg = tiny()
    state = build_state(cfg, torch.device("cpu"), 1, _plain)
    state.train_seconds = 99.0
    snap = snapshot(state, cfg, [rng_state()], num_train=800)
    del snap["train_seconds"]
    fresh = build_state(cfg, torch.device("cpu"), 1, _plain)
    fresh.train_seconds = 5.0
    restore(fresh, snap, rank=0)
    assert fresh.train_seconds == 0.0
