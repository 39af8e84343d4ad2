"""Bad data met before or during training, without Ray: each bad DAVIS frame is named with
its file and makes its video unusable; a video with more objects than K-1 keeps its largest
and the rest are void and counted; an example that fails to decode in the middle of a
stream (image or video) is left out and its key handed to the skip counter."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_ckpt import tiny_at_64
from PIL import Image

from pix2seqd.platform.config import override
from pix2seqd.platform.data.coco_panoptic import load_coco_panoptic, record_item
from pix2seqd.platform.data.davis import id_table, kept_objects, load_davis, read_davis_mask
from pix2seqd.platform.data.pipeline import TrainDecoder
from pix2seqd.platform.data.validate_davis import FrameCheck, frame_check_batch, review
from pix2seqd.platform.data.video_pipeline import ClipDecoder, clip_index, read_clip
from pix2seqd.platform.presets import as_video
from pix2seqd.platform.synthetic.coco import make_coco
from pix2seqd.platform.synthetic.davis import davis_palette, make_davis


@pytest.fixture()
def davis(tmp_path):
    return make_davis(tmp_path / "davis", seed=1, n_train=2, n_val=0, min_size=40, max_size=48)


def checks_of(videos):
    """The per-frame checks the Ray tasks run (`validate_davis.validate_videos`), in process."""
    items = [(v.name, str(f), str(m)) for v in videos for f, m in zip(v.frames, v.masks)]
    cols = frame_check_batch(
        {k: np.array([it[j] for it in items], dtype=object) for j, k in enumerate(ITEM_KEYS)}
    )
    return [FrameCheck.from_row({k: cols[k][i] for k in cols}) for i in range(len(items))]


ITEM_KEYS = ("video", "image_path", "mask_path")


def truncate(path, keep=0.4):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def save_ids(path, ids):
    im = Image.fromarray(ids.astype(np.uint8), "P")
    im.putpalette(davis_palette())
    im.save(path)


def add_small_object(video, frame):
    """Paint a new object of 2 x 2 pixels on background in one frame's annotation; returns
    its id and its pixels (rows, cols)."""
    masks = [read_davis_mask(m) for m in video.masks]
    new_id = max(int(m[m != 255].max()) for m in masks) + 1
    ids = masks[frame]
    free = (ids[:-1, :-1] == 0) & (ids[1:, :-1] == 0) & (ids[:-1, 1:] == 0) & (ids[1:, 1:] == 0)
    y, x = (int(v[0]) for v in np.nonzero(free))
    ids[y : y + 2, x : x + 2] = new_id
    save_ids(video.masks[frame], ids)
    return new_id, (slice(y, y + 2), slice(x, x + 2))


def test_fault_data_truncated_frame_names_its_file_and_its_video(davis):
    videos = load_davis(davis, "train")
    bad = videos[1].frames[4]
    truncate(bad)
    good, report = review("train", videos, checks_of(videos), 16)
    assert [v.name for v in good] == [videos[0].name]
    assert report.bad_videos == (videos[1].name,)
    assert [i for i, _ in report.bad] == [f"{videos[1].name}/{bad.name}"]
    assert str(bad) in report.bad[0][1] and "cannot decode image" in report.bad[0][1]
    assert report.n_frames == sum(len(v.frames) for v in videos) and report.n_videos == 2
    assert str(bad) in report.error() and "--skip-bad" in report.error()
    assert report.metrics()["data/bad_videos"] == 1.0


@pytest.mark.parametrize("case", ["rgb_mask", "corrupt_png", "mask_size", "frame_size"])
def test_fault_data_each_bad_frame_is_named(davis, case):
    video = load_davis(davis, "train")[0]
    frame, mask = video.frames[2], video.masks[2]
    with Image.open(frame) as im:
        image = np.asarray(im)
    if case == "rgb_mask":
        Image.fromarray(np.zeros(image.shape, np.uint8)).save(mask)
        named, phrase = mask, "must be a palette PNG, got mode RGB"
    elif case == "corrupt_png":
        mask.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a png" * 20)
        named, phrase = mask, "cannot read annotation PNG"
    elif case == "mask_size":
        save_ids(mask, np.zeros((image.shape[0] + 2, image.shape[1]), np.uint8))
        named, phrase = mask, "differs from frame"
    else:  # both files of one frame agree, but not with the video's other frames
        Image.fromarray(image[:-3]).save(frame)
        save_ids(mask, read_davis_mask(mask)[:-3])
        named, phrase = frame, "the frames of a video must have one size"
    _, report = review("train", [video], checks_of([video]), 16)
    assert report.bad_videos == (video.name,) and len(report.bad) == 1
    assert str(named) in report.bad[0][1] and phrase in report.bad[0][1], report.bad[0][1]


def test_fault_data_kept_objects_are_the_largest():
    areas = {1: 50, 2: 7, 3: 50, 4: 9, 6: 100}
    assert kept_objects(areas, 4) == (1, 3, 6)  # 2 and 4 are the smallest
    assert kept_objects({1: 5, 2: 5, 3: 5}, 3) == (1, 2)  # a tie keeps the lower id
    assert kept_objects({1: 5, 2: 1}, 3) == ()  # ids within K-1: as they are
    assert kept_objects({1: 5, 9: 1}, 4) == (1, 9)  # ids beyond K-1, not more objects
    table = id_table((1, 3, 6))
    assert table[[0, 1, 2, 3, 4, 5, 6, 255]].tolist() == [0, 1, 255, 2, 255, 255, 3, 255]


def test_fault_data_k_objects_smallest_voided_and_counted(davis):
    video = load_davis(davis, "train")[0]
    new_id, where = add_small_object(video, 5)
    totals = np.bincount(np.concatenate([read_davis_mask(m).ravel() for m in video.masks]))
    objects = [i for i in np.flatnonzero(totals) if i not in (0, 255)]
    assert len(objects) == new_id and min(objects, key=lambda i: totals[i]) == new_id
    k = new_id  # K objects: one more than the model can represent
    with pytest.raises(ValueError, match="allows ids up to"):
        read_clip(video, 3, 3, k)  # read as they are, the ids do not fit
    (kept,), report = review("train", [video], checks_of([video]), k)
    assert kept.kept_ids == tuple(range(1, new_id))
    assert (report.voided_segments, report.images_with_voided) == (1, 1)
    raw = np.stack([read_davis_mask(m) for m in video.masks[3:6]], axis=-1)
    _, ids = read_clip(kept, 3, 3, k)
    assert (ids[where + (2,)] == 0).all()
    others = ~np.isin(raw, [new_id])
    assert np.array_equal(ids[others], np.where(raw == 255, 0, raw)[others])


def test_fault_data_clip_skips_reach_the_counter(davis):
    videos = load_davis(davis, "train")
    truncate(videos[1].frames[6])  # the last frame of the clip starting at 4
    cfg = override(
        as_video(tiny_at_64()),
        {"data.skip_bad": True, "data.still_fraction": 0.0, "data.image_size": 32},
    )
    clips = clip_index(videos, cfg.model.decoder.cond_frames + 1)
    cfg = override(cfg, {"train.batch_size": 1, "train.steps": 2 * len(clips)})
    keys: list[str] = []
    out = ClipDecoder(cfg, videos, clips, on_skip=keys.extend)({"id": np.arange(2 * len(clips))})
    assert sorted(keys) == [f"{e}/{videos[1].name}/4" for e in (0, 1)]
    assert len(out["image"]) == 2 * len(clips) - 2


def test_fault_data_image_skips_reach_the_counter(tmp_path):
    root = make_coco(tmp_path / "coco", seed=3, n_train=4, n_val=0, min_size=32, max_size=40)
    recs, cmap = load_coco_panoptic(root, "train2017")
    truncate(recs[2].image_path)
    cfg = override(tiny_at_64(), {"data.skip_bad": True, "train.batch_size": 1, "train.steps": 12})
    keys: list[str] = []
    rows = [record_item(r) for r in recs]
    out = TrainDecoder(cfg, cmap, rows, on_skip=keys.extend)({"id": np.arange(12)})
    assert sorted(keys) == [f"{e}/{recs[2].image_id}" for e in (0, 1, 2)]
    assert len(out["image"]) == 9
