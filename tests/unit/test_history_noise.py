"""History noise (`data.history_drop`, `data.history_add`): conditioning masks with the
errors of a model's own predictions; what is erased or added, where, and how often."""

from dataclasses import replace

import numpy as np
import pytest

from pix2seqd.platform.config import IdOrder, override
from pix2seqd.platform.data.davis import load_davis
from pix2seqd.platform.data.history_noise import add_false_object, erase_objects, history_noise
from pix2seqd.platform.data.video_pipeline import ClipDecoder, clip_index
from pix2seqd.platform.presets import davis
from pix2seqd.platform.synthetic.davis import make_davis
from pix2seqd.platform.train.run_davis import validate_video_config


def clip():
    """3 frames of 6 x 6, oldest first: objects 1 and 2 in the history, 1 and 3 in the target."""
    ids = np.zeros((3, 6, 6), np.uint8)
    ids[0, :2, :2] = 1
    ids[1, :2, 1:3] = 1
    ids[:2, 4:, 4:] = 2
    ids[2, :2, 2:4] = 1
    ids[2, 3:, :2] = 3
    return ids


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return load_davis(make_davis(tmp_path_factory.mktemp("davis"), 0, 3, 0, 32, 48), "train")


def video_cfg(**data):
    cfg = davis()
    return replace(
        cfg,
        data=replace(cfg.data, image_size=32, image_width=64, id_order=IdOrder.RASTER, **data),
        train=replace(cfg.train, batch_size=4, steps=2, seed=0),
    )


def test_erase_takes_objects_out_of_the_history_only():
    ids = clip()
    assert np.array_equal(erase_objects(ids, 0.0, np.random.default_rng(0)), ids)
    erased = erase_objects(ids, 1.0, np.random.default_rng(0))
    assert not erased[:2].any() and np.array_equal(erased[2], ids[2])
    # one draw per history object, in id order: rng 0 draws 0.637, 0.270 -> object 2 only at 0.5
    assert np.round(np.random.default_rng(0).random(2), 3).tolist() == [0.637, 0.270]
    half = erase_objects(ids, 0.5, np.random.default_rng(0))
    assert set(np.unique(half[:2])) == {0, 1} and np.array_equal(half[2], ids[2])
    assert np.array_equal(ids, clip())  # the input is not modified


def test_false_object_is_a_new_id_on_the_history_background():
    ids = clip()
    noisy = add_false_object(ids, 1.0, 8, np.random.default_rng(1))
    new = noisy != ids
    assert new.any() and not new[2].any()  # history only
    assert set(np.unique(noisy[new])) == {4}  # one more than the largest id
    assert not ids[new].any()  # painted on background only: objects 1 and 2 are untouched
    assert np.array_equal(new[0], new[1])  # the same static blob in every history frame
    assert np.array_equal(add_false_object(ids, 0.0, 8, np.random.default_rng(1)), ids)
    # no id left: K = 4 allows ids 1..3 and the clip has 3 objects
    assert np.array_equal(add_false_object(ids, 1.0, 4, np.random.default_rng(1)), ids)


def test_rates_zero_draw_nothing_and_rates_are_frequencies():
    rng, ids = np.random.default_rng(0), clip()
    assert history_noise(ids, 0.0, 0.0, 8, rng) is ids
    assert rng.random() == np.random.default_rng(0).random()  # nothing drawn
    rng = np.random.default_rng(11)
    erased = added = 0
    for _ in range(2000):
        noisy = history_noise(clip(), 0.2, 0.3, 8, rng)
        erased += 2 - len(set(np.unique(noisy[:2])) & {1, 2})
        added += bool((noisy[:2] == 4).any())
    assert (erased, added) == (800, 559)  # pinned; expected 0.2 * 4000 = 800, 0.3 * 2000 = 600
    assert abs(erased / 4000 - 0.2) < 0.02 and abs(added / 2000 - 0.3) < 0.03


def test_decoder_erased_objects_come_back_as_new_ids_in_raster_order(videos):
    clips = clip_index(videos)
    plain = ClipDecoder(video_cfg(), videos, clips)
    dropped = ClipDecoder(video_cfg(history_drop=1.0), videos, clips)
    for c in clips[:8]:
        ex, ref = dropped.example(c, 0), plain.example(c, 0)
        assert not ex.cond_mask.any()  # every history object erased
        assert np.array_equal(ex.image, ref.image)
        # the target's objects are the same, numbered 1..N in raster order of the target alone
        target = ex.mask[..., 1]
        first = [np.flatnonzero(target.ravel() == i)[0] for i in range(1, target.max() + 1)]
        assert first == sorted(first)
        assert np.array_equal(target > 0, ref.mask[..., 1] > 0)


def test_decoder_false_objects_and_validation(videos):
    clips = clip_index(videos)
    added = ClipDecoder(video_cfg(history_add=1.0), videos, clips)
    plain = ClipDecoder(video_cfg(), videos, clips)
    extra = 0
    for c in clips[:8]:
        ex, ref = added.example(c, 0), plain.example(c, 0)
        history_ids = set(np.unique(ex.cond_mask[..., 1])) - {0}
        target_ids = set(np.unique(ex.mask[..., 1])) - {0}
        extra += len(history_ids) - len(set(np.unique(ref.cond_mask[..., 1])) - {0})
        assert len(history_ids - target_ids) >= 1  # the false object is not in the target
        assert (ex.mask[..., 1] > 0).sum() == (ref.mask[..., 1] > 0).sum()
    assert extra == 8
    with pytest.raises(ValueError, match=r"data.history_drop=1.5 must be in \[0, 1\]"):
        validate_video_config(override(video_cfg(), {"data.history_drop": 1.5}))
    with pytest.raises(ValueError, match=r"data.history_add=-0.1 must be in \[0, 1\]"):
        validate_video_config(override(video_cfg(), {"data.history_add": -0.1}))
