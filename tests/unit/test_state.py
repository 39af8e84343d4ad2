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
    "data_position",
    "epoch",
    "rng",
    "config",
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
    rngs = [rng_state(), {"torch": torch.random.default_generator.get_state()}]
    snap = snapshot(state, cfg, rngs, num_train=800)
    assert set(snap) == CHECKPOINT_KEYS
    assert snap["data_position"] == 300 * 16 and snap["epoch"] == 4800 // 800
    assert (snap["mlflow_run_id"], snap["tracking_uri"], snap["categories"]) == (
        "abc",
        "sqlite:///m.db",
        [{"id": 1}],
    )
    assert len(snap["rng"]) == 2 and snap["config"]["train.batch_size"] == 16
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    snap["rng"][1] = {"torch": torch.get_rng_state()}
    fresh = build_state(cfg, torch.device("cpu"), 1, _plain)
    restore(fresh, snap, rank=1)  # rank 1 gets its own RNG state back
    assert fresh.step == 300 and fresh.restored and torch.equal(torch.rand(3), expected)
    name, weight = next(iter(state.model.state_dict().items()))
    assert torch.equal(fresh.model.state_dict()[name], weight)


def test_state_wraps_the_loss_module_with_the_ddp_kwargs():
    seen = {}

    def wrap(module, kwargs):
        seen.update(kwargs, module=type(module).__name__)
        return module

    state = build_state(tiny(), torch.device("cpu"), 1, wrap)
    assert seen == {**ddp_kwargs(tiny()), "module": "LossModule"}
    assert state.ddp.model is state.model and state.step == 0 and not state.restored
    assert all(not p.requires_grad for p in state.ema.parameters())
