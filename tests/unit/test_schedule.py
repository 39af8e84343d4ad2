from __future__ import annotations

import pytest
import torch

from pix2seqd.platform.train.schedule import ema_update, lr_factor


def test_lr_factor_warmup_then_linear_decay():
    # official WarmUpAndDecay with warm-up 10, 110 steps, end factor 0.1
    got = [lr_factor(s, 10, 110, 0.1) for s in (0, 5, 10, 60, 110, 200)]
    assert got == pytest.approx([0.0, 0.5, 1.0, 0.55, 0.1, 0.1])
    assert lr_factor(0, 0, 100, 0.1) == 1.0


def test_lr_factor_decays_with_the_time_budget_when_it_is_ahead_of_the_steps():
    # train.decay_to_budget: the larger of the step fraction and the budget's elapsed fraction
    assert lr_factor(60, 10, 110, 0.1, time_frac=0.2) == pytest.approx(0.55)  # steps ahead
    assert lr_factor(60, 10, 110, 0.1, time_frac=0.8) == pytest.approx(0.28)  # time ahead
    assert lr_factor(20, 10, 10_000, 0.1, time_frac=1.0) == pytest.approx(0.1)
    assert lr_factor(20, 10, 10_000, 0.1, time_frac=3.0) == pytest.approx(0.1)  # never below
    assert lr_factor(5, 10, 110, 0.1, time_frac=0.9) == 0.5  # warm-up counts steps only


def test_shared_budget_fraction_outside_a_process_group_is_the_local_clock():
    from pix2seqd.platform.train.loop import _shared_budget_fraction

    assert _shared_budget_fraction(0.25, torch.device("cpu"), world=1) == 0.25


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


def _clock_rank(rank: int, init_file: str, out) -> None:
    import torch.distributed as dist

    from pix2seqd.platform.train.loop import _shared_budget_fraction

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        out[rank] = _shared_budget_fraction(
            0.25 if rank == 0 else 0.75, torch.device("cpu"), world=2
        )
    finally:
        dist.destroy_process_group()


def test_shared_budget_fraction_gives_every_rank_rank_zeros_fraction(tmp_path):
    # DDP ranks must stop at the same step and use the same learning rate
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_clock_rank, args=(str(tmp_path / "init"), out), nprocs=2)
        assert dict(out) == {0: 0.25, 1: 0.25}
