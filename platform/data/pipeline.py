"""Ray Data pipelines: COCO-panoptic records -> decoded, augmented training batches, and
val records -> eval inputs.

The training stream is a list of (epoch, record) items covering exactly the samples the run
needs, in an order fixed by the seed; each example's augmentation randomness comes from
(seed, epoch, image_id), so the data are a function of the config, not of scheduling.
Files are read inside the map tasks, so the driver ships paths, not pixels.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from pix2seqd.platform.config import Config, IdOrder
from pix2seqd.platform.data.coco_panoptic import (
    CategoryMap,
    decode_label_map,
    parse_segments,
    read_id_png,
    require_present,
)
from pix2seqd.platform.data.frame_cache import cached, file_key, process_cache
from pix2seqd.platform.data.prepared import read_row
from pix2seqd.platform.data.skip_count import skip_recorder
from pix2seqd.platform.data.transforms import (
    eval_transform,
    raster_order_ids,
    reduce_to_reach,
    relabel_random,
    symmetry_augment,
    train_transform,
    void_smallest,
)

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The visiting order of `n` records in `epoch`: a permutation seeded by (seed, epoch).

    Cached: every batch of an epoch needs the same permutation (read-only)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    order.flags.writeable = False
    return order


def stream_positions(positions: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stream positions -> (epoch, record index): epoch e visits every record once."""
    epochs, k = np.divmod(np.asarray(positions, np.int64), n)
    index = np.empty_like(k)
    for e in np.unique(epochs):
        sel = epochs == e
        index[sel] = epoch_order(n, seed, int(e))[k[sel]]
    return epochs, index


def decode_example(
    row: dict[str, Any], cmap: CategoryMap, crowd: str
) -> tuple[np.ndarray, np.ndarray]:
    """Read one row's image and PNG -> image (H, W, 3) uint8, label (H, W, 2) int32.

    Rows of the raw layout name files (`image_path`, `png_path`, `segments`); rows of a
    prepared split name a shard row (`shard`, `row`) holding the same bytes."""
    if "shard" in row:
        data = read_row(str(row["shard"]), int(row["row"]))
        where = f"{row['shard']} row {row['row']}"
        image_src, png_src = io.BytesIO(data["image"]), data["png"]
        segs, names = (
            data["segments"],
            (f"{where} ({data['file_name']})", f"{where} ({data['png_name']})"),
        )
    else:
        image_src, png_src = row["image_path"], row["png_path"]
        segs, names = row["segments"], (str(row["image_path"]), str(row["png_path"]))
    try:
        image = read_rgb(image_src)
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError) as err:
        raise ValueError(f"{names[0]}: cannot decode image ({err})") from None
    segments = parse_segments(json.loads(segs), names[1])
    ids = read_id_png(png_src, names[1])
    require_present(ids, segments, names[1])
    label = decode_label_map(ids, segments, cmap, crowd=crowd, name=names[1])
    if label.shape[:2] != image.shape[:2]:
        raise ValueError(
            f"{names[1]}: PNG size {label.shape[:2]} differs from image "
            f"{names[0]} size {image.shape[:2]}"
        )
    return image, label


def record_files(row: dict[str, Any]) -> tuple:
    """What a record row's decoded arrays depend on, as a cache key: both files'
    `file_key` (a rewritten file is read again), or its prepared shard and row."""
    if "image_path" in row:
        return file_key(row["image_path"]), file_key(row["png_path"])
    return str(row["shard"]), int(row["row"])


def decode_reach(cfg: Config) -> tuple[tuple[int, int], float]:
    """(canvas (H, W), top of the scale jitter): the size training examples are decoded and
    cached at (`transforms.reduce_to_reach`); part of their cache keys."""
    return cfg.data.image_hw, cfg.data.scale_jitter[1]


def rank_positions(
    local: np.ndarray, rank: int, world: int, global_batch: int, start: int = 0
) -> np.ndarray:
    """Local example numbers of one rank -> positions in the global stream.

    Optimizer step s uses positions [s*B, (s+1)*B); rank r takes the r-th contiguous slice
    of b = B / world of them, so every rank's stream is fixed by (seed, rank, world) alone
    and a run restarted at step s starts at position start = s*B.
    """
    b = global_batch // world
    local = np.asarray(local, np.int64)
    return start + (local // b) * global_batch + rank * b + local % b


def image_seed(image_id: int | str) -> int:
    """A non-negative int for the example's random stream: COCO ids as they are, string ids
    (Cityscapes stems) through CRC-32, which unlike hash() is the same in every process."""
    if isinstance(image_id, (int, np.integer)):
        return int(image_id)
    return zlib.crc32(str(image_id).encode())


class TrainDecoder:
    """map_batches function: rows -> {'image', 'hw', 'mask'} (see transforms.Example).

    Rows are either record rows (`coco_panoptic.record_item`, or prepared rows) or the rank's local
    example numbers {'id': int}, which are turned into (epoch, record) here through
    `rank_positions`, so the driver never materialises the whole stream.

    With `data.skip_bad` an example that fails to decode is left out of the batch, logged,
    and its key `<epoch>/<image_id>` passed to `on_skip` (`skip_count.SkipRecorder`).
    """

    def __init__(
        self,
        cfg: Config,
        cmap: CategoryMap,
        records: Sequence[dict[str, Any]] = (),
        start: int = 0,
        rank: int = 0,
        world: int = 1,
        on_skip: Callable[[list[str]], None] | None = None,
    ):
        self.cfg, self.cmap, self.records, self.start = cfg, cmap, list(records), start
        self.rank, self.world, self.on_skip = rank, world, on_skip

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cfg, d = self.cfg, self.cfg.data
        mask_hw = mask_shape(cfg)
        out, skipped = {"image": [], "hw": [], "mask": []}, []
        for row in self._rows(batch):
            try:
                ex = self.example(row, mask_hw)
            except (ValueError, OSError) as err:
                if not d.skip_bad:
                    raise
                log.warning("skipping bad example: %s", err)
                skipped.append(f"{row['epoch']}/{row['image_id']}")
                continue
            out["image"].append(ex.image), out["hw"].append(ex.hw), out["mask"].append(ex.mask)
        if skipped and self.on_skip is not None:
            self.on_skip(skipped)
        return _stack(out, d.image_hw, mask_hw)

    def example(self, row: dict[str, Any], mask_hw: tuple[int, int]):
        cfg, d = self.cfg, self.cfg.data
        image, label = cached(process_cache(d.cache_mb), self._key(row), lambda: self._decode(row))
        rng = np.random.default_rng(
            [cfg.train.seed, int(row["epoch"]), image_seed(row["image_id"])]
        )
        label = label.copy()  # the cached array is read-only
        # drawn in both orders, so that a seed gives the same geometry in both
        label[..., 1] = relabel_random(label[..., 1], cfg.model.max_instances, rng)
        image, label = symmetry_augment(image, label, d.vflip, d.rgb_symmetry, rng)
        ex = train_transform(
            image, label, d.image_hw, mask_hw, d.scale_jitter, d.color_jitter, d.hflip, rng
        )
        if d.id_order is IdOrder.RASTER:  # after the flip and crop: the order the model sees
            ex.mask[..., 1] = raster_order_ids(ex.mask[..., 1])
        return ex

    def _decode(self, row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """A row's files -> image (h, w, 3) uint8, label (h, w, 2) int32, the smallest
        segments beyond the model's ids made void (the same in every epoch), shrunk to the
        largest size the augmentation can use (`reduce_to_reach`)."""
        image, label = decode_example(row, self.cmap, self.cfg.data.crowd)
        label = void_smallest(label, self.cfg.model.max_instances)[0]
        return reduce_to_reach(image, label, *decode_reach(self.cfg))

    def _key(self, row: dict[str, Any]) -> tuple:
        cfg = self.cfg
        files = record_files(row)
        return ("image", files, cfg.data.crowd, cfg.model.max_instances, *decode_reach(cfg))

    def _rows(self, batch: dict[str, np.ndarray]):
        if "id" not in batch:
            yield from _rows(batch)
            return
        positions = rank_positions(
            batch["id"], self.rank, self.world, self.cfg.train.batch_size, self.start
        )
        epochs, index = stream_positions(positions, len(self.records), self.cfg.train.seed)
        for e, i in zip(epochs, index):
            yield {**self.records[i], "epoch": int(e)}


def read_rgb(path) -> np.ndarray:
    """An image file (or file-like) -> (h, w, 3) uint8, converted by PIL's `convert('RGB')`
    as COCO users' loaders (detectron2, panopticapi's scripts) do: a grayscale ('L') JPEG
    gets its value in all three channels, a CMYK JPEG (stored inverted, with an Adobe
    marker, which PIL undoes on reading) R = (255 - C)(255 - K) / 255 and likewise G, B.
    Every image the project trains on, predicts or draws is read here."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def mask_shape(cfg: Config) -> tuple[int, int]:
    """(Hm, Wm): the model's mask size on the canvas `data.image_hw`."""
    (h, w), s = cfg.data.image_hw, cfg.model.mask_stride
    return h // s, w // s


def image_inputs(
    image: np.ndarray, canvas: tuple[int, int], mask_hw: tuple[int, int]
) -> dict[str, np.ndarray]:
    """An RGB image (h, w, 3) uint8 -> padded canvas, valid size and original size."""
    ex = eval_transform(image, canvas, mask_hw)
    return {"image": ex.image, "hw": ex.hw, "orig_hw": np.array(image.shape[:2], np.int32)}


def rows_per_task(image_hw: tuple[int, int]) -> int:
    """Examples per map task of the training stream: 128 at 256 x 256 pixels or more, more
    of smaller canvases (about the same pixels per task), at most 1,024.

    A task hands its output over when it ends, so with preserve_order large blocks made the
    consumer wait for whole blocks (260 s to the first batch at coco_lowres, benchmark.py
    data). Small examples pay the per-task overhead instead: 64 x 64 examples (tiny),
    decoded from the cache and drained from a 2-way split on 2 cores, 1,589 per s in tasks
    of 128 and 1,943 in tasks of 1,024 (docs/results.md, "Data pipeline speed")."""
    return int(min(1024, max(128, 128 * 256 * 256 // (image_hw[0] * image_hw[1]))))


def build_rank_dataset(rows, cmap: CategoryMap, cfg: Config, rank: int, world: int, start: int = 0):
    """The Ray Dataset of rank `rank`'s training examples from global stream position
    `start` (optimizer step x global batch) to the last step, in a fixed order.

    rows: record rows (`coco_panoptic.record_item`) or prepared rows (`prepared.load_prepared`). With
    rank 0 of world 1 it is the whole stream, which Ray Train splits across the workers
    (the default); per-rank datasets (data.exact_order) are built by each worker itself
    (train/loop.py), so that every rank's examples and their order are fixed by the seed."""
    # lazy: Ray Data loads in seconds; the rest of this module is used without Ray (unit tests)
    import ray.data

    total = (cfg.train.steps * cfg.train.batch_size - start) // world
    ds = ray.data.range(total, override_num_blocks=max(1, min(200, total // 256)))
    ds = ds.repartition(target_num_rows_per_block=rows_per_task(cfg.data.image_hw))
    ds.context.execution_options.preserve_order = True
    return ds.map_batches(
        TrainDecoder(cfg, cmap, rows, start, rank, world, skip_recorder(cfg)),
        batch_size=32,
        batch_format="numpy",
        num_cpus=0.5,
    )


def _rows(batch: dict[str, np.ndarray]):
    keys = list(batch)
    for i in range(len(batch[keys[0]])):
        yield {k: batch[k][i] for k in keys}


def _stack(out, canvas, mask_hw):
    if not out["image"]:
        return {
            "image": np.zeros((0, *canvas, 3), np.uint8),
            "hw": np.zeros((0, 2), np.int32),
            "mask": np.zeros((0, *mask_hw, 2), np.uint8),
        }
    return {k: np.stack(v) for k, v in out.items()}
