"""`benchmark.py data`: images/s of the training input pipeline, Ray Data vs torch DataLoader.

Both paths do the same per-example work, `pipeline.TrainDecoder` (JPEG + id-PNG decode,
label map, scale jitter, crop, flip, colour jitter, mask resize), on the same example
numbers, in order, with the same number of CPU workers, and hand out dicts of torch tensors
{'image', 'hw', 'mask'} of `batch` examples:

- Ray Data: `ray.data.range` -> `map_batches(TrainDecoder, num_cpus=1)` -> `iter_torch_batches`,
  with the dataset's CPU limit = `workers`. One CPU per task (not the pipeline's 0.5), so at
  most `workers` decode tasks run at once, as the DataLoader's `workers` processes; a local
  Ray is started with num_cpus=workers (a running Ray, e.g. the test session's, is reused and
  the limit alone applies). Blocks of 128 example numbers, so the ordered stream
  (preserve_order, as in training) never waits long behind one task (see `ray_dataset`).
- DataLoader: a map-style dataset whose items are chunks of example numbers (BatchSampler),
  `num_workers=workers`, each worker calling the same TrainDecoder with numpy's BLAS on one
  thread (as Ray's OMP_NUM_THREADS=1 gives its tasks).

Start-up (to the first batch) is reported apart; img/s is the steady state over the batches
after `warmup` more. The data are generated COCO-like images (`make_bench_set`): 640x480
textured JPEGs with 10-30 segments, in the COCO-panoptic layout.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.data
import torch
from PIL import Image
from threadpoolctl import threadpool_limits
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from pix2seqd.platform.config import Config, override
from pix2seqd.platform.data.coco_panoptic import id_to_rgb, load_coco_panoptic, record_item
from pix2seqd.platform.data.pipeline import TrainDecoder
from pix2seqd.platform.ray_env import apply_env_defaults

WIDTH, HEIGHT = 640, 480
SPLIT = "train2017"
SET_VERSION = 1  # bump when make_bench_set draws differently: cached sets are rewritten
# A few COCO-panoptic categories with their real ids: things 1..90, stuff above.
CATEGORIES = (
    (1, "person", 1),
    (2, "bicycle", 1),
    (3, "car", 1),
    (4, "motorcycle", 1),
    (6, "bus", 1),
    (8, "truck", 1),
    (17, "cat", 1),
    (18, "dog", 1),
    (44, "bottle", 1),
    (62, "chair", 1),
    (119, "floor-wood", 0),
    (149, "road", 0),
    (184, "tree-merged", 0),
    (187, "sky-other-merged", 0),
    (191, "pavement-merged", 0),
    (199, "wall-other-merged", 0),
)
THINGS = [c[0] for c in CATEGORIES if c[2]]
STUFF = [c[0] for c in CATEGORIES if not c[2]]


# ---------------------------------------------------------------- the generated set


def make_bench_set(out: Path, n: int, seed: int) -> Path:
    """Write `n` COCO-like training images in the COCO-panoptic layout under `out`.

    640x480 JPEGs (quality 90, textured and noisy so decoding costs what a photo costs),
    id PNGs (id = R + 256 G + 256^2 B) and annotations/panoptic_train2017.json with 10-30
    segments per image (2-4 stuff bands, then things). The same (n, seed) gives the same
    files; a folder already holding them is reused. Returns `out`.
    """
    out, key = Path(out), {"n": n, "seed": seed, "version": SET_VERSION}
    stamp = out / "bench_set.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == key:
        return out
    (out / SPLIT).mkdir(parents=True, exist_ok=True)
    (out / "annotations" / f"panoptic_{SPLIT}").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(n):
        image, annotation = _write_example(out, index, np.random.default_rng([seed, index]))
        images.append(image)
        annotations.append(annotation)
    categories = [
        {"id": i, "name": name, "supercategory": "bench", "isthing": t} for i, name, t in CATEGORIES
    ]
    data = {
        "info": {"description": f"pix2seqd data benchmark set, seed {seed}"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    (out / "annotations" / f"panoptic_{SPLIT}.json").write_text(json.dumps(data))
    stamp.write_text(json.dumps(key))
    return out


def default_set_dir(n: int, seed: int) -> Path:
    """Where the benchmark caches its generated set (the system temp folder)."""
    return Path(tempfile.gettempdir()) / "pix2seqd-bench-data" / f"coco-n{n}-seed{seed}"


def _write_example(out: Path, index: int, rng: np.random.Generator) -> tuple[dict, dict]:
    """One image: draw segments, texture them, write JPEG + PNG; COCO image/annotation dicts."""
    while True:
        slots, categories = _draw_slots(rng)
        present = np.flatnonzero(np.bincount(slots.ravel(), minlength=len(categories)))
        if 10 <= len(present) <= 30:
            break
    seg_ids = rng.choice(2**24 - 1, size=len(categories), replace=False) + 1
    ids = seg_ids[slots]
    stem = f"{index + 1:012d}"
    Image.fromarray(_texture(slots, rng)).save(out / SPLIT / f"{stem}.jpg", quality=90)
    Image.fromarray(id_to_rgb(ids)).save(out / "annotations" / f"panoptic_{SPLIT}" / f"{stem}.png")
    info = [_segment_info(ids == seg_ids[k], int(seg_ids[k]), categories[k], rng) for k in present]
    image = {"id": index + 1, "file_name": f"{stem}.jpg", "width": WIDTH, "height": HEIGHT}
    return image, {"image_id": index + 1, "file_name": f"{stem}.png", "segments_info": info}


def _draw_slots(rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """(H, W) slot index per pixel and the category of each slot: stuff bands, then things
    (rectangles and ellipses) painted over them; a later shape hides what it covers."""
    n_stuff = int(rng.integers(2, 5))
    n_things = int(rng.integers(10, 31)) - n_stuff
    categories = [int(c) for c in rng.choice(STUFF, n_stuff)]
    categories += [int(c) for c in rng.choice(THINGS, n_things)]
    cuts = np.sort(rng.choice(np.arange(40, HEIGHT - 40), n_stuff - 1, replace=False))
    slots = np.searchsorted(cuts, np.arange(HEIGHT), side="right")[:, None].repeat(WIDTH, 1)
    for k in range(n_stuff, n_stuff + n_things):
        h, w = (int(v) for v in rng.integers(24, 180, size=2))
        y0, x0 = int(rng.integers(0, HEIGHT - h)), int(rng.integers(0, WIDTH - w))
        box = slots[y0 : y0 + h, x0 : x0 + w]  # a view: writing it paints the image
        if rng.random() < 0.5:
            box[...] = k
        else:
            box[_ellipse(h, w)] = k
    return slots.astype(np.int32), categories


def _ellipse(h: int, w: int) -> np.ndarray:
    """(h, w) bool: the ellipse inscribed in an h x w box."""
    yy, xx = np.ogrid[:h, :w]
    return ((yy + 0.5) / h * 2 - 1) ** 2 + ((xx + 0.5) / w * 2 - 1) ** 2 <= 1


def _texture(slots: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 photo-like pixels: a colour and a sinusoidal pattern per segment, a
    smooth light gradient, and Gaussian noise (which makes the JPEG about photo-sized)."""
    k = int(slots.max()) + 1
    colour = rng.uniform(30, 225, size=(k, 3)).astype(np.float32)
    freq = rng.uniform(-0.25, 0.25, size=(k, 2)).astype(np.float32)
    amp = rng.uniform(5, 40, size=k).astype(np.float32)
    yy, xx = np.mgrid[:HEIGHT, :WIDTH].astype(np.float32)
    pattern = amp[slots] * np.sin(freq[slots, 0] * yy + freq[slots, 1] * xx)
    light = 0.8 + 0.4 * xx / WIDTH
    pixels = colour[slots] * light[..., None] + pattern[..., None]
    pixels += rng.normal(0, 14, size=pixels.shape).astype(np.float32)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _segment_info(mask: np.ndarray, seg_id: int, category: int, rng: np.random.Generator) -> dict:
    """COCO `segments_info` entry (bbox x, y, w, h); a few things are crowd regions."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    bbox = [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
    crowd = int(category in THINGS and rng.random() < 0.05)
    return {
        "id": seg_id,
        "category_id": category,
        "iscrowd": crowd,
        "area": int(mask.sum()),
        "bbox": bbox,
    }


# ---------------------------------------------------------------- timing


@dataclass(frozen=True)
class BenchSize:
    """How much to run: distinct images, batch, batches skipped after the first, batches
    timed, rounds (each round times Ray Data then the DataLoader), and batches streamed
    after the timed ones but not read, so the timed window ends before the stream drains."""

    images: int
    batch: int
    warmup: int
    measure: int
    rounds: int
    tail: int = 4

    @property
    def total(self) -> int:
        """Examples in each path's stream."""
        return (1 + self.warmup + self.measure + self.tail) * self.batch


# Warm-up covers the first Ray task of each worker (128 examples = 4 batches).
QUICK = BenchSize(images=64, batch=32, warmup=4, measure=12, rounds=1)
FULL = BenchSize(images=256, batch=32, warmup=4, measure=32, rounds=2)


def time_stream(
    make_iter: Callable[[], Iterable[dict]], warmup: int, measure: int
) -> tuple[float, float]:
    """(seconds to the first batch, steady-state images/s over `measure` batches after
    the first and `warmup` more). `make_iter` is timed too: building the iterator is where
    a DataLoader forks its workers and Ray Data plans its stream. The iterator is closed
    afterwards, so a longer stream stops producing before the next measurement."""
    t0 = time.perf_counter()
    batches = iter(make_iter())
    next(batches)
    startup = time.perf_counter() - t0
    for _ in range(warmup):
        next(batches)
    images, t1 = 0, time.perf_counter()
    for _ in range(measure):
        images += len(next(batches)["image"])
    img_s = images / (time.perf_counter() - t1)
    if hasattr(batches, "close"):
        batches.close()  # a Ray Data generator: stops the stream's tasks
    del batches  # a DataLoader iterator shuts its workers down here
    return startup, img_s


def bench_config(cfg: Config, size: BenchSize) -> Config:
    """The preset with a one-worker stream of exactly `size.total` examples."""
    return override(
        cfg,
        {
            "train.batch_size": size.batch,
            "train.steps": math.ceil(size.total / size.batch),
            "train.num_workers": 1,
        },
    )


# ---------------------------------------------------------------- the two paths


def ray_dataset(
    rows, cmap, cfg: Config, workers: int, block_rows: int = 128, num_cpus: float = 1.0
):
    """Ray Dataset of the stream: TrainDecoder in tasks on at most `workers` CPUs, ordered.

    block_rows: example numbers per block = per map task, since a map task takes whole
    blocks and hands its output over when it ends (the pipeline has total // 256, at most
    200, blocks). 128 = four map batches: with 32 the workers idle between tasks (start-up,
    unpickling TrainDecoder and its rows) and Ray reached ~0.87 of the DataLoader on 2 cores.
    num_cpus: per task (the pipeline: 0.5). The CPU cap is the dataset's resource limit,
    which holds in a larger running Ray too (`concurrency=` is deprecated for task maps)."""

    total = cfg.train.steps * cfg.train.batch_size
    ds = ray.data.range(total, override_num_blocks=max(1, math.ceil(total / block_rows)))
    options = ds.context.execution_options
    options.preserve_order = True
    options.resource_limits = options.resource_limits.copy(cpu=workers)
    ds.context.enable_progress_bars = False
    return ds.map_batches(
        TrainDecoder(cfg, cmap, rows),
        batch_size=min(32, block_rows),
        batch_format="numpy",
        num_cpus=num_cpus,
    )


class ChunkDataset:
    """Map-style torch dataset: item = list of example numbers -> the decoded batch."""

    def __init__(self, decoder: Callable[[dict], dict]):
        self.decoder = decoder

    def __getitem__(self, ids: list[int]) -> dict:
        out = self.decoder({"id": np.asarray(ids, np.int64)})
        return {k: torch.from_numpy(v) for k, v in out.items()}


def dataloader(rows, cmap, cfg: Config, workers: int, batch: int):
    """torch DataLoader over the same stream: `workers` processes, in-order batches."""

    total = cfg.train.steps * cfg.train.batch_size
    sampler = BatchSampler(SequentialSampler(range(total)), batch, drop_last=False)
    # forkserver, not fork: a worker forked from a process with running threads (Ray's,
    # torch's) can inherit a held lock and hang (seen once in CI, inside PIL's open)
    return DataLoader(
        ChunkDataset(TrainDecoder(cfg, cmap, rows)),
        batch_size=None,
        sampler=sampler,
        num_workers=workers,
        prefetch_factor=2,
        worker_init_fn=one_blas_thread,
        multiprocessing_context="forkserver",
    )


def one_blas_thread(worker_id: int) -> None:
    """DataLoader worker start: numpy's BLAS to one thread, as in a Ray task.

    Ray starts workers with OMP_NUM_THREADS = their CPUs (1); DataLoader workers otherwise
    get a BLAS pool of one thread per core, and colour jitter's (HW, 3) x (3, 3) products
    then oversubscribe the cores."""

    threadpool_limits(1)


# ---------------------------------------------------------------- the benchmark


def start_ray(workers: int) -> bool:
    """Start a local Ray with `workers` CPUs unless one is running; True if started here.

    Always local (not RAY_ADDRESS): the DataLoader it is compared with runs on this machine."""

    apply_env_defaults()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private, short-lived local Ray
    if ray.is_initialized():
        return False
    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
    return True


def benchmark_data(
    cfg: Config,
    quick: bool,
    workers: int | None = None,
    *,
    batch: int = 0,
    root: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Ray Data vs DataLoader images/s for the preset's training pipeline (docs/cli.md keys).

    workers: CPU workers of each path (default: all cores); batch: examples per batch
    (default 32); root: a COCO-panoptic folder to read (default: the generated set).
    """

    size = QUICK if quick else FULL
    size = dataclasses.replace(size, batch=batch or size.batch)
    workers = workers or os.cpu_count() or 1
    root = root or make_bench_set(default_set_dir(size.images, seed), size.images, seed)
    records, cmap = load_coco_panoptic(root, SPLIT)
    rows, cfg = [record_item(r) for r in records], bench_config(cfg, size)
    t0 = time.perf_counter()
    started = start_ray(workers)
    ray_init_s = time.perf_counter() - t0
    try:
        runs = _rounds(rows, cmap, cfg, workers, size)
    finally:
        if started:
            ray.shutdown()
    return _summary(runs, size, workers, len(records), cfg.data.image_size, ray_init_s)


def _rounds(rows, cmap, cfg: Config, workers: int, size: BenchSize) -> dict[str, list]:
    """Alternate the two paths `size.rounds` times: {path: [(startup_s, img_s), ...]}."""
    paths = {
        "ray_data": lambda: ray_dataset(rows, cmap, cfg, workers).iter_torch_batches(
            batch_size=size.batch
        ),
        "dataloader": lambda: dataloader(rows, cmap, cfg, workers, size.batch),
    }
    runs: dict[str, list] = {name: [] for name in paths}
    for _ in range(size.rounds):
        for name, make in paths.items():
            runs[name].append(time_stream(make, size.warmup, size.measure))
    return runs


def _summary(
    runs: dict[str, list],
    size: BenchSize,
    workers: int,
    images: int,
    image_size: int,
    ray_init_s: float,
) -> dict[str, Any]:
    """Mean over rounds of start-up and img/s per path, the ratio, and what was run."""
    mean = {name: np.mean(np.array(r), axis=0) for name, r in runs.items()}
    ray_img_s, dl_img_s = float(mean["ray_data"][1]), float(mean["dataloader"][1])
    return {
        "ray_data_img_s": ray_img_s,
        "dataloader_img_s": dl_img_s,
        "ratio": ray_img_s / dl_img_s,
        "startup_s": {name: float(m[0]) for name, m in mean.items()},
        "img_s_by_round": {name: [round(float(x[1]), 2) for x in r] for name, r in runs.items()},
        "ray_init_s": ray_init_s,
        "images": images,
        "image_size": image_size,
        "workers": workers,
        "batch": size.batch,
        "timed_batches": size.measure,
        "rounds": size.rounds,
    }
