"""prepare_data --dataset davis: frame shards with the raw bytes, per-video index, and bad
frames that stop the job (report written) or drop their video with --skip-bad."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from pix2seqd.platform.data.davis import load_davis
from pix2seqd.platform.data.prepare import prepare_dataset
from pix2seqd.platform.synthetic.davis import make_davis

pytestmark = pytest.mark.ray


@pytest.fixture()
def davis(tmp_path):
    make_davis(tmp_path / "davis", seed=0, n_train=2, n_val=1)
    return tmp_path / "davis"


def _index(out, split):
    return json.loads((out / split / "_index.json").read_text())


def test_frames_land_in_shards_with_their_bytes(ray_session, davis, tmp_path):
    out = tmp_path / "prep"
    report = prepare_dataset("davis", davis, str(out), rows_per_shard=5, max_instances=16)
    videos = load_davis(davis, "train")
    n_frames = sum(len(v.frames) for v in videos)
    assert (
        report["splits"]["train"]["n_records"] == n_frames
        and report["splits"]["train"]["n_bad"] == 0
    )
    index = _index(out, "train")
    assert [v["name"] for v in index["videos"]] == [v.name for v in videos]
    assert len(list((out / "train").glob("shard-*.parquet"))) == -(-n_frames // 5)
    for video, entry in zip(videos, index["videos"]):
        assert [f["file_name"] for f in entry["frames"]] == [p.name for p in video.frames]
        last = entry["frames"][-1]
        table = pq.ParquetFile(out / "train" / last["shard"]).read_row_group(last["row"])
        row = table.to_pylist()[0]
        assert (
            row["image"] == video.frames[-1].read_bytes()
            and row["mask"] == video.masks[-1].read_bytes()
        )
        assert row["video"] == video.name and row["frame"] == len(video.frames) - 1


def test_truncated_frame_stops_or_drops_its_video(ray_session, davis, tmp_path):
    video = load_davis(davis, "train")[1]
    data = video.frames[2].read_bytes()
    video.frames[2].write_bytes(data[: len(data) // 3])
    out = tmp_path / "prep"
    with pytest.raises(ValueError, match=f"{video.name}/{video.frames[2].name}") as err:
        prepare_dataset("davis", davis, str(out), rows_per_shard=5, max_instances=16)
    assert "cannot decode image" in str(err.value)
    assert json.loads((out / "validation_report.json").read_text())["splits"]["train"]["n_bad"] == 1
    assert not (out / "train" / "_index.json").exists()
    prepare_dataset("davis", davis, str(out), rows_per_shard=5, max_instances=16, skip_bad=True)
    index = _index(out, "train")
    assert index["skipped_videos"] == [video.name]
    assert video.name not in [v["name"] for v in index["videos"]] and len(index["videos"]) == 1


def test_clips_from_shards_equal_clips_from_files(ray_session, davis, tmp_path):
    from dataclasses import replace

    from pix2seqd.platform.data.prepare_davis import load_prepared_davis
    from pix2seqd.platform.data.video_pipeline import ClipDecoder, clip_index
    from pix2seqd.platform.presets import davis as davis_preset

    out = tmp_path / "prep"
    prepare_dataset("davis", davis, str(out), splits=["train"], rows_per_shard=5, max_instances=16)
    raw, shards = load_davis(davis, "train"), load_prepared_davis(str(out), "train")
    assert [v.name for v in shards] == [v.name for v in raw]
    assert [len(v.frames) for v in shards] == [len(v.frames) for v in raw]
    cfg = davis_preset()
    cfg = replace(
        cfg,
        data=replace(cfg.data, image_size=32, image_width=64),
        train=replace(cfg.train, batch_size=4, steps=3, seed=1),
    )
    ids = {"id": np.arange(12)}
    a = ClipDecoder(cfg, raw, clip_index(raw))(ids)
    b = ClipDecoder(cfg, shards, clip_index(shards))(ids)
    for key in ("image", "hw", "mask", "cond_mask"):
        assert np.array_equal(a[key], b[key]), key
