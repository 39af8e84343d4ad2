"""Activation checkpointing ("remat"): recompute a block in the backward pass instead of
keeping its activations, for large per-GPU batches (`model.grad_checkpoint`).

Only blocks without running statistics are recomputed (decoder ResBlocks, the decoder's and
the encoder's transformer layers): a BatchNorm run twice would update its statistics twice.
Dropout and drop-path draw the same masks again (the RNG state is saved and restored).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint


def run_block(block: Callable[..., torch.Tensor], *args: Any, remat: bool) -> torch.Tensor:
    """block(*args), recomputed in the backward pass when `remat` and gradients are on."""
    if remat and torch.is_grad_enabled():
        return checkpoint(block, *args, use_reentrant=False)
    return block(*args)
