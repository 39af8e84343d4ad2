"""The training stream of a run: what its Ray Dataset of examples is built from.

The driver builds the whole stream (world 1) and Ray Train splits it across the workers;
with `data.exact_order` each worker builds its own part from the restored step instead.
Either way the same `dataset` call makes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pix2seqd.platform.config import Config
from pix2seqd.platform.data.coco_panoptic import CategoryMap
from pix2seqd.platform.data.davis import VideoRecord
from pix2seqd.platform.data.pipeline import build_rank_dataset
from pix2seqd.platform.data.still_clips import StillSource
from pix2seqd.platform.data.video_pipeline import build_video_train_dataset


@dataclass(frozen=True, eq=False)
class ImageStream:
    """Panoptic images: record rows (`coco_panoptic.record_item`) or prepared rows, and the
    categories their labels map to."""

    rows: Sequence[dict[str, Any]]
    cmap: CategoryMap

    def dataset(self, cfg: Config, rank: int, world: int, start: int):
        """Rank `rank`'s examples from global stream position `start` to the run's end."""
        return build_rank_dataset(self.rows, self.cmap, cfg, rank, world, start)


@dataclass(frozen=True, eq=False)
class VideoStream:
    """Clips of the training videos, mixed with still clips when `stills` is given."""

    videos: Sequence[VideoRecord]
    stills: StillSource | None = None

    def dataset(self, cfg: Config, rank: int, world: int, start: int):
        """Rank `rank`'s clips from global stream position `start` to the run's end."""
        return build_video_train_dataset(self.videos, cfg, rank, world, start, self.stills)


TrainStream = ImageStream | VideoStream
