"""benchmark.py data: the generated COCO-like set and the Ray Data vs DataLoader timing."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_ckpt import tiny_at_64
from PIL import Image

from pix2seqd.platform.benchmarks.data_bench import (
    BenchSize,
    bench_config,
    benchmark_data,
    dataloader,
    make_bench_set,
    ray_dataset,
)
from pix2seqd.platform.data.coco_panoptic import load_coco_panoptic, read_id_png, record_item
from pix2seqd.platform.data.validate import check_row


@pytest.fixture(scope="module")
def bench_set(tmp_path_factory):
    return make_bench_set(tmp_path_factory.mktemp("bench") / "coco", n=6, seed=3)


def test_bench_set_is_valid_coco_panoptic_with_10_to_30_segments(bench_set):
    records, cmap = load_coco_panoptic(bench_set, "train2017")
    assert len(records) == 6
    assert any(c.isthing for c in cmap.categories) and not all(c.isthing for c in cmap.categories)
    for rec in records:
        with Image.open(rec.image_path) as im:
            assert (im.format, im.size, im.mode) == ("JPEG", (640, 480), "RGB")
        assert 10 <= len(rec.segments) <= 30
        ids = read_id_png(rec.png_path)
        for s in rec.segments:
            assert s.area == int((ids == s.id).sum()) > 0
        check = check_row(record_item(rec), cmap, "segment")
        assert check.problem == "" and check.segments == len(rec.segments)


def test_bench_set_is_deterministic_and_cached(bench_set, tmp_path):
    again = make_bench_set(tmp_path / "again", n=6, seed=3)
    for name in (
        "annotations/panoptic_train2017.json",
        "train2017/000000000004.jpg",
        "annotations/panoptic_train2017/000000000004.png",
    ):
        assert (again / name).read_bytes() == (bench_set / name).read_bytes()
    stamp = (bench_set / "bench_set.json").stat().st_mtime_ns
    make_bench_set(bench_set, n=6, seed=3)
    assert (bench_set / "bench_set.json").stat().st_mtime_ns == stamp


@pytest.mark.ray
def test_quick_benchmark_reports_both_paths(ray_session, bench_set):
    result = benchmark_data(tiny_at_64(), quick=True, workers=2, batch=4, root=bench_set)
    assert result["ray_data_img_s"] > 0 and result["dataloader_img_s"] > 0
    assert result["ratio"] == pytest.approx(result["ray_data_img_s"] / result["dataloader_img_s"])
    assert set(result["startup_s"]) == {"ray_data", "dataloader"}
    assert all(np.isfinite(v) and v > 0 for v in result["startup_s"].values())
    assert result["images"] == 6 and result["image_size"] == 64
    assert result["workers"] == 2 and result["batch"] == 4


@pytest.mark.ray
def test_both_paths_yield_the_same_batches(ray_session, bench_set):
    records, cmap = load_coco_panoptic(bench_set, "train2017")
    rows = [record_item(r) for r in records]
    cfg = bench_config(
        tiny_at_64(), BenchSize(images=6, batch=4, warmup=0, measure=1, rounds=1, tail=0)
    )
    from_ray = list(ray_dataset(rows, cmap, cfg, workers=2).iter_torch_batches(batch_size=4))
    from_dl = list(dataloader(rows, cmap, cfg, workers=2, batch=4))
    assert len(from_ray) == len(from_dl) == 2
    for a, b in zip(from_ray, from_dl):
        assert set(a) == set(b) == {"image", "hw", "mask"}
        for key in a:
            assert a[key].dtype == b[key].dtype and bool((a[key] == b[key]).all()), key
