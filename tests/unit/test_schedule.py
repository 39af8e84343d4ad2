from __future__ import annotations

import pytest
import torch

from pix2seqd.platform.train.schedule import ema_update, lr_factor


def test_lr_factor_warmup_then_linear_decay():
    # official WarmUpAndDecay with warm-up 10, 110 steps, end factor 0.1
    got = [lr_factor(s, 10, 110, 0.1) for s in (0, 5, 10, 60, 110, 200)]
    assert got == pytest.approx([0.0, 0.5, 1.0, 0.55, 0.1, 0.1])
    assert lr_factor(0, 0, 100, 0.1) == 1.0


def test_ema_update_params_and_buffers():
    online, ema = torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        online.weight.fill_(1.0), ema.weight.fill_(0.0)
        online.running_mean.fill_(2.0), ema.running_mean.fill_(0.0)
        online.num_batches_tracked.fill_(7)
    ema_update(ema, online, 0.9)
    assert torch.allclose(ema.weight, torch.full((2,), 0.1))
    assert torch.allclose(ema.running_mean, torch.full((2,), 0.2))
    assert int(ema.num_batches_tracked) == 7
