"""Data transforms and the training stream: shapes, id relabelling, determinism."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from helpers_ckpt import tiny_at_64

from pix2seqd.platform.config import IdOrder
from pix2seqd.platform.data.coco_panoptic import load_coco_panoptic, record_item
from pix2seqd.platform.data.pipeline import TrainDecoder
from pix2seqd.platform.data.transforms import (
    eval_transform,
    raster_order_ids,
    relabel_random,
    train_transform,
    void_smallest,
)
from pix2seqd.platform.synthetic.coco import make_coco


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    make_coco(root, seed=1, n_train=6, n_val=2, min_size=40, max_size=70)
    return root


def test_relabel_random_draws_distinct_ids_without_replacement():
    ids = np.array([[0, 1, 1], [2, 3, 0]])
    out = relabel_random(ids, 16, np.random.default_rng(0))
    assert out[0, 0] == 0 and out[1, 2] == 0
    assert out[0, 1] == out[0, 2]
    assert len({out[0, 1], out[1, 0], out[1, 1]}) == 3
    assert set(np.unique(out)) - {0} <= set(range(1, 16))
    with pytest.raises(ValueError, match="max_instances=3"):
        relabel_random(ids, 3, np.random.default_rng(0))


def test_raster_order_numbers_ids_by_their_first_pixel_row_major():
    ids = np.array([[0, 6, 6], [4, 0, 2], [4, 4, 0]], np.uint8)
    out = raster_order_ids(ids)
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 1, 1], [2, 0, 3], [2, 2, 0]]
    # (T, H, W): an object of a later frame comes after every object of the first
    clip = np.array([[[0, 0], [0, 5]], [[3, 0], [0, 5]]])
    assert raster_order_ids(clip).tolist() == [[[0, 0], [0, 1]], [[2, 0], [0, 1]]]
    assert raster_order_ids(np.zeros((2, 2), np.int64)).tolist() == [[0, 0], [0, 0]]


def test_raster_id_order_in_the_decoder_follows_the_flipped_mask(coco):
    recs, cmap = load_coco_panoptic(coco, "train2017")

    def cfg(order):
        return replace(tiny_at_64(), data=replace(tiny_at_64().data, id_order=order))

    rows = [record_item(r, epoch=e) for r in recs[:3] for e in range(4)]
    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    paper = TrainDecoder(cfg(IdOrder.RANDOM), cmap)(batch)["mask"]
    ordered = TrainDecoder(cfg(IdOrder.RASTER), cmap)(batch)["mask"]
    assert np.array_equal(paper[..., 0], ordered[..., 0])  # same geometry, same classes
    assert not np.array_equal(paper[..., 1], ordered[..., 1])
    for p, o in zip(paper[..., 1], ordered[..., 1]):
        assert np.array_equal(raster_order_ids(p), o)  # the same segments, renumbered
        assert np.array_equal(raster_order_ids(o), o)
        assert set(np.unique(o)) == set(range(len(np.unique(o))))  # compact 0..N


def test_more_than_k_minus_1_segments_the_smallest_become_void():
    # areas: id 1 -> 4 px, id 2 -> 1 px, id 3 -> 3 px, id 4 -> 1 px; K = 3 keeps two segments
    ids = np.array([[1, 1, 2, 3], [1, 1, 3, 3], [0, 4, 0, 0]])
    classes = np.where(ids > 0, ids + 10, 0)
    label = np.stack([classes, ids], axis=-1)
    out, dropped = void_smallest(label.copy(), 3)
    assert dropped == 2
    np.testing.assert_array_equal(out[..., 1], [[1, 1, 0, 2], [1, 1, 2, 2], [0, 0, 0, 0]])
    np.testing.assert_array_equal(out[..., 0], [[11, 11, 0, 13], [11, 11, 13, 13], [0, 0, 0, 0]])
    same, none = void_smallest(label.copy(), 16)
    assert none == 0 and np.array_equal(same, label)


def test_train_transform_pads_and_resizes_masks():
    rng = np.random.default_rng(0)
    image = np.full((30, 50, 3), 200, np.uint8)
    label = np.zeros((30, 50, 2), np.int64)
    label[:, 25:] = (3, 7)
    ex = train_transform(image, label, (64, 64), (32, 32), (1.0, 1.0), 0.0, False, rng)
    assert ex.image.shape == (64, 64, 3) and ex.mask.shape == (32, 32, 2)
    assert tuple(ex.hw) == (38, 64)  # scale 64/50 on the long side
    assert (ex.image[38:] == 0).all() and (ex.mask[19:] == 0).all()
    assert (ex.mask[:19, 16:] == (3, 7)).all() and (ex.mask[:19, :16] == 0).all()


def test_eval_transform_keeps_aspect():
    ex = eval_transform(np.zeros((80, 40, 3), np.uint8), (64, 64), (32, 32))
    assert tuple(ex.hw) == (64, 32)


def test_non_square_canvases_fit_the_frame_and_keep_its_aspect():
    rng = np.random.default_rng(0)
    label = np.zeros((100, 100, 2), np.int64)
    label[:, 50:] = (2, 1)
    ex = train_transform(
        np.ones((100, 100, 3), np.uint8), label, (32, 64), (8, 16), (1.0, 1.0), 0.0, False, rng
    )
    # scale min(32/100, 64/100): 32 x 32 valid, on a 32 x 64 canvas, masks at stride 4
    assert ex.image.shape == (32, 64, 3) and ex.mask.shape == (8, 16, 2)
    assert tuple(ex.hw) == (32, 32) and (ex.image[:, 32:] == 0).all()
    assert (ex.mask[:, 4:8] == (2, 1)).all() and (ex.mask[:, :4] == 0).all()
    assert (ex.mask[:, 8:] == 0).all()
    frame = eval_transform(np.zeros((1024, 2048, 3), np.uint8), (32, 64), (8, 16))
    assert tuple(frame.hw) == (32, 64)  # a Cityscapes frame fills its 1:2 canvas


def _stream(recs, cmap, n, seed, start=0):
    from dataclasses import replace

    cfg = tiny_at_64()
    cfg = replace(cfg, train=replace(cfg.train, seed=seed))
    dec = TrainDecoder(cfg, cmap, [record_item(r) for r in recs], start)
    return [(r["epoch"], r["image_id"]) for r in dec._rows({"id": np.arange(n - start)})]


def test_train_stream_order_is_a_function_of_the_seed(coco):
    recs, cmap = load_coco_panoptic(coco, "train2017")
    a = _stream(recs, cmap, 15, seed=4)
    b = _stream(recs, cmap, 15, seed=4)
    c = _stream(recs, cmap, 15, seed=5)
    assert a == b and a != c
    assert sorted(x[1] for x in a[:6]) == sorted(
        r.image_id for r in recs
    )  # one epoch = every image once
    assert [x[0] for x in a] == [0] * 6 + [1] * 6 + [2] * 3
    assert _stream(recs, cmap, 15, seed=4, start=9) == a[9:]


def test_train_decoder_is_deterministic_and_labels_are_consistent(coco):
    recs, cmap = load_coco_panoptic(coco, "train2017")
    cfg = tiny_at_64()
    rows = [record_item(r, epoch=2) for r in recs[:3]]
    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    one, two = TrainDecoder(cfg, cmap)(batch), TrainDecoder(cfg, cmap)(batch)
    for k in ("image", "hw", "mask"):
        assert np.array_equal(one[k], two[k])
    assert one["image"].shape == (3, 64, 64, 3) and one["mask"].shape == (3, 16, 16, 2)
    classes, ids = one["mask"][..., 0], one["mask"][..., 1]
    assert classes.max() < cmap.num_classes and ids.max() < cfg.model.max_instances
    assert ((classes == 0) == (ids == 0)).mean() > 0.99  # void pixels carry no id


def test_stream_positions_match_record_rows_and_offsets(coco):
    recs, cmap = load_coco_panoptic(coco, "train2017")
    cfg = tiny_at_64()
    rows = [record_item(r) for r in recs]
    dec = TrainDecoder(cfg, cmap, rows)
    via_ids = list(dec._rows({"id": np.arange(20)}))
    by_id = {r["image_id"]: r for r in rows}
    assert all({**by_id[r["image_id"]], "epoch": r["epoch"]} == r for r in via_ids)
    shifted = list(TrainDecoder(cfg, cmap, rows, start=7)._rows({"id": np.arange(13)}))
    assert [(r["epoch"], r["image_id"]) for r in shifted] == [
        (r["epoch"], r["image_id"]) for r in via_ids[7:]
    ]


def test_too_many_segments_keep_the_largest_k_minus_1(coco):
    from dataclasses import replace

    recs, cmap = load_coco_panoptic(coco, "train2017")
    cfg = tiny_at_64()
    cfg = replace(
        cfg,
        model=replace(cfg.model, max_instances=3),
        data=replace(cfg.data, scale_jitter=(1.0, 1.0), hflip=False, color_jitter=0.0),
    )
    rec = max(recs, key=lambda r: len(r.segments))
    assert len(rec.segments) > 2
    ex = TrainDecoder(cfg, cmap).example(record_item(rec), (16, 16))
    ids = ex.mask[..., 1]
    assert set(np.unique(ids)) - {0} <= {1, 2} and len(set(np.unique(ids)) - {0}) == 2
    assert ((ex.mask[..., 0] == 0) == (ids == 0)).all()  # dropped segments are void, not relabelled


def test_rank_positions_split_each_step_between_ranks():
    from pix2seqd.platform.data.pipeline import rank_positions

    local = np.arange(6)
    r0 = rank_positions(local, 0, 2, 4)
    r1 = rank_positions(local, 1, 2, 4)
    assert r0.tolist() == [0, 1, 4, 5, 8, 9] and r1.tolist() == [2, 3, 6, 7, 10, 11]
    assert rank_positions(local, 1, 2, 4, start=8).tolist() == [10, 11, 14, 15, 18, 19]


@pytest.mark.ray
def test_rank_dataset_is_ordered_and_equals_the_decoder(ray_session, coco):
    from dataclasses import replace

    from pix2seqd.platform.data.pipeline import build_rank_dataset

    recs, cmap = load_coco_panoptic(coco, "train2017")
    cfg = tiny_at_64()
    cfg = replace(cfg, train=replace(cfg.train, batch_size=4, steps=5, num_workers=2))
    rows = [record_item(r) for r in recs]
    ds = build_rank_dataset(rows, cmap, cfg, 1, 2, start=4)
    first = [b["mask"] for b in ds.iter_batches(batch_size=2, batch_format="numpy")]
    again = [b["mask"] for b in ds.iter_batches(batch_size=2, batch_format="numpy")]
    assert len(first) == 4 and all(np.array_equal(a, b) for a, b in zip(first, again))
    direct = TrainDecoder(cfg, cmap, rows, start=4, rank=1, world=2)({"id": np.arange(8)})
    assert np.array_equal(np.concatenate(first), direct["mask"])
