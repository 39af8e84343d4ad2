"""How far the training stream decodes ahead of the trainers (`data.ahead_steps`).

Ray Data runs a stream as fast as its CPUs allow until its object-store budget is full,
by default a share of the object store (1.7 GiB on a 2-core machine with 3.4 GiB). The
stream is sized for `train.steps`, so a run stopped by its time budget, or trainers slower
than the decoding, leave the rest of that budget decoded for nothing, on the cores the
trainers need (docs/results.md, "How far the stream reads ahead"). The budget given here
is about `ahead_steps` optimizer steps of examples, and never less than four of the
stream's map-task outputs, so that the stream keeps moving.
"""

from __future__ import annotations

from ray.data import ExecutionOptions
from ray.train import DataConfig

from pix2seqd.platform.config import Config
from pix2seqd.platform.data.pipeline import mask_shape, rows_per_task


def example_bytes(cfg: Config) -> int:
    """Bytes of one training example as the stream holds it: the canvas image (uint8),
    its masks (two uint8 channels; a video model's history masks too) and the valid size."""
    (h, w), (hm, wm) = cfg.data.image_hw, mask_shape(cfg)
    masks = 1 + cfg.model.decoder.cond_frames
    return h * w * 3 + masks * hm * wm * 2 + 8


def stream_budget_bytes(cfg: Config) -> float | None:
    """The stream's object-store budget in bytes, or None for Ray Data's own
    (`data.ahead_steps` 0)."""
    steps = cfg.data.ahead_steps
    if steps < 0:
        raise ValueError(f"data.ahead_steps={steps} must be >= 0 (0: Ray Data's own budget)")
    if steps == 0:
        return None
    one = example_bytes(cfg)
    return float(
        max(steps * cfg.train.batch_size * one, 4 * rows_per_task(cfg.data.image_hw) * one)
    )


def ingest_options(cfg: Config) -> ExecutionOptions:
    """Ray Train's ingest options for the driver's stream (those it would use itself,
    from this process's DataContext) with the stream's object-store budget."""
    options = DataConfig.default_ingest_options()
    budget = stream_budget_bytes(cfg)
    if budget is not None:
        options.resource_limits = options.resource_limits.copy(object_store_memory=budget)
    return options
