"""Frame dropout of the video model's conditioning masks, a training-time augmentation
(paper §3.4; docs/model.md, "Video"): a dropped frame looks like a frame before the start
of the video (all-zero ids), so the model learns to segment without its history."""

from __future__ import annotations

import torch


def drop_frames(
    cond_masks: torch.Tensor,
    rate: float,
    generator: torch.Generator | None = None,
    all_rate: float = 0.0,
) -> torch.Tensor:
    """Replace each conditioning frame of each example by a missing (all-zero) one with
    probability `rate`, and all frames of an example with probability `all_rate` (the two
    draws independent). cond_masks: int (B, F, 2, Hm, Wm) -> same."""
    if rate <= 0 and all_rate <= 0:
        return cond_masks
    b, f = cond_masks.shape[:2]
    device = generator.device if generator else None
    # the extra column only when used: runs without it draw the same numbers as before
    u = torch.rand(b, f + (all_rate > 0), generator=generator, device=device).to(cond_masks.device)
    keep = (u[:, :f] >= rate) & (u[:, f:] >= all_rate).all(dim=1, keepdim=True)
    return cond_masks * keep.view(b, f, 1, 1, 1)
