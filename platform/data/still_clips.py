"""Still clips: video training clips made from still panoptic images (`data.stills`).

A video set with few sequences shows the model few scenes: on the generated DAVIS set (30
training sequences) the video model segments the training sequences' first frames far
better than the val ones. Tracking models are commonly also trained on still images with
simulated motion (CenterTrack); a still clip is that:

- the still image is the target frame, its thing segments the objects (crowd segments and
  stuff are background, as DAVIS has no classes);
- the mask of frame t−k is the target mask moved by k·(dy, dx) mask pixels, one (dy, dx)
  per clip, uniform integers in [−still_shift, still_shift] (straight-line motion, as the
  generated sequences have); what moves past the border is cut off.

Frame dropout and the id order then apply to still clips as to video clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from pix2seqd.platform.config import Config, CrowdMode, DatasetKind
from pix2seqd.platform.data.coco_panoptic import CategoryMap, record_item
from pix2seqd.platform.data.default_data import resolve_data_root
from pix2seqd.platform.data.frame_cache import ByteLRU, cached
from pix2seqd.platform.data.pipeline import (
    decode_example,
    decode_reach,
    image_seed,
    record_files,
)
from pix2seqd.platform.data.sources import load_panoptic_split
from pix2seqd.platform.data.transforms import (
    clip_transform,
    reduce_to_reach,
    symmetry_augment,
    void_smallest,
)
from pix2seqd.platform.data.validate import validate_records

STILL_STREAM = 0x57111  # separates the still-or-video draw from the examples' own streams


@dataclass(frozen=True)
class StillSource:
    """The still images of a video run: record rows (`coco_panoptic.record_item`) and their
    categories."""

    rows: Sequence[dict[str, Any]]
    cmap: CategoryMap


def is_still(positions: np.ndarray, seed: int, fraction: float) -> np.ndarray:
    """Which stream positions are still clips: bool (N,), each True with probability
    `fraction`, a function of (seed, position) alone (so of the config, not of who decodes)."""
    if fraction <= 0:
        return np.zeros(len(positions), bool)
    return np.array(
        [
            np.random.default_rng([seed, STILL_STREAM, int(p)]).random() < fraction
            for p in positions
        ],
        bool,
    )


def object_ids(label: np.ndarray, isthing: Sequence[bool], max_instances: int) -> np.ndarray:
    """label (H, W, 2) int [class, compact id] -> (H, W) int32: the thing segments as ids
    1..N in label-id order, 0 elsewhere. Beyond K−1 things the smallest become 0
    (`transforms.void_smallest`, as for images)."""
    thing = np.asarray(isthing, bool)[label[..., 0]] & (label[..., 1] > 0)
    present, inverse = np.unique(np.where(thing, label[..., 1], 0), return_inverse=True)
    ids = inverse.reshape(label.shape[:2]).astype(np.int32)
    if present[0] != 0:  # every pixel a thing: no 0 took the first slot
        ids += 1
    capped, _ = void_smallest(np.stack([np.zeros_like(ids), ids], axis=-1), max_instances)
    return capped[..., 1]


def shift_ids(ids: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """ids (H, W) moved by (dy, dx) pixels (down, right positive); vacated pixels are 0."""
    h, w = ids.shape
    out = np.zeros_like(ids)
    ys, yd = slice(max(0, -dy), min(h, h - dy)), slice(max(0, dy), min(h, h + dy))
    xs, xd = slice(max(0, -dx), min(w, w - dx)), slice(max(0, dx), min(w, w + dx))
    out[yd, xd] = ids[ys, xs]
    return out


def moving_clip(
    target: np.ndarray, clip_len: int, max_shift: int, rng: np.random.Generator
) -> np.ndarray:
    """target (Hm, Wm) ids -> (clip_len, Hm, Wm), oldest first, the last frame `target`:
    frame t−k is `target` moved by k·(dy, dx)."""
    dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
    frames = [shift_ids(target, k * dy, k * dx) for k in range(clip_len - 1, 0, -1)]
    return np.stack(frames + [target])


def still_clip(
    row: dict[str, Any],
    epoch: int,
    source: StillSource,
    cfg: Config,
    mask_hw: tuple[int, int],
    clip_len: int,
    cache: ByteLRU | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode and augment a still image as a clip seen in `epoch`: image (H, W, 3) uint8 on
    the canvas, valid hw (2,) int32, ids (clip_len, Hm, Wm) uint8 before the id order.
    The decoded image and object ids go through `cache` when one is given (`frame_cache`)."""

    d = cfg.data
    key = ("still", record_files(row), cfg.model.max_instances, *decode_reach(cfg))
    image, ids = cached(cache, key, lambda: _decode_still(row, source, cfg))
    rng = np.random.default_rng([cfg.train.seed, epoch, image_seed(row["image_id"]), STILL_STREAM])
    image, ids = symmetry_augment(image, ids, d.vflip, d.rgb_symmetry, rng)
    image, hw, target = clip_transform(
        image, ids, d.image_hw, mask_hw, d.scale_jitter, d.color_jitter, d.hflip, rng
    )
    return image, hw, moving_clip(target, clip_len, d.still_shift, rng)


def _decode_still(
    row: dict[str, Any], source: StillSource, cfg: Config
) -> tuple[np.ndarray, np.ndarray]:
    """A still row -> image (h, w, 3) uint8, object ids (h, w) uint8, shrunk to the largest
    size the clip transform can use (`reduce_to_reach`, bicubic as that transform)."""
    image, label = decode_example(row, source.cmap, CrowdMode.VOID.value)
    ids = object_ids(label, source.cmap.isthing, cfg.model.max_instances).astype(np.uint8)
    return reduce_to_reach(image, ids, *decode_reach(cfg), Image.BICUBIC)


def load_stills(cfg: Config) -> StillSource | None:
    """The still images of `data.stills` (None when `data.still_fraction` is 0), validated
    like training images (needs Ray): bad records stop the run before its first step
    unless `data.skip_bad`."""

    d = cfg.data
    if d.still_fraction <= 0:
        return None
    if not d.stills:
        raise ValueError(
            f"data.still_fraction={d.still_fraction} needs data.stills "
            "(a COCO-panoptic root, or 'generated')"
        )
    root = resolve_data_root("" if d.stills == "generated" else d.stills)
    records, cmap = load_panoptic_split(DatasetKind.COCO, root, d.still_split)
    records, _ = validate_records(
        records, cmap, CrowdMode.VOID.value, cfg.model.max_instances, d.still_split, d.skip_bad
    )
    if not records:
        raise ValueError(f"{root}: split {d.still_split} has no usable still image (data.stills)")
    return StillSource([record_item(r) for r in records], cmap)
