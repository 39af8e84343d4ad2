"""`train_davis`: a video training run on a DAVIS layout (or its prepared shards), with the
driver of `driver.py` and the video task of `video_task.py`."""

from __future__ import annotations

from typing import Any

from pix2seqd.platform.config import Config
from pix2seqd.platform.train.driver import train
from pix2seqd.platform.train.options import RunOptions
from pix2seqd.platform.train.video_task import VideoTask, validate_video_config

__all__ = ["train_davis", "validate_video_config"]


def train_davis(cfg: Config, opts: RunOptions) -> dict[str, Any]:
    """Train the streaming video model (usually from an image checkpoint), score J&F of the
    val sequences, log everything; the summary's metrics are `J&F-Mean`, `J-Mean`, `F-Mean`."""
    return train(VideoTask, cfg, opts)
