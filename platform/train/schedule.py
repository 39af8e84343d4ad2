"""Learning-rate schedule and EMA (docs/model.md, "Optimisation")."""

from __future__ import annotations

import torch


def lr_factor(
    step: int, warmup: int, total: int, end_factor: float, time_frac: float = 0.0
) -> float:
    """Official `WarmUpAndDecay`: linear warm-up from 0, then linear decay to end_factor.

    Returns the multiplier of the peak learning rate for optimizer step `step` (0-based).
    `time_frac` (`train.decay_to_budget`): the elapsed fraction of the time budget; after
    the warm-up the decay follows the larger of it and the fraction of steps done.
    """
    if warmup > 0 and step < warmup:
        return step / warmup
    span = max(1, total - warmup)
    frac = min(1.0, max((step - warmup) / span, time_frac))
    return 1.0 - (1.0 - end_factor) * frac


@torch.no_grad()
def ema_update(ema: torch.nn.Module, online: torch.nn.Module, decay: float) -> None:
    """v_ema <- d·v_ema + (1-d)·v for every parameter and floating buffer (BN statistics
    too, as the official trainer averages all variables); integer buffers are copied.
    One foreach call per kind instead of a Python loop over ~300 tensors (5-10 % faster on
    one CPU thread for the tiny model: docs/results.md)."""
    ema_params = dict(ema.named_parameters())
    pairs = [(ema_params[name], p.detach()) for name, p in online.named_parameters()]
    ema_bufs = dict(ema.named_buffers())
    bufs = [(ema_bufs[name], b) for name, b in online.named_buffers()]
    pairs += [(e, b) for e, b in bufs if b.is_floating_point()]
    if pairs:
        torch._foreach_lerp_([e for e, _ in pairs], [v for _, v in pairs], 1.0 - decay)
    ints = [(e, b) for e, b in bufs if not b.is_floating_point()]
    if ints:
        torch._foreach_copy_([e for e, _ in ints], [b for _, b in ints])
