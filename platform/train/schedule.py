"""Learning-rate schedule and EMA (spec §6.2, gotcha 10)."""
from __future__ import annotations

import torch


def lr_factor(step: int, warmup: int, total: int, end_factor: float) -> float:
    """Official `WarmUpAndDecay`: linear warm-up from 0, then linear decay to end_factor.

    Returns the multiplier of the peak learning rate for optimizer step `step` (0-based).
    """
    if warmup > 0 and step < warmup:
        return step / warmup
    span = max(1, total - warmup)
    frac = min(1.0, (step - warmup) / span)
    return 1.0 - (1.0 - end_factor) * frac


@torch.no_grad()
def ema_update(ema: torch.nn.Module, online: torch.nn.Module, decay: float) -> None:
    """v_ema <- d·v_ema + (1-d)·v for every parameter and floating buffer (BN statistics
    too, as the official trainer averages all variables); integer buffers are copied."""
    ema_params = dict(ema.named_parameters())
    for name, p in online.named_parameters():
        ema_params[name].lerp_(p.detach(), 1.0 - decay)
    ema_bufs = dict(ema.named_buffers())
    for name, b in online.named_buffers():
        if b.is_floating_point():
            ema_bufs[name].lerp_(b, 1.0 - decay)
        else:
            ema_bufs[name].copy_(b)
