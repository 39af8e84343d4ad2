"""A COCO-panoptic set of COCO train's size whose files are links to a small pool.

`benchmark.py scale` measures what grows with the number of records (parsing the
annotation file, the record objects, validation, preparation), not with the pixels, so
the 118,287 images and id PNGs of the set are symbolic links to `pool` generated ones
(default 200) and only the annotation file is full-size. Every record carries its pool
image's own `segments_info`, so the set validates like a real one.

Layout under `out`::

    pool/images/pool-NNNN.jpg, pool/panoptic/pool-NNNN.png      the generated files
    train2017/<id>.jpg -> pool/...   annotations/panoptic_train2017/<id>.png -> pool/...
    val2017/ ... annotations/panoptic_val2017.json               a small val split

Pool images have COCO's shapes (640 x 480, 480 x 640, 640 x 427, 427 x 640), photo-like
noisy pixels (JPEG quality 90, about COCO's 160 kB a file) and the real 133 categories.
Their segment counts average COCO train's 860,001 / 118,287 = 7.27 per image, spread
like a photo collection's (many with a few segments, a long tail up to MAX_SEGMENTS).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pix2seqd.platform.data.coco_panoptic import id_to_rgb
from pix2seqd.platform.synthetic.coco_categories import coco_panoptic_categories
from pix2seqd.platform.synthetic.files import segment_stats

COCO_TRAIN_IMAGES = 118_287
COCO_TRAIN_SEGMENTS = 860_001
SEGMENTS_PER_IMAGE = COCO_TRAIN_SEGMENTS / COCO_TRAIN_IMAGES
MAX_SEGMENTS = 60
SHAPES = ((640, 480), (480, 640), (640, 427), (427, 640))  # (width, height)
JPEG_QUALITY = 90
VAL_ID_BASE = 1_000_000  # val image ids never collide with train's, as in COCO


@dataclass(frozen=True)
class PoolImage:
    """One generated image: its JPEG and id PNG, its size and its `segments_info`."""

    jpg: Path
    png: Path
    width: int
    height: int
    segments: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class ScaleSet:
    """What `write_scale_set` wrote: the COCO-panoptic root, the train split's records and
    segments, the pool size, and the train annotation file's bytes."""

    root: Path
    records: int
    segments: int
    pool: int
    json_bytes: int


def pool_segment_counts(pool: int, rng: np.random.Generator) -> np.ndarray:
    """(pool,) segments per pool image in [1, MAX_SEGMENTS], summing to
    round(pool x SEGMENTS_PER_IMAGE): 1 + a negative binomial (r = 2), whose long tail is
    a photo collection's (most images a few segments, some dozens)."""
    mean_extra = SEGMENTS_PER_IMAGE - 1
    counts = 1 + rng.negative_binomial(2, 2 / (2 + mean_extra), size=pool)
    counts = np.clip(counts, 1, MAX_SEGMENTS)
    target = round(pool * SEGMENTS_PER_IMAGE)
    while counts.sum() != target:  # nudge random entries until the mean is COCO's
        k = int(rng.integers(pool))
        step = 1 if counts.sum() < target else -1
        if 1 <= counts[k] + step <= MAX_SEGMENTS:
            counts[k] += step
    return counts


def draw_slots(n: int, height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """((height, width) int32 slot 0..n-1 per pixel, every slot present; the number of
    stuff slots): 1-3 stuff bands (the first slots), then rectangles and ellipses painted
    over them; redrawn until all n show."""
    n_stuff = min(n, int(rng.integers(1, 4)))
    while True:
        cuts = np.sort(rng.choice(np.arange(20, height - 20), n_stuff - 1, replace=False))
        slots = np.searchsorted(cuts, np.arange(height), side="right")[:, None]
        slots = slots.repeat(width, 1).astype(np.int32)
        side = max(16, int(min(height, width) / np.sqrt(n)))  # more things, smaller ones
        for k in range(n_stuff, n):
            h, w = (int(v) for v in rng.integers(side // 2, side + 1, size=2))
            y0, x0 = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
            box = slots[y0 : y0 + h, x0 : x0 + w]  # a view: writing it paints the map
            if rng.random() < 0.5:
                box[...] = k
            else:
                yy, xx = np.ogrid[:h, :w]
                box[((yy + 0.5) / h * 2 - 1) ** 2 + ((xx + 0.5) / w * 2 - 1) ** 2 <= 1] = k
        if len(np.unique(slots)) == n:
            return slots, n_stuff


def photo_pixels(slots: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8: a colour per slot under a light gradient, plus Gaussian noise,
    which makes the JPEG about as large as a photo of that size."""
    height, width = slots.shape
    colour = rng.uniform(30, 225, size=(int(slots.max()) + 1, 3)).astype(np.float32)
    light = 0.8 + 0.4 * np.arange(width, dtype=np.float32) / width
    pixels = colour[slots] * light[None, :, None]
    pixels += rng.normal(0, 20, size=pixels.shape).astype(np.float32)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_pool_image(out: Path, index: int, n: int, rng: np.random.Generator) -> PoolImage:
    """Draw pool image `index` with `n` segments; write its JPEG and id PNG under out/pool."""
    width, height = SHAPES[int(rng.integers(len(SHAPES)))]
    slots, n_stuff = draw_slots(n, height, width, rng)
    categories = coco_panoptic_categories()
    things = [c["id"] for c in categories if c["isthing"]]
    stuff = [c["id"] for c in categories if not c["isthing"]]
    seg_ids = rng.choice(2**24 - 1, size=n, replace=False) + 1  # 24-bit ids, as panopticapi's
    ids = seg_ids[slots]
    stats = segment_stats(ids)
    stem = f"pool-{index:04d}"
    jpg, png = out / "pool" / "images" / f"{stem}.jpg", out / "pool" / "panoptic" / f"{stem}.png"
    Image.fromarray(photo_pixels(slots, rng)).save(jpg, quality=JPEG_QUALITY)
    Image.fromarray(id_to_rgb(ids)).save(png)
    segments = []
    for k, seg_id in enumerate(seg_ids.tolist()):
        is_stuff = k < n_stuff
        category = int(rng.choice(stuff if is_stuff else things))
        area, bbox = stats[seg_id]
        crowd = int(not is_stuff and rng.random() < 0.01)
        segments.append(
            {"id": seg_id, "category_id": category, "iscrowd": crowd, "bbox": bbox, "area": area}
        )
    return PoolImage(jpg, png, width, height, tuple(segments))


def write_pool(out: Path, pool: int, seed: int) -> list[PoolImage]:
    """`pool` generated images whose segment counts average SEGMENTS_PER_IMAGE."""
    for sub in ("images", "panoptic"):
        (out / "pool" / sub).mkdir(parents=True, exist_ok=True)
    counts = pool_segment_counts(pool, np.random.default_rng([seed, 0]))
    return [
        write_pool_image(out, k, int(n), np.random.default_rng([seed, 1, k]))
        for k, n in enumerate(counts)
    ]


def write_scale_set(
    out: Path, records: int, *, pool: int = 200, val_records: int = 50, seed: int = 0
) -> ScaleSet:
    """Write the linked COCO-panoptic set under `out` (module docstring): `records` train
    images (record k links pool image k mod `pool`, ids 1..records) and `val_records` val
    images (ids from VAL_ID_BASE + 1). `out` must not hold a set already."""
    out = Path(out)
    if records < 1 or pool < 1 or val_records < 1:
        raise ValueError(
            f"records, pool and val_records must be >= 1, got {records}, {pool}, {val_records}"
        )
    if (out / "train2017").exists():
        raise FileExistsError(f"{out / 'train2017'}: a set is already there; remove it first")
    images = write_pool(out, min(pool, records), seed)
    segments = write_split(out, "train2017", images, records, 1)
    write_split(out, "val2017", images, val_records, VAL_ID_BASE + 1)
    json_bytes = (out / "annotations" / "panoptic_train2017.json").stat().st_size
    return ScaleSet(out, records, segments, len(images), json_bytes)


def write_split(out: Path, split: str, pool: list[PoolImage], n: int, first_id: int) -> int:
    """Links and annotation file of `split`: image k (id first_id + k) is pool[k mod len].
    The file is written entry by entry, so its size never sits in memory. Returns the
    split's segment count."""
    image_dir, png_dir = out / split, out / "annotations" / f"panoptic_{split}"
    image_dir.mkdir(parents=True)
    png_dir.mkdir(parents=True)
    targets = [(os.path.relpath(p.jpg, image_dir), os.path.relpath(p.png, png_dir)) for p in pool]
    head = {"info": {"description": f"pix2seqd scale set: {n} links to {len(pool)} images"}}
    segments = 0
    with open(out / "annotations" / f"panoptic_{split}.json", "w") as f:
        f.write(json.dumps(head)[:-1] + ', "licenses": [{"id": 1, "name": "CC BY 2.0", "url": ""}]')
        entries = [(first_id + k, pool[k % len(pool)], targets[k % len(pool)]) for k in range(n)]
        f.write(', "images": [')
        for k, (image_id, p, (jpg, png)) in enumerate(entries):
            os.symlink(jpg, image_dir / f"{image_id:012d}.jpg")
            os.symlink(png, png_dir / f"{image_id:012d}.png")
            f.write((", " if k else "") + json.dumps(image_entry(image_id, split, p)))
        f.write('], "annotations": [')
        for k, (image_id, p, _) in enumerate(entries):
            ann = {
                "segments_info": list(p.segments),
                "file_name": f"{image_id:012d}.png",
                "image_id": image_id,
            }
            f.write((", " if k else "") + json.dumps(ann))
            segments += len(p.segments)
        f.write('], "categories": ' + json.dumps(coco_panoptic_categories()) + "}")
    return segments


def image_entry(image_id: int, split: str, p: PoolImage) -> dict[str, Any]:
    """An `images` entry with the keys of COCO's own (urls and capture date included, so
    the file parses like COCO's)."""
    name = f"{image_id:012d}.jpg"
    return {
        "license": 1,
        "file_name": name,
        "coco_url": f"http://images.cocodataset.org/{split}/{name}",
        "height": p.height,
        "width": p.width,
        "date_captured": "2013-11-14 11:18:45",
        "flickr_url": f"http://farm4.staticflickr.com/1234/{image_id}_0123456789_z.jpg",
        "id": image_id,
    }
