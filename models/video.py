"""Streaming video inference (paper §3.4; docs/model.md, "Video").

Frames are segmented one after another; frame s is conditioned on the model's own
predictions for frames s−2 and s−1 (missing before the start: all-zero maps, i.e. bits −b).
Ids are tracked implicitly: the decoder copies ids present in the conditioning masks.
The paper samples the first frame with 32 steps and later ones with 8, τ_d = 1; with an
adaptive rule (`StableIds`) a later frame stops as soon as its decoded ids stop changing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from .bits import analog_bits_to_int
from .pix2seq_d import Pix2SeqD


@dataclass
class StableIds:
    """The adaptive rule of later frames (`sample.adaptive`; docs/model.md, "Video"): stop
    sampling a frame after the first step k >= 2 at which, for every video of the batch,
    the (class, id) map decoded from x̂_0 changed on at most `max_change` of the mask pixels
    since step k − 1 (0: on none). The step count never exceeds the sampler's `steps`.

    It counts what it saved: `frames` later frames sampled, `steps` steps they took."""

    num_classes: int
    max_instances: int
    max_change: float = 0.0
    frames: int = 0
    steps: int = 0
    _compared: int = 0  # comparisons in the current frame: one after each step but the first
    _stopped_after: int = 0  # steps of the current frame when the rule stopped it, else 0
    # the last estimate compared and its decoded map: the sampler hands it back as the next
    # step's `previous`, so each estimate is decoded once
    _last: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, previous: torch.Tensor, current: torch.Tensor) -> bool:
        self._compared += 1
        if self._last is not None and self._last[0] is previous:
            old = self._last[1]
        else:
            old = analog_bits_to_int(previous, self.num_classes, self.max_instances)
        new = analog_bits_to_int(current, self.num_classes, self.max_instances)
        self._last = (current, new)
        changed = (old != new).any(dim=1).float().mean(dim=(1, 2))
        stop = bool((changed <= self.max_change).all())
        if stop:
            self._stopped_after = self._compared + 1
        return stop

    def sampled(self, steps: int, videos: int) -> None:
        """Record a frame of `videos` videos sampled with `steps` steps unless the rule
        stopped it earlier."""
        self.frames += videos
        self.steps += videos * (self._stopped_after or steps)
        self._compared = self._stopped_after = 0
        self._last = None

    @property
    def mean_steps(self) -> float:
        return self.steps / self.frames if self.frames else 0.0


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
    adaptive: StableIds | None = None,
) -> Iterator[tuple[int, list[int], torch.Tensor]]:
    """Segment B videos of possibly different lengths together, one frame index at a time.

    `read_frames(t, active)` returns float (A, 3, H, W) in [0, 1]: frame t of the videos
    `active` (the indices b with lengths[b] > t, ascending). Yields (t, active, int64
    (A, 2, Hm, Wm)). Frames are read as they are needed, so a long video never has to be in
    memory at once; videos that ended drop out of the batch. With `adaptive`, later frames
    take up to `later_steps` steps, stopping by its rule (it counts the steps taken).
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
        stop = adaptive if t > 0 else None
        if model.sampler_compiled and len(active) < len(lengths):
            pred = _sample_all_rows(model, images, rows, history, steps, td, generator, stop)
        else:
            pred = model.sample(images, steps, td, history[rows], generator, stop=stop)
        if stop is not None:
            stop.sampled(steps, len(active))
        history[rows] = torch.cat([history[rows, 1:], pred[:, None]], dim=1)
        yield t, active, pred


def _sample_all_rows(
    model: Pix2SeqD,
    images: torch.Tensor,
    rows: torch.Tensor,
    history: torch.Tensor,
    steps: int,
    td: float,
    generator: torch.Generator | None,
    stop: StableIds | None,
) -> torch.Tensor:
    """`model.sample` of the `rows` videos' frames with the batch kept at every video's row:
    a compiled sampler has one graph (and on CUDA one CUDA graph) per batch size, so
    videos that ended take part as blank frames whose predictions are dropped."""
    full = images.new_zeros(history.shape[0], *images.shape[1:])
    full[rows] = images
    return model.sample(full, steps, td, history, generator, stop=stop)[rows]
