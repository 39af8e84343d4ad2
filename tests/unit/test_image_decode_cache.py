"""The image training stream's per-example cost: decoded images kept per process
(`data.cache_mb`), and map tasks sized by the canvas (`pipeline.rows_per_task`)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from helpers_ckpt import tiny_at_64

from pix2seqd.platform.data import pipeline
from pix2seqd.platform.data.coco_panoptic import load_coco_panoptic, record_item
from pix2seqd.platform.data.frame_cache import process_cache
from pix2seqd.platform.data.pipeline import TrainDecoder, rows_per_task
from pix2seqd.platform.data.transforms import reduce_to_reach
from pix2seqd.platform.synthetic.coco import make_coco


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    make_coco(root, seed=3, n_train=4, n_val=1, min_size=40, max_size=70)
    return root


def _decoder(cmap, cache_mb: float, max_instances: int = 8) -> TrainDecoder:
    cfg = tiny_at_64()
    cfg = replace(
        cfg,
        data=replace(cfg.data, cache_mb=cache_mb),
        model=replace(cfg.model, max_instances=max_instances),
    )
    return TrainDecoder(cfg, cmap)


def _batch(rows):
    return {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}


@pytest.mark.parametrize("max_instances", [8, 3])
def test_cached_decoding_gives_the_same_examples_and_leaves_the_cache_unchanged(
    coco, max_instances
):
    recs, cmap = load_coco_panoptic(coco, "train2017")
    rows = [record_item(r, epoch=e) for e in (0, 1) for r in recs]  # epoch 1 reads the cache
    budget = 7.0 + max_instances  # a budget no other test uses: a fresh cache
    cache = process_cache(budget)
    got = _decoder(cmap, budget, max_instances)(_batch(rows))
    assert (cache.misses, cache.hits, len(cache)) == (len(recs), len(recs), len(recs))
    kept = [tuple(a.copy() for a in v) for v, _ in cache._items.values()]
    want = _decoder(cmap, 0.0, max_instances)(_batch(rows))
    for k in ("image", "hw", "mask"):
        assert np.array_equal(got[k], want[k])
    for (value, _), old in zip(cache._items.values(), kept):
        assert all(np.array_equal(a, b) for a, b in zip(value, old))
        # kept after the segments beyond the model's ids were made void
        assert value[1][..., 1].max() <= max_instances - 1
    if max_instances == 3:  # the fixture's images hold more segments than that
        assert max(v[1][..., 1].max() for v, _ in cache._items.values()) == 2


def test_a_rewritten_file_is_decoded_again(coco, tmp_path):
    import shutil

    from PIL import Image

    root = tmp_path / "coco"
    shutil.copytree(coco, root)
    recs, cmap = load_coco_panoptic(root, "train2017")
    rows = [record_item(recs[0])]
    cache = process_cache(5.5)
    first = _decoder(cmap, 5.5)(_batch(rows))["image"]
    jpg = rows[0]["image_path"]
    with Image.open(jpg) as im:
        upside_down = np.ascontiguousarray(np.asarray(im.convert("RGB"))[::-1])
    Image.fromarray(upside_down).save(jpg, quality=95)
    again = _decoder(cmap, 5.5)(_batch(rows))["image"]
    assert cache.misses == 2 and not np.array_equal(first, again)


def test_tasks_hold_about_the_same_pixels():
    assert rows_per_task((64, 64)) == 1024  # tiny: capped
    assert rows_per_task((96, 96)) == 910
    assert rows_per_task((256, 256)) == 128
    assert rows_per_task((512, 1024)) == rows_per_task((1024, 1024)) == 128  # never fewer


def test_reduce_to_reach_keeps_the_size_the_largest_scale_fits():
    image = np.arange(640 * 320 * 3, dtype=np.uint32).astype(np.uint8).reshape(640, 320, 3)
    label = np.zeros((640, 320, 2), np.int32)
    label[320:, :160, 1] = 7
    small, lab = reduce_to_reach(image, label, (64, 64), 1.0)
    assert small.shape == (64, 32, 3) and lab.shape == (64, 32, 2)
    assert (lab[32:, :16, 1] == 7).all() and (lab[:32, :, 1] == 0).all()
    assert (lab[:, 16:, 1] == 0).all()
    assert reduce_to_reach(image, label, (64, 64), 3.0)[0].shape == (192, 96, 3)
    assert reduce_to_reach(image, label, (128, 96), 1.0)[0].shape == (128, 64, 3)
    # nothing to gain: arrays returned as they are
    same = reduce_to_reach(image, label, (256, 256), 3.0)
    assert same[0] is image and same[1] is label


@pytest.fixture(scope="module")
def large_coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("large")
    make_coco(root, seed=5, n_train=3, n_val=1, min_size=200, max_size=320)
    return root


def _full_size(image, label, canvas, max_scale, method=None):
    return image, label


@pytest.mark.parametrize("max_scale", [1.0, 2.0])
def test_large_images_are_kept_small_and_give_the_same_examples(large_coco, monkeypatch, max_scale):
    recs, cmap = load_coco_panoptic(large_coco, "train2017")
    rows = [record_item(r) for r in recs]
    budget = 9.5 + max_scale  # a budget no other test uses: a fresh cache
    cache = process_cache(budget)
    dec = _decoder(cmap, budget)
    # without the colour inversion of rgb_symmetry, which rounds differently before a resize
    data = replace(dec.cfg.data, scale_jitter=(1.0, max_scale), rgb_symmetry=False)
    dec.cfg = replace(dec.cfg, data=data)
    got = dec(_batch(rows))
    for (image, label), _ in cache._items.values():  # a 200-320 px image on the 64 canvas
        assert max(image.shape[:2]) == round(64 * max_scale) and label.shape[:2] == image.shape[:2]
    monkeypatch.setattr(pipeline, "reduce_to_reach", _full_size)
    want = dec.__class__(replace(dec.cfg, data=replace(dec.cfg.data, cache_mb=0)), cmap)(
        _batch(rows)
    )
    assert np.array_equal(got["hw"], want["hw"])
    if max_scale == 1.0:  # the train transform resizes once either way: the same pixels
        assert np.array_equal(got["image"], want["image"])
        assert np.array_equal(got["mask"], want["mask"])
    else:  # resized twice: the same example up to interpolation at the edges
        diff = np.abs(got["image"].astype(int) - want["image"].astype(int))
        assert diff.mean() < 4.0
        assert (got["mask"] == want["mask"]).mean() > 0.95
