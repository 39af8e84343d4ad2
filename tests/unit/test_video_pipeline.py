"""DAVIS training clips (docs/model.md, "Video"): clip index, one id shuffle per clip, joint
augmentation on a non-square canvas, per-rank stream positions, bad files, model inputs."""

import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_model import tiny

from pix2seqd.models.config import DiffusionConfig, LossConfig
from pix2seqd.models.pix2seq_d import Pix2SeqD
from pix2seqd.platform.config import IdOrder
from pix2seqd.platform.data import video_pipeline
from pix2seqd.platform.data.davis import VideoRecord, load_davis, read_davis_mask
from pix2seqd.platform.data.pipeline import epoch_order
from pix2seqd.platform.data.transforms import _resize_label, clip_transform, raster_order_ids
from pix2seqd.platform.data.video_pipeline import (
    ClipDecoder,
    build_video_train_dataset,
    clip_index,
    shuffle_ids,
)
from pix2seqd.platform.presets import davis
from pix2seqd.platform.synthetic.davis import make_davis
from pix2seqd.platform.train.step import to_model_inputs

KEYS = ("image", "hw", "mask", "cond_mask")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    # 3 sequences of 13, 13 and 10 frames, 32-48 px sides
    return make_davis(
        tmp_path_factory.mktemp("davis"), seed=0, n_train=3, n_val=0, min_size=32, max_size=48
    )


@pytest.fixture(scope="module")
def videos(root):
    return load_davis(root, "train")


def video_cfg(**data):
    """The davis preset at canvas 32 x 64 (mask 16 x 32), 2 steps at batch 4."""
    cfg = davis()
    return replace(
        cfg,
        data=replace(cfg.data, image_size=32, image_width=64, **data),
        train=replace(cfg.train, batch_size=4, steps=2, seed=0),
    )


def decoder(videos, cfg=None, start=0, rank=0, world=1):
    return ClipDecoder(cfg or video_cfg(), videos, clip_index(videos), start, rank, world)


def all_frames(ex):
    """(T, Hm, Wm) ids of a ClipExample, oldest first, the target last."""
    return np.concatenate([ex.cond_mask, ex.mask[None]])[..., 1]


def test_clip_index_slides_by_one_frame_and_skips_short_videos(videos):
    fake = [VideoRecord(f"v{n}", (Path("f.jpg"),) * n, (Path("f.png"),) * n) for n in (1, 2, 3, 5)]
    assert clip_index(fake, 3) == [(2, 0), (3, 0), (3, 1), (3, 2)]
    assert clip_index(fake, 1) == [(v, f) for v, n in enumerate((1, 2, 3, 5)) for f in range(n)]
    assert [len(v.frames) for v in videos] == [13, 13, 10]
    assert len(clip_index(videos)) == 11 + 11 + 8 == 30
    assert len(clip_index(videos, 2)) == 33
    assert clip_index(videos)[11] == (1, 0)


def test_shuffle_ids_one_table_for_all_frames_zero_kept():
    ids = np.array([[[0, 1], [3, 3]], [[1, 0], [3, 0]]])  # two frames, id 2 absent
    out = shuffle_ids(ids, np.random.default_rng(1))
    assert set(np.unique(out)) == {0, 1, 3}
    assert ((out == 0) == (ids == 0)).all()
    for i in (1, 3):
        assert len(np.unique(out[ids == i])) == 1  # the same new id in both frames


def test_one_permutation_per_clip_of_the_ids_present_redrawn_each_epoch(videos, monkeypatch):
    # scale 1 and no flip: the geometry is fixed, so the identity shuffle gives the raw ids
    cfg = video_cfg(hflip=False)

    def objects(clip):
        v, f = clip
        return len(np.unique([read_davis_mask(m) for m in videos[v].masks[f : f + 3]]))

    clip = max(clip_index(videos), key=objects)
    shuffled = [decoder(videos, cfg).example(clip, e) for e in range(6)]
    monkeypatch.setattr(video_pipeline, "shuffle_ids", lambda ids, rng: ids)
    plain = all_frames(decoder(videos, cfg).example(clip, 0))
    present = sorted(set(np.unique(plain).tolist()) - {0})
    assert len(present) == 4
    tables = []
    for ex in shuffled:
        ids = all_frames(ex)
        assert (ex.mask[..., 0] == 0).all() and (ex.cond_mask[..., 0] == 0).all()
        assert ((ids == 0) == (plain == 0)).all()
        table = {}
        for i in present:
            new = np.unique(ids[plain == i])
            assert len(new) == 1  # one new id for the object in every frame
            table[i] = int(new[0])
        assert sorted(table.values()) == present  # a permutation of the ids present
        tables.append(tuple(table.values()))
    assert len(set(tables)) > 1  # redrawn per epoch


def test_raster_id_order_numbers_a_clips_objects_from_its_first_frame(videos):
    cfg = video_cfg(id_order=IdOrder.RASTER)
    for clip in clip_index(videos)[:12]:
        shuffled = all_frames(decoder(videos).example(clip, 1))
        ids = all_frames(decoder(videos, cfg).example(clip, 1))
        assert np.array_equal(ids, raster_order_ids(shuffled))  # same objects, one order
        n = len(np.unique(ids)) - 1
        first = [np.flatnonzero(ids.ravel() == i)[0] for i in range(1, n + 1)]
        assert first == sorted(first)


def stepwise_labels(labels, canvas, mask_hw, scale, hflip, rng):
    """Reference: the label chain (docs/model.md, "Training inputs") one step at a time (transforms._resize_label),
    with the random draws in clip_transform's order."""
    (H, W), (h, w) = canvas, labels.shape[:2]
    s = rng.uniform(*scale)
    r = min(s * H / h, s * W / w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    y0, x0 = int(rng.integers(0, max(0, nh - H) + 1)), int(rng.integers(0, max(0, nw - W) + 1))
    lab = _resize_label(labels, nh, nw)[y0 : y0 + H, x0 : x0 + W]
    if hflip and rng.random() < 0.5:
        lab = lab[:, ::-1]
    pad = np.zeros((H, W) + labels.shape[2:], labels.dtype)
    pad[: lab.shape[0], : lab.shape[1]] = lab
    return _resize_label(pad, *mask_hw)


@pytest.mark.parametrize(
    "src, canvas, mask_hw, scale",
    [
        ((48, 40), (32, 64), (16, 32), (1.0, 1.0)),  # fits by height, padded on the right
        ((37, 90), (32, 64), (16, 32), (1.0, 2.5)),  # zoom in: cropped
        ((70, 50), (24, 40), (6, 10), (0.5, 1.0)),  # zoom out, mask stride 4
        ((33, 47), (30, 45), (11, 17), (0.8, 1.6)),  # mask size not a divisor of the canvas
    ],
)
def test_composed_label_gather_equals_the_stepwise_transform(src, canvas, mask_hw, scale):
    labels = np.random.default_rng(0).integers(0, 256, size=src + (3,), dtype=np.uint8)
    image = np.zeros(src + (3,), np.uint8)
    for seed in range(8):
        _, _, got = clip_transform(
            image, labels, canvas, mask_hw, scale, 0.0, True, np.random.default_rng(seed)
        )
        want = stepwise_labels(labels, canvas, mask_hw, scale, True, np.random.default_rng(seed))
        assert np.array_equal(got, want), seed


def test_image_and_masks_share_the_geometry():
    # image and label carry the same ramps (x in channel 0, y in channel 1): after the
    # transform the image sampled at the mask pixels still matches the label there
    h, w = 45, 70
    ys, xs = np.mgrid[:h, :w]
    ramps = np.stack([xs * 255 // (w - 1), ys * 255 // (h - 1)], -1).astype(np.uint8)
    image = np.concatenate([ramps, np.zeros((h, w, 1), np.uint8)], -1)
    for seed in range(6):
        out, (vh, vw), lab = clip_transform(
            image, ramps, (32, 64), (16, 32), (1.0, 2.0), 0.0, True, np.random.default_rng(seed)
        )
        sampled = out[1::2, 1::2, :2].astype(int)  # canvas pixel of each mask pixel (stride 2)
        valid = np.zeros((16, 32), bool)
        valid[: (vh + 1) // 2, : (vw + 1) // 2] = True
        assert np.abs(sampled - lab)[valid].mean() < 4 and (lab[~valid] == 0).all()


@pytest.mark.parametrize("data", [{}, {"scale_jitter": (1.0, 1.5), "color_jitter": 0.5}])
def test_batch_shapes_and_padding_on_a_non_square_canvas(videos, data):
    out = decoder(videos, video_cfg(**data))({"id": np.arange(6)})
    assert {k: (v.shape, v.dtype) for k, v in out.items()} == {
        "image": ((6, 32, 64, 3), np.uint8),
        "hw": ((6, 2), np.int32),
        "mask": ((6, 16, 32, 2), np.uint8),
        "cond_mask": ((6, 2, 16, 32, 2), np.uint8),
    }
    for img, (h, w), m, c in zip(*(out[k] for k in KEYS)):
        assert 0 < h <= 32 and 0 < w <= 64
        if not data:
            assert h == 32 or w == 64  # scale 1: the frame fits the canvas on one side
        assert img[h:].max(initial=0) == 0 and img[:, w:].max(initial=0) == 0
        assert m[(h + 1) // 2 :].max(initial=0) == 0 and c[:, :, (w + 1) // 2 :].max(initial=0) == 0
        assert m[..., 1].max() < 16


def test_positions_per_rank_and_data_a_function_of_the_position(videos):
    ref = decoder(videos)({"id": np.arange(8)})
    ranks = [decoder(videos, rank=r, world=2) for r in (0, 1)]
    assert [d.positions(np.arange(4)).tolist() for d in ranks] == [[0, 1, 4, 5], [2, 3, 6, 7]]
    first_step = np.concatenate([d.positions(np.arange(2)) for d in ranks])
    assert sorted(first_step.tolist()) == [0, 1, 2, 3]
    outs = [d({"id": np.arange(4)}) for d in ranks]
    for d, out in zip(ranks, outs):
        pos = d.positions(np.arange(4))
        for k in KEYS:
            assert np.array_equal(out[k], ref[k][pos])
    again = ranks[0]({"id": np.arange(4)})
    assert all(np.array_equal(again[k], outs[0][k]) for k in KEYS)
    assert not np.array_equal(outs[0]["mask"], outs[1]["mask"])
    resumed = decoder(videos, start=4)({"id": np.arange(4)})
    assert all(np.array_equal(resumed[k], ref[k][4:]) for k in KEYS)
    with pytest.raises(ValueError, match="divisible by 3"):
        decoder(videos, world=3)


def test_bad_frame_is_named_and_skip_bad_skips_it(root, tmp_path, caplog):
    shutil.copytree(root, tmp_path / "d")
    videos = load_davis(tmp_path / "d", "train")
    bad = videos[0].frames[2]  # the target frame of clip (0, 0)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    cfg = video_cfg()
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(bad))}: cannot decode image .*truncated"
    ):
        decoder(videos, cfg).example((0, 0), 0)
    k = int(np.flatnonzero(epoch_order(30, 0, 0) == clip_index(videos).index((0, 0)))[0])
    ids = np.array([k, (k + 1) % 30])
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        decoder(videos, cfg)({"id": ids})
    out = decoder(videos, replace(cfg, data=replace(cfg.data, skip_bad=True)))({"id": ids})
    assert len(out["image"]) == 1 and out["cond_mask"].shape[0] == 1
    assert "skipping bad clip" in caplog.text


def test_model_inputs_carry_the_condition_and_the_video_loss_runs(videos):
    out = decoder(videos)({"id": np.arange(2)})
    batch = {k: torch.from_numpy(v) for k, v in out.items()}
    images, masks, cond = to_model_inputs(batch, "cpu", 0.3)
    assert images.shape == (2, 3, 32, 64) and masks.shape == (2, 2, 16, 32)
    assert cond.shape == (2, 2, 2, 16, 32) and cond.dtype == torch.int64
    assert torch.equal(cond[:, 1], batch["cond_mask"][:, 1].permute(0, 3, 1, 2).long())
    h, w = out["hw"][0]
    assert (images[0, :, h:] == 0.3).all() and (images[0, :, :, w:] == 0.3).all()
    assert to_model_inputs({k: batch[k] for k in ("image", "hw", "mask")}, "cpu", 0.3)[2] is None
    torch.manual_seed(0)
    model = Pix2SeqD(replace(tiny(cond_frames=2), num_classes=1), DiffusionConfig(), LossConfig())
    loss = model.loss(images, masks, cond)
    assert loss.ndim == 0 and torch.isfinite(loss)


@pytest.mark.ray
def test_rank_dataset_through_ray_data(ray_session, videos):
    cfg = video_cfg()  # 2 steps x batch 4: 4 clips per rank of 2
    ds = build_video_train_dataset(videos, cfg, rank=1, world=2)
    assert ds.context.execution_options.preserve_order
    got = {k: [] for k in KEYS}
    for b in ds.iter_batches(batch_size=3, batch_format="numpy"):
        for k in KEYS:
            got[k].append(b[k])
    want = decoder(videos, cfg, rank=1, world=2)({"id": np.arange(4)})
    for k in KEYS:
        assert np.array_equal(np.concatenate(got[k]), want[k])
