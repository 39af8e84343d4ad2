"""Ray Data pipelines: COCO-panoptic records -> decoded, augmented training batches, and
val records -> eval inputs.

The training stream is a list of (epoch, record) items covering exactly the samples the run
needs, in an order fixed by the seed; each example's augmentation randomness comes from
(seed, epoch, image_id), so the data are a function of the config, not of scheduling.
Files are read inside the map tasks, so the driver ships paths, not pixels.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
from PIL import Image

from pix2seqd.platform.config import Config
from pix2seqd.platform.data.coco_panoptic import (
    CategoryMap, PanopticRecord, decode_label_map, parse_segments,
)
from pix2seqd.platform.data.transforms import eval_transform, relabel_random, train_transform


def record_item(rec: PanopticRecord, epoch: int = 0) -> dict[str, Any]:
    """A record as a flat Ray Data row (segments as JSON text)."""
    segs = [{"id": s.id, "category_id": s.category_id, "iscrowd": int(s.iscrowd)} for s in rec.segments]
    return {"image_id": rec.image_id, "image_path": str(rec.image_path),
            "png_path": str(rec.png_path), "segments": json.dumps(segs), "epoch": epoch,
            "height": rec.height, "width": rec.width}


def train_items(records: Sequence[PanopticRecord], num_samples: int, seed: int,
                start: int = 0) -> list[dict[str, Any]]:
    """Items start..num_samples-1 of the stream: epoch e visits every record once in the
    order of a permutation seeded by (seed, e)."""
    n = len(records)
    if n == 0:
        raise ValueError("the training split has no images")
    items = []
    for pos in range(start, num_samples):
        epoch, k = divmod(pos, n)
        if k == 0 or not items:
            order = np.random.default_rng([seed, epoch]).permutation(n)
        items.append(record_item(records[order[k]], epoch))
    return items


def decode_example(row: dict[str, Any], cmap: CategoryMap, crowd: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one row's JPEG and PNG -> image (H, W, 3) uint8, label (H, W, 2) int32."""
    with Image.open(row["image_path"]) as im:
        image = np.asarray(im.convert("RGB"))
    segments = parse_segments(json.loads(row["segments"]), row["png_path"])
    label = decode_label_map(row["png_path"], segments, cmap, crowd=crowd, name=str(row["png_path"]))
    if label.shape[:2] != image.shape[:2]:
        raise ValueError(f"{row['png_path']}: PNG size {label.shape[:2]} differs from image "
                         f"{row['image_path']} size {image.shape[:2]}")
    return image, label


class TrainDecoder:
    """map_batches function: rows -> {'image', 'hw', 'mask'} (see transforms.Example)."""

    def __init__(self, cfg: Config, cmap: CategoryMap):
        self.cfg, self.cmap = cfg, cmap

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cfg, d = self.cfg, self.cfg.data
        mask_size = d.image_size // cfg.model.mask_stride
        out = {"image": [], "hw": [], "mask": []}
        for row in _rows(batch):
            try:
                image, label = decode_example(row, self.cmap, d.crowd)
            except (ValueError, OSError) as err:
                if d.skip_bad:
                    print(f"[pix2seqd] skipping bad example: {err}")
                    continue
                raise
            rng = np.random.default_rng([cfg.train.seed, int(row["epoch"]), int(row["image_id"])])
            label[..., 1] = relabel_random(label[..., 1], cfg.model.max_instances, rng)
            ex = train_transform(image, label, d.image_size, mask_size, d.scale_jitter,
                                 d.color_jitter, d.hflip, rng)
            out["image"].append(ex.image), out["hw"].append(ex.hw), out["mask"].append(ex.mask)
        return _stack(out, d.image_size, mask_size)


def eval_inputs(row: dict[str, Any], size: int, mask_size: int) -> dict[str, np.ndarray]:
    """One val row -> padded image and sizes for prediction."""
    with Image.open(row["image_path"]) as im:
        image = np.asarray(im.convert("RGB"))
    ex = eval_transform(image, size, mask_size)
    return {"image": ex.image, "hw": ex.hw, "orig_hw": np.array(image.shape[:2], np.int32)}


def build_train_dataset(records, cmap: CategoryMap, cfg: Config, start: int = 0):
    """The Ray Dataset of augmented training examples for the whole run."""
    import ray.data

    total = cfg.train.steps * cfg.train.batch_size
    items = train_items(records, total, cfg.train.seed, start)
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(200, len(items) // 64)))
    return ds.map_batches(TrainDecoder(cfg, cmap), batch_size=32, batch_format="numpy",
                          num_cpus=0.5)


def _rows(batch: dict[str, np.ndarray]):
    keys = list(batch)
    for i in range(len(batch[keys[0]])):
        yield {k: batch[k][i] for k in keys}


def _stack(out, size, mask_size):
    if not out["image"]:
        return {"image": np.zeros((0, size, size, 3), np.uint8), "hw": np.zeros((0, 2), np.int32),
                "mask": np.zeros((0, mask_size, mask_size, 2), np.uint8)}
    return {k: np.stack(v) for k, v in out.items()}
