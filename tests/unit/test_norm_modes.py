"""model.encoder.norm: sync converts the encoder's BatchNorm to SyncBatchNorm for multi-GPU
DDP; batch and frozen keep plain BatchNorm (frozen stays fixed: test_model.py)."""

import pytest
import torch

from pix2seqd.platform.config import override
from pix2seqd.platform.presets import tiny
from pix2seqd.platform.train.step import build_model, sync_batch_norm


def count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize(
    "norm,world,device,synced",
    [
        ("sync", 2, "cuda", True),
        ("sync", 1, "cuda", False),  # one worker: nothing to synchronise
        ("sync", 2, "cpu", False),  # gloo: torch has no CPU SyncBatchNorm
        ("batch", 2, "cuda", False),
        ("frozen", 2, "cuda", False),
    ],
)
def test_sync_batch_norm(norm, world, device, synced):
    cfg = override(tiny(), {"model.encoder.norm": norm})
    model = build_model(cfg)
    n_bn = count(model, torch.nn.BatchNorm2d)
    assert n_bn > 0
    out = sync_batch_norm(model, cfg, world, torch.device(device))  # conversion needs no GPU
    assert count(out, torch.nn.SyncBatchNorm) == (n_bn if synced else 0)
