"""Still clips (`data.stills`): still panoptic images as video training clips with
simulated motion; their ids, their motion, the still-or-video draw and the decoder."""

from dataclasses import replace

import numpy as np
import pytest

from pix2seqd.platform.config import override
from pix2seqd.platform.data.coco_panoptic import record_item
from pix2seqd.platform.data.davis import load_davis
from pix2seqd.platform.data.sources import load_panoptic_split
from pix2seqd.platform.data.still_clips import (
    StillSource,
    is_still,
    load_stills,
    moving_clip,
    object_ids,
    shift_ids,
    still_clip,
)
from pix2seqd.platform.data.video_pipeline import ClipDecoder, clip_index
from pix2seqd.platform.presets import davis
from pix2seqd.platform.synthetic.coco import make_coco
from pix2seqd.platform.synthetic.davis import make_davis
from pix2seqd.platform.train.run_davis import validate_video_config


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    return make_coco(
        tmp_path_factory.mktemp("coco"), seed=3, n_train=6, n_val=1, min_size=40, max_size=56
    )


@pytest.fixture(scope="module")
def stills(coco_root):
    records, cmap = load_panoptic_split("coco", coco_root, "train2017")
    return StillSource([record_item(r) for r in records], cmap)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return load_davis(make_davis(tmp_path_factory.mktemp("davis"), 0, 2, 0, 32, 48), "train")


def video_cfg(**data):
    """The davis preset at canvas 32 x 64 (mask 16 x 32), batch 4, stills on."""
    cfg = davis()
    return replace(
        cfg,
        data=replace(
            cfg.data, image_size=32, image_width=64, stills="generated", still_fraction=1.0, **data
        ),
        train=replace(cfg.train, batch_size=4, steps=2, seed=0),
    )


def test_object_ids_keep_things_only_compact_and_cap_the_smallest():
    # classes: 1 stuff, 2 and 3 things; ids as decode_label_map gives them (compact, all segments)
    cls = np.array([[1, 1, 2, 2], [1, 3, 3, 2], [0, 3, 1, 1]])
    ids = np.array([[1, 1, 2, 2], [1, 3, 3, 2], [0, 3, 4, 4]])
    label = np.stack([cls, ids], axis=-1)
    isthing = (False, False, True, True)
    want = np.array([[0, 0, 1, 1], [0, 2, 2, 1], [0, 2, 0, 0]])
    assert np.array_equal(object_ids(label, isthing, 8), want)
    # K = 2 leaves one id: the larger thing (3 pixels each: the tie keeps the lower id)
    assert np.array_equal(object_ids(label, isthing, 2), np.where(want == 1, 1, 0))
    everything = np.stack([np.full((2, 2), 2), np.array([[1, 1], [2, 2]])], axis=-1)
    assert np.array_equal(object_ids(everything, isthing, 8), [[1, 1], [2, 2]])


def test_shift_ids_moves_and_fills_with_zero():
    ids = np.arange(1, 13).reshape(3, 4)
    assert np.array_equal(shift_ids(ids, 1, -1), [[0, 0, 0, 0], [2, 3, 4, 0], [6, 7, 8, 0]])
    assert np.array_equal(shift_ids(ids, -2, 2), [[0, 0, 9, 10], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert np.array_equal(shift_ids(ids, 0, 0), ids)
    assert not shift_ids(ids, 3, 0).any()


def test_moving_clip_is_straight_line_motion_oldest_first():
    target = np.zeros((9, 9), np.uint8)
    target[4, 4] = 1
    clip = moving_clip(target, 3, 2, np.random.default_rng(5))
    dy, dx = np.random.default_rng(5).integers(-2, 3, size=2)
    assert clip.shape == (3, 9, 9) and np.array_equal(clip[-1], target)
    assert np.argwhere(clip[1]).tolist() == [[4 + dy, 4 + dx]]
    assert np.argwhere(clip[0]).tolist() == [[4 + 2 * dy, 4 + 2 * dx]]
    assert all(
        np.array_equal(f, target) for f in moving_clip(target, 3, 0, np.random.default_rng(1))
    )


def test_is_still_draw_is_a_function_of_seed_and_position():
    pos = np.arange(4000)
    got = is_still(pos, 0, 0.3)
    assert 0.27 < got.mean() < 0.33
    assert np.array_equal(is_still(pos[1234:1240], 0, 0.3), got[1234:1240])  # any batching
    assert not np.array_equal(is_still(pos, 1, 0.3), got)
    assert not is_still(pos, 0, 0.0).any() and is_still(pos, 0, 1.0).all()


def test_still_clip_decodes_things_at_the_model_geometry(stills):
    cfg = video_cfg()
    row = {**stills.rows[0], "epoch": 0}
    image, hw, ids = still_clip(row, 0, stills, cfg, (16, 32), 3)
    assert image.shape == (32, 64, 3) and image.dtype == np.uint8 and ids.shape == (3, 16, 32)
    assert hw[0] <= 32 and hw[1] <= 64 and (hw == (32, 64)).any()
    assert ids[-1].max() >= 1  # the generated images have things
    again = still_clip(row, 0, stills, cfg, (16, 32), 3)
    assert all(np.array_equal(a, b) for a, b in zip(again, (image, hw, ids)))


def test_still_clip_of_a_large_image_is_cached_small_and_unchanged(stills, monkeypatch):
    from pix2seqd.platform.data import still_clips
    from pix2seqd.platform.data.frame_cache import ByteLRU

    cfg = video_cfg(rgb_symmetry=False)
    cfg = replace(cfg, data=replace(cfg.data, image_size=16, image_width=16))  # 40-56 px stills
    row, cache = {**stills.rows[1], "epoch": 0}, ByteLRU(64_000_000)
    got = still_clip(row, 0, stills, cfg, (8, 8), 3, cache)
    (((image, ids), _),) = cache._items.values()
    assert max(image.shape[:2]) == 16 and ids.shape == image.shape[:2]
    monkeypatch.setattr(still_clips, "reduce_to_reach", lambda image, ids, *_: (image, ids))
    want = still_clip(row, 0, stills, cfg, (8, 8), 3)
    assert all(np.array_equal(a, b) for a, b in zip(got, want))


def test_decoder_mixes_still_and_video_clips_by_position(videos, stills):
    cfg = override(video_cfg(), {"data.still_fraction": 0.5, "data.id_order": "raster"})
    dec = ClipDecoder(cfg, videos, clip_index(videos), stills=stills)
    out = dec({"id": np.arange(4)})
    still = is_still(np.arange(4), 0, 0.5)
    assert still.any() and not still.all()  # seed 0 draws both kinds in this batch
    for k in range(4):
        one = dec({"id": np.array([k])})  # the same example whatever the batch
        assert all(np.array_equal(one[key][0], out[key][k]) for key in out)
        frames = np.concatenate([out["cond_mask"][k], out["mask"][k][None]])[..., 1]
        ids = frames[frames > 0]
        assert np.array_equal(np.unique(ids), np.arange(1, len(np.unique(ids)) + 1))  # raster 1..N
        assert not out["mask"][k][..., 0].any()  # class channel 0, as DAVIS clips
    # a still clip's earlier masks are its target moved along one line
    k = int(np.argmax(still))
    cond, target = out["cond_mask"][k][..., 1], out["mask"][k][..., 1]
    assert any(
        np.array_equal(shift_ids(target, dy, dx), cond[1])
        and np.array_equal(shift_ids(target, 2 * dy, 2 * dx), cond[0])
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )


def test_still_fraction_needs_still_images(videos):
    cfg = video_cfg()
    with pytest.raises(ValueError, match="data.still_fraction=1.0 needs still images"):
        ClipDecoder(cfg, videos, clip_index(videos), stills=None)
    with pytest.raises(ValueError, match="needs data.stills"):
        validate_video_config(override(cfg, {"data.stills": ""}))
    with pytest.raises(ValueError, match=r"data.still_fraction=1.5 must be in \[0, 1\]"):
        validate_video_config(override(cfg, {"data.still_fraction": 1.5}))
    with pytest.raises(ValueError, match="data.still_shift=-1 must be >= 0"):
        validate_video_config(override(cfg, {"data.still_shift": -1}))


def test_load_stills_reads_the_split_and_names_a_missing_root(ray_session, coco_root, tmp_path):
    cfg = override(video_cfg(), {"data.stills": str(coco_root)})
    source = load_stills(cfg)
    assert len(source.rows) == 6 and source.cmap.isthing.count(True) > 0
    assert load_stills(override(cfg, {"data.still_fraction": 0.0})) is None
    with pytest.raises(FileNotFoundError, match="missing"):
        load_stills(override(cfg, {"data.stills": str(tmp_path / "missing")}))
