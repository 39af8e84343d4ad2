"""`data.vflip` and `data.rgb_symmetry` (transforms.symmetry_augment): the draws, that image
and labels move together, and that the image and clip decoders apply them."""

from dataclasses import replace
from itertools import permutations

import numpy as np
import pytest
from helpers_ckpt import tiny_at_64

from pix2seqd.platform.config import IdOrder
from pix2seqd.platform.data.coco_panoptic import load_coco_panoptic, record_item
from pix2seqd.platform.data.davis import load_davis
from pix2seqd.platform.data.pipeline import TrainDecoder
from pix2seqd.platform.data.transforms import raster_order_ids, symmetry_augment
from pix2seqd.platform.data.video_pipeline import ClipDecoder, clip_index
from pix2seqd.platform.presets import PRESETS, as_video, davis
from pix2seqd.platform.synthetic.coco import make_coco
from pix2seqd.platform.synthetic.davis import make_davis

# the 48 symmetries of the RGB cube, as (permutation, inverted channels)
CUBE = [(p, tuple(int(b) for b in f"{k:03b}")) for p in permutations(range(3)) for k in range(8)]


def apply_cube(image, perm, inverted):
    out = image[..., list(perm)].astype(np.int16)
    return np.where(np.array(inverted, bool), 255 - out, out)


def cube_map_of(before, after):
    """The symmetries that turn `before` into `after` (within 1 for resampling)."""
    return [m for m in CUBE if np.abs(apply_cube(before, *m) - after).max() <= 1]


def test_off_draws_nothing_and_copies_nothing_visible():
    rng = np.random.default_rng(5)
    image = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    labels = np.arange(8).reshape(2, 4)
    out_image, out_labels = symmetry_augment(image, labels, False, False, rng)
    assert np.array_equal(out_image, image) and np.array_equal(out_labels, labels)
    assert rng.random() == np.random.default_rng(5).random()  # no draw consumed


def test_vflip_reverses_rows_of_image_and_every_label_frame_together():
    image = np.random.default_rng(0).integers(0, 256, (5, 3, 3), dtype=np.uint8)
    labels = np.arange(5 * 3 * 2).reshape(5, 3, 2)  # (H, W, T)
    image.flags.writeable = labels.flags.writeable = False  # cached inputs are never written
    flipped = 0
    for seed in range(40):
        out_image, out_labels = symmetry_augment(
            image, labels, True, False, np.random.default_rng(seed)
        )
        assert out_image.flags.c_contiguous and out_labels.flags.c_contiguous
        if np.array_equal(out_labels, labels):
            assert np.array_equal(out_image, image)
        else:
            assert np.array_equal(out_labels, labels[::-1])
            assert np.array_equal(out_image, image[::-1])
            flipped += 1
    assert 10 <= flipped <= 30


def test_rgb_symmetry_draws_the_48_cube_maps_uniformly_labels_untouched():
    image = np.array([[[10, 100, 200], [0, 255, 37]]], np.uint8)  # distinct channels
    labels = np.array([[1, 2]])
    image.flags.writeable = False
    counts = dict.fromkeys(CUBE, 0)
    for seed in range(4800):
        out_image, out_labels = symmetry_augment(
            image, labels, False, True, np.random.default_rng(seed)
        )
        assert np.array_equal(out_labels, labels) and out_image.dtype == np.uint8
        (found,) = cube_map_of(image, out_image)
        counts[found] += 1
    assert min(counts.values()) >= 60 and max(counts.values()) <= 140  # 100 expected each
    # the cube's distances are kept: the generator's contrast rules still hold
    a, b = image[0].astype(float)
    for m in CUBE:
        c, d = apply_cube(image, *m)[0].astype(float)
        assert np.isclose(np.linalg.norm(a - b), np.linalg.norm(c - d))


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    make_coco(root, seed=2, n_train=4, n_val=1, min_size=40, max_size=70)
    return load_coco_panoptic(root, "train2017")


def decode(coco, epochs, **data):
    recs, cmap = coco
    cfg = replace(tiny_at_64(), data=replace(tiny_at_64().data, hflip=False, **data))
    rows = [record_item(r, epoch=e) for r in recs for e in range(epochs)]
    return TrainDecoder(cfg, cmap)(
        {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    )


def test_image_decoder_rgb_symmetry_recolours_the_image_only(coco):
    plain = decode(coco, 6, vflip=False, rgb_symmetry=False)
    recoloured = decode(coco, 6, vflip=False, rgb_symmetry=True)
    assert np.array_equal(plain["mask"], recoloured["mask"])  # same geometry
    maps = set()
    for before, after, (h, w) in zip(plain["image"], recoloured["image"], plain["hw"]):
        found = cube_map_of(before[:h, :w], after[:h, :w])
        assert found, "the augmented image is no RGB-cube map of the plain one"
        maps.add(found[0])
        assert not after[h:].any() and not after[:, w:].any()  # padding stays 0
    assert len(maps) > 4


def test_image_decoder_vflip_flips_image_and_mask_together(coco):
    plain = decode(coco, 6, vflip=False, rgb_symmetry=False, id_order=IdOrder.RANDOM)
    flipped = decode(coco, 6, vflip=True, rgb_symmetry=False, id_order=IdOrder.RANDOM)
    seen = set()
    for k, (h, w) in enumerate(plain["hw"]):
        hm, wm = h // 4, w // 4
        classes = plain["mask"][k, :hm, :wm, 0], flipped["mask"][k, :hm, :wm, 0]
        same = (classes[0] == classes[1]).mean()
        upside_down = (classes[0][::-1] == classes[1]).mean()
        assert max(same, upside_down) > 0.9  # nearest resampling may move a row
        image = plain["image"][k, :h, :w].astype(int), flipped["image"][k, :h, :w].astype(int)
        up = same > upside_down
        assert np.abs((image[0] if up else image[0][::-1]) - image[1]).mean() < 2
        seen.add(up)
    assert seen == {True, False}


def test_clip_decoder_flips_the_target_and_its_history_together(tmp_path):
    # 32 x 32 frames on a 32 x 32 canvas at mask stride 1: no resampling, so exact
    videos = load_davis(
        make_davis(tmp_path, seed=0, n_train=2, n_val=0, min_size=32, max_size=32), "train"
    )
    base = davis()

    def frames(vflip, clip, epoch):
        cfg = replace(
            base,
            model=replace(base.model, mask_stride=1),
            data=replace(
                base.data,
                image_size=32,
                image_width=0,
                hflip=False,
                vflip=vflip,
                id_order=IdOrder.RASTER,
            ),
        )
        ex = ClipDecoder(cfg, videos, clip_index(videos)).example(clip, epoch)
        return np.concatenate([ex.cond_mask, ex.mask[None]])[..., 1], ex.image

    seen = set()
    for clip in clip_index(videos)[:4]:
        for epoch in range(3):
            (plain, image), (got, got_image) = frames(False, clip, epoch), frames(True, clip, epoch)
            assert plain.shape == (3, 32, 32) and plain.any()
            if np.array_equal(got, plain):
                assert np.array_equal(got_image, image)
                seen.add("up")
            else:  # every frame upside down, ids in the raster order of the flipped clip
                assert np.array_equal(got, raster_order_ids(plain[:, ::-1]))
                assert np.array_equal(got_image, image[::-1])
                seen.add("down")
    assert seen == {"up", "down"}


def test_only_the_tiny_preset_turns_them_on():
    assert tiny_at_64().data.vflip and tiny_at_64().data.rgb_symmetry
    assert as_video(tiny_at_64()).data.vflip and as_video(tiny_at_64()).data.rgb_symmetry
    for name, make in PRESETS.items():
        if name != "tiny":  # photos: the sky is not below, colours are not inverted
            assert not make().data.vflip and not make().data.rgb_symmetry, name
