"""Checkpoints of untrained tiny models, in the training loop's format, for the
evaluation and prediction tests (no training needed to exercise those paths)."""

from __future__ import annotations

from pathlib import Path

import torch

from pix2seqd.platform.config import Config, override, storable
from pix2seqd.platform.presets import tiny
from pix2seqd.platform.train import checkpoints
from pix2seqd.platform.train.step import build_model


def tiny_at_64() -> Config:
    """The tiny preset on the canvas its data.image_size=auto chooses for the generated set
    (64), for tests that use it without a training job."""
    return override(tiny(), {"data.image_size": 64})


def image_config(num_classes: int) -> Config:
    return override(
        tiny(),
        {
            "model.num_classes": num_classes,
            "sample.steps": 2,
            "data.image_size": 32,
            "eval.batch_size": 4,
            "eval.overlays": 2,
        },
    )


def video_config() -> Config:
    """The davis preset's model shape at tiny sizes: class channel only void, K = 8."""
    cfg = override(
        tiny(),
        {
            "model.num_classes": 1,
            "model.decoder.cond_frames": 2,
            "data.dataset": "davis",
            "data.image_size": 32,
            "data.image_width": 64,
            "sample.steps": 2,
            "sample.later_steps": 1,
            "sample.td": 1.0,
            "sample.min_pixels": 0,
            "eval.batch_size": 2,
        },
    )
    return cfg


def write_checkpoint(
    directory: Path, cfg: Config, categories=(), run_id: str = "", seed: int = 0
) -> Path:
    """A checkpoint folder with random weights (the output head made non-trivial, so the
    sampler's predictions vary) and the metadata the training loop records."""
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():
        model.decoder.conv_out.weight.normal_()
    state = model.state_dict()
    snap = {
        "model": state,
        "ema": state,
        "step": 7,
        "config": storable(cfg),
        "mlflow_run_id": run_id,
        "tracking_uri": "",
        "categories": [dict(c) for c in categories],
        "trained_scope": [""],
    }
    checkpoints.save(directory, snap)
    return directory
