"""How fast the tiny preset's image training stream can be decoded on this machine: the
stream, split in two as Ray Train splits it, drained by two Ray tasks that only count
examples, with and without the decoded-image cache (`data.cache_mb`) and with map tasks of
128 examples (the old fixed size) or of `pipeline.rows_per_task`.

On 2 cores Ray Data decodes the whole stream ahead of the trainers in the first minutes of
a run, on the CPUs the trainers use, so examples/s here sets how long that phase lasts.
Printed: examples/s per setting and the ratio to the first (no cache, tasks of 128),
measured in the same run. Starts its own local Ray; generates the default data if needed.

    python scripts/stream_drain_bench.py [--steps 2000] [--repeats 2]
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from dataclasses import replace
from unittest import mock

import ray

from pix2seqd.platform.data import pipeline
from pix2seqd.platform.data.default_data import default_coco_root
from pix2seqd.platform.data.sources import load_panoptic_split
from pix2seqd.platform.presets import tiny
from pix2seqd.platform.ray_env import init_ray

SETTINGS = (("no cache, tasks of 128", 0.0, 128), ("cache, tasks of 128", 256.0, 128),
            ("cache, rows_per_task", 256.0, 0))


@ray.remote(num_cpus=0.25)
def _drain(split) -> int:
    return sum(len(b["mask"]) for b in split.iter_torch_batches(batch_size=8, drop_last=True))


def drain(rows, cmap, steps: int, cache_mb: float, rows_per_task: int) -> float:
    """Examples per second of one full drain of a `steps`-step stream."""
    cfg = tiny()
    cfg = replace(cfg, data=replace(cfg.data, cache_mb=cache_mb), train=replace(cfg.train, steps=steps))
    fixed = (mock.patch.object(pipeline, "rows_per_task", lambda hw: rows_per_task) if rows_per_task
             else contextlib.nullcontext())  # 0: the pipeline's own size
    with fixed:
        ds = pipeline.build_rank_dataset(rows, cmap, cfg, 0, 1)
    t = time.perf_counter()
    n = sum(ray.get([_drain.remote(s) for s in ds.streaming_split(2, equal=True)]))
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2000, help="stream length in steps of 16")
    ap.add_argument("--repeats", type=int, default=2, help="rounds over the settings")
    args = ap.parse_args()
    init_ray(1.0)
    records, cmap = load_panoptic_split("coco", default_coco_root(), "train2017")
    rows = [pipeline.record_item(r) for r in records]
    drain(rows, cmap, 200, 0.0, 128)  # start the Ray workers once, outside the timings
    rates = {name: [] for name, _, _ in SETTINGS}
    for _ in range(args.repeats):
        for name, cache_mb, per_task in SETTINGS:
            rates[name].append(drain(rows, cmap, args.steps, cache_mb, per_task))
            print(f"{name:<24} {rates[name][-1]:7.0f} examples/s", flush=True)
    base = statistics.median(rates[SETTINGS[0][0]])
    print(f"\nmedian of {args.repeats} drains of {args.steps * 16} examples:")
    for name, values in rates.items():
        print(f"{name:<24} {statistics.median(values):7.0f} examples/s  ratio {statistics.median(values) / base:.2f}")


if __name__ == "__main__":
    main()
