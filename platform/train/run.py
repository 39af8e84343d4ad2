"""`train_coco`: a training run on a COCO or Cityscapes panoptic layout (or its prepared
shards), with the driver of `driver.py` and the image task of `image_task.py`."""

from __future__ import annotations

from typing import Any

from pix2seqd.platform.config import Config
from pix2seqd.platform.train.driver import train, validate_common
from pix2seqd.platform.train.image_task import ImageTask, validate_training_config
from pix2seqd.platform.train.options import RunOptions

__all__ = ["RunOptions", "train_coco", "validate_common", "validate_training_config"]


def train_coco(cfg: Config, opts: RunOptions) -> dict[str, Any]:
    """Train on panoptic images, evaluate the chosen checkpoint's EMA weights (PQ), log
    everything; the summary's metrics are `pq`, `pq_th`, `pq_st`."""
    return train(ImageTask, cfg, opts)
