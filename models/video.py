"""Streaming video inference (paper §3.4; docs/model.md, "Video").

Frames are segmented one after another; frame s is conditioned on the model's own
predictions for frames s−2 and s−1 (missing before the start: all-zero maps, i.e. bits −b).
Ids are tracked implicitly: the decoder copies ids present in the conditioning masks.
The paper samples the first frame with 32 steps and later ones with 8, τ_d = 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from .pix2seq_d import Pix2SeqD


@torch.no_grad()
def sample_video(
    model: Pix2SeqD,
    frames: torch.Tensor,
    first_steps: int,
    later_steps: int,
    td: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """frames: float (B, T, 3, H, W) in [0, 1] -> int64 (B, T, 2, Hm, Wm).

    One encoder call and `first_steps` (frame 0) or `later_steps` decoder calls per frame.
    """
    t = frames.shape[1]
    out = [
        pred
        for _, _, pred in stream_videos(
            model,
            lambda i, active: frames[active, i],
            [t] * frames.shape[0],
            first_steps,
            later_steps,
            td,
            generator,
        )
    ]
    return torch.stack(out, dim=1)


@torch.no_grad()
def stream_videos(
    model: Pix2SeqD,
    read_frames: Callable[[int, list[int]], torch.Tensor],
    lengths: Sequence[int],
    first_steps: int,
    later_steps: int,
    td: float,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[int, list[int], torch.Tensor]]:
    """Segment B videos of possibly different lengths together, one frame index at a time.

    `read_frames(t, active)` returns float (A, 3, H, W) in [0, 1]: frame t of the videos
    `active` (the indices b with lengths[b] > t, ascending). Yields (t, active, int64
    (A, 2, Hm, Wm)). Frames are read as they are needed, so a long video never has to be in
    memory at once; videos that ended drop out of the batch.
    """
    n_cond = model.cfg.decoder.cond_frames
    if n_cond < 1:
        raise ValueError("sample_video needs a video model (model.decoder.cond_frames >= 1)")
    history = None  # (B, n_cond, 2, Hm, Wm): the last n_cond predictions, oldest first
    for t in range(max(lengths, default=0)):
        active = [b for b, n in enumerate(lengths) if n > t]
        images = read_frames(t, active)
        if history is None:
            s = model.cfg.mask_stride
            history = torch.zeros(
                len(lengths),
                n_cond,
                2,
                images.shape[-2] // s,
                images.shape[-1] // s,
                dtype=torch.long,
                device=images.device,
            )
        rows = torch.tensor(active, device=history.device)
        steps = first_steps if t == 0 else later_steps
        pred = model.sample(images, steps, td, history[rows], generator)
        history[rows] = torch.cat([history[rows, 1:], pred[:, None]], dim=1)
        yield t, active, pred
