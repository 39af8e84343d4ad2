"""Bad DAVIS data against a real local Ray (and, for the jobs, a real MLflow server): a
truncated frame stops train_davis before its run opens, naming the file; with --skip-bad
its video is left out and counted, and a frame that goes bad after the checks is skipped
in the middle of the stream and counted in `data/skipped`; a video with K objects is voided
and counted alike by prepare_data and by the training loader."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from helpers_jobs import load_job
from PIL import Image

from pix2seqd.platform.config import override
from pix2seqd.platform.data.davis import load_davis, read_davis_mask
from pix2seqd.platform.data.prepare import prepare_dataset
from pix2seqd.platform.data.video_pipeline import read_clip
from pix2seqd.platform.presets import as_video, tiny
from pix2seqd.platform.synthetic.davis import davis_palette, make_davis
from pix2seqd.platform.train import run_davis
from pix2seqd.platform.train.inputs import load_video_inputs
from pix2seqd.platform.train.video_task import VideoTask

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

SETS = [
    "train.batch_size=2",
    "train.log_every=1",
    "data.image_size=32",
    "data.still_fraction=0",
    "sample.steps=2",
    "sample.later_steps=1",
    "eval.every_steps=0",
]


def truncate(path, keep=0.4):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def job_args(root, storage, name, sets):
    args = ["--data-root", str(root), "--storage-path", str(storage), "--run-name", name]
    return args + [x for s in SETS + sets for x in ("--set", s)]


def runs_named(mlc, name):
    exp = mlc.get_experiment_by_name("pix2seqd")
    return mlc.search_runs([exp.experiment_id], f"attributes.run_name = '{name}'") if exp else []


def test_fault_data_truncated_frame_stops_train_davis_before_its_run(
    ray_session, mlflow_server, tmp_path, monkeypatch
):
    import mlflow.tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    root = make_davis(tmp_path / "davis", 4, 2, 1, 40, 48)
    bad = load_davis(root, "train")[1].frames[3]
    truncate(bad)
    args = job_args(root, tmp_path / "ray", "fault-data-stop", ["train.steps=4"])
    with pytest.raises(ValueError, match=re.escape(str(bad))) as err:
        load_job("train_davis").main(args)
    assert "cannot decode image" in str(err.value) and "--skip-bad" in str(err.value)
    assert runs_named(mlflow.tracking.MlflowClient(mlflow_server), "fault-data-stop") == []


@pytest.fixture(scope="module")
def skipping_run(ray_session, mlflow_server, tmp_path_factory):
    """train_davis --skip-bad on two videos: video 0 has a truncated frame before the run
    (left out by the checks), a frame of video 1 is truncated after the checks passed (a
    disk fault mid-run). The run reads 2 epochs of video 1's clips at batch 2."""
    import mlflow.tracking

    tmp = tmp_path_factory.mktemp("skipping")
    root = make_davis(tmp / "davis", 6, 2, 1, 40, 48)
    before, during = load_davis(root, "train")
    truncate(before.frames[3])
    clips = len(during.frames) - 2  # clips of 3 frames; frame 5 ends the clip starting at 3

    class GoesBadAfterChecks(VideoTask):
        @classmethod
        def load(cls, cfg, tmp):
            task = super().load(cfg, tmp)
            truncate(during.frames[5])
            return task

    args = job_args(
        root,
        tmp / "ray",
        "fault-data-skip",
        [f"train.steps={clips}", f"train.checkpoint_every={clips}"],
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        mp.setattr(run_davis, "VideoTask", GoesBadAfterChecks)
        summary = load_job("train_davis").main(args + ["--skip-bad"])
    mlc = mlflow.tracking.MlflowClient(mlflow_server)
    return mlc, mlc.get_run(summary["mlflow_run_id"]), before, clips, tmp


def test_fault_data_skip_bad_leaves_the_video_out_and_counts_it(skipping_run):
    mlc, run, before, _, tmp = skipping_run
    assert run.info.status == "FINISHED"
    assert run.data.metrics["data/bad_videos"] == 1 and run.data.metrics["data/bad_frames"] == 1
    path = mlc.download_artifacts(run.info.run_id, "data/validation_report.json", str(tmp))
    report = json.loads(open(path).read())["splits"]["train"]
    assert report["bad_videos"] == [before.name]
    assert [b["image_id"] for b in report["bad"]] == [f"{before.name}/{before.frames[3].name}"]
    assert str(before.frames[3]) in report["bad"][0]["problem"]


def test_fault_data_mid_stream_skip_counted_in_data_skipped(skipping_run):
    mlc, run, _, clips, _ = skipping_run
    skipped = sorted(mlc.get_metric_history(run.info.run_id, "data/skipped"), key=lambda m: m.step)
    # the bad clip once in each of the 2 epochs; the last step took the stream's last
    # example, so every skip was counted by then
    assert [m.value for m in skipped] == sorted(m.value for m in skipped)
    assert skipped[-1].value == 2
    # 2 epochs of clips less the 2 skipped, at batch 2
    assert len(mlc.get_metric_history(run.info.run_id, "train/loss")) == clips - 1


def save_ids(path, ids):
    im = Image.fromarray(ids.astype(np.uint8), "P")
    im.putpalette(davis_palette())
    im.save(path)


def test_fault_data_k_objects_voided_alike_by_prepare_data_and_training(ray_session, tmp_path):
    root = make_davis(tmp_path / "davis", 2, 1, 1, 40, 48)
    (video,) = load_davis(root, "train")
    masks = [read_davis_mask(m) for m in video.masks]
    k = max(int(m[m != 255].max()) for m in masks) + 1  # the new object makes K objects
    ids = masks[4]
    free = (ids[:-1, :-1] == 0) & (ids[1:, :-1] == 0) & (ids[:-1, 1:] == 0) & (ids[1:, 1:] == 0)
    y, x = (int(v[0]) for v in np.nonzero(free))
    ids[y : y + 2, x : x + 2] = k  # 2 x 2 pixels of background: the smallest object
    save_ids(video.masks[4], ids)

    out = tmp_path / "prep"
    prepared = prepare_dataset("davis", root, str(out), max_instances=k)["splits"]["train"]
    cfg = override(as_video(tiny()), {"model.max_instances": k, "data.still_fraction": 0.0})
    raw = load_video_inputs(override(cfg, {"data.root": str(root)}), tmp_path / "a")
    shards = load_video_inputs(override(cfg, {"data.prepared": str(out)}), tmp_path / "b")
    assert (prepared["voided_segments"], prepared["images_with_voided"]) == (1, 1)
    for inputs in (raw, shards):
        assert inputs.metrics["data/voided_segments"] == 1
        assert inputs.metrics["data/images_with_voided"] == 1
        assert inputs.train[0].kept_ids == tuple(range(1, k))
    clip = read_clip(raw.train[0], 2, 3, k)[1]
    assert np.array_equal(clip, read_clip(shards.train[0], 2, 3, k)[1])
    assert (clip[y : y + 2, x : x + 2, 2] == 0).all()
    before = np.stack(masks[2:5], axis=-1)  # the other objects keep their ids, void is 0
    before[y : y + 2, x : x + 2, 2] = 0
    assert np.array_equal(clip, np.where(before == 255, 0, before))
