"""Streaming video inference and the training-time frame dropout (spec §5.2-5.3).

Frames are segmented one after another; frame s is conditioned on the model's own
predictions for frames s−2 and s−1 (missing before the start: all-zero maps, i.e. bits −b).
Ids are tracked implicitly: the decoder copies ids present in the conditioning masks.
The paper samples the first frame with 32 steps and later ones with 8, τ_d = 1.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # pix2seq_d imports drop_frames from here
    from .pix2seq_d import Pix2SeqD


def drop_frames(cond_masks: torch.Tensor, rate: float, generator: torch.Generator | None = None
                ) -> torch.Tensor:
    """Replace each conditioning frame of each example by a missing (all-zero) one with
    probability `rate`. cond_masks: int (B, F, 2, Hm, Wm) -> same."""
    if rate <= 0:
        return cond_masks
    b, f = cond_masks.shape[:2]
    u = torch.rand(b, f, generator=generator, device=generator.device if generator else None)
    keep = (u.to(cond_masks.device) >= rate).view(b, f, 1, 1, 1)
    return cond_masks * keep


@torch.no_grad()
def sample_video(model: "Pix2SeqD", frames: torch.Tensor, first_steps: int, later_steps: int,
                 td: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """frames: float (B, T, 3, H, W) in [0, 1] -> int64 (B, T, 2, Hm, Wm).

    One encoder call and `first_steps` (frame 0) or `later_steps` decoder calls per frame.
    """
    n_cond = model.cfg.decoder.cond_frames
    if n_cond < 1:
        raise ValueError("sample_video needs a video model (model.decoder.cond_frames >= 1)")
    b, t = frames.shape[:2]
    s = model.cfg.mask_stride
    h, w = frames.shape[-2] // s, frames.shape[-1] // s
    history = [torch.zeros(b, 2, h, w, dtype=torch.long, device=frames.device)] * n_cond
    out = []
    for i in range(t):
        cond = torch.stack(history[-n_cond:], dim=1)
        steps = first_steps if i == 0 else later_steps
        pred = model.sample(frames[:, i], steps, td, cond, generator)
        out.append(pred)
        history.append(pred)
    return torch.stack(out, dim=1)
