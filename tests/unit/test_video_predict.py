"""Streaming video inference pieces: batched streaming over videos of different lengths,
the per-frame small-id filter, the 20-proposal cap, and one VideoPredictor run without Ray."""

import numpy as np
import pytest
import torch
from helpers_ckpt import video_config, write_checkpoint
from PIL import Image
from test_video import video_model

from pix2seqd.models.postprocess import drop_small_ids
from pix2seqd.models.video import stream_videos
from pix2seqd.platform.data.davis import load_davis
from pix2seqd.platform.data.video_pipeline import frame_eval_input
from pix2seqd.platform.evaluation.video_predict import VideoPredictor, cap_proposals
from pix2seqd.platform.synthetic.davis import make_davis


def test_videos_of_different_lengths_stream_together_each_on_its_own_history():
    model = video_model()
    frames = torch.rand(2, 3, 3, 32, 32)
    seen = []
    original = model.sample

    def spy(images, steps, td, cond_masks=None, generator=None, stop=None):
        seen.append((images.shape[0], steps, cond_masks.clone()))
        return original(images, steps, td, cond_masks, generator, stop=stop)

    model.sample = spy
    out = list(
        stream_videos(
            model,
            lambda t, active: frames[active, t],
            [3, 1],
            4,
            2,
            1.0,
            torch.Generator().manual_seed(0),
        )
    )
    assert [(t, a) for t, a, _ in out] == [(0, [0, 1]), (1, [0]), (2, [0])]
    assert [(n, s) for n, s, _ in seen] == [(2, 4), (1, 2), (1, 2)]
    # video 0's history holds only its own predictions, oldest first
    assert torch.equal(seen[1][2][0, 1], out[0][2][0]) and seen[1][2][0, 0].abs().sum() == 0
    assert torch.equal(seen[2][2][0, 0], out[0][2][0]) and torch.equal(
        seen[2][2][0, 1], out[1][2][0]
    )


def test_small_ids_become_background():
    ids = torch.tensor([[1, 1, 2], [3, 3, 3], [0, 2, 2]])
    # id 1: 2 px, id 2: 3 px, id 3: 3 px; min 3 drops id 1 only
    assert drop_small_ids(ids, 8, 3).tolist() == [[0, 0, 2], [3, 3, 3], [0, 2, 2]]
    assert torch.equal(drop_small_ids(ids, 8, 0), ids)


def test_proposal_cap_keeps_the_largest_ids_over_the_sequence():
    a = np.zeros((2, 30), np.uint8)
    a[0, :22] = np.arange(1, 23)  # ids 1..22, one pixel each
    a[1, :3] = [5, 5, 9]  # id 5: 3 px, id 9: 2 px
    b = a.copy()
    frames = [a, b]
    assert cap_proposals(frames, 20) == 2
    kept = set(np.unique(np.concatenate([f.ravel() for f in frames]))) - {0}
    # all ids have 2 px over the two frames except 5 (6) and 9 (4); ties go to lower ids,
    # so 21 and 22 are the ones dropped
    assert kept == set(range(1, 21))
    assert cap_proposals([np.arange(21, dtype=np.uint8)[None]], 20) == 0


def test_frame_input_fits_the_canvas_keeping_the_aspect():
    image = np.full((60, 40, 3), 200, np.uint8)
    canvas, hw = frame_eval_input(image, (32, 48))
    assert canvas.shape == (32, 48, 3) and hw.tolist() == [32, 21]  # 40 * 32/60 = 21.3
    assert canvas[:, 21:].max() == 0 and canvas[:, :21].min() > 0


def test_video_predictor_writes_a_palette_png_per_frame_at_the_original_size(tmp_path):
    root = make_davis(tmp_path / "davis", 0, 0, 2, 40, 56)
    videos = load_davis(root, "val")
    ckpt = write_checkpoint(tmp_path / "ckpt", video_config())
    pred = VideoPredictor(str(ckpt), videos, str(tmp_path / "res"), 2, 1, 1.0, 0, threads=1)
    out = pred({"video": np.array([0, 1])})
    assert out["name"].tolist() == [v.name for v in videos]
    assert out["frames"].tolist() == [len(v.frames) for v in videos]
    assert (out["dropped"] == 0).all() and (out["proposals"] <= 7).all()
    for v in videos:
        for frame, mask in zip(v.frames, v.masks):
            with Image.open(tmp_path / "res" / v.name / mask.name) as im, Image.open(frame) as src:
                assert im.mode == "P" and im.size == src.size
    # the same videos one at a time give the same number of frames and files
    again = VideoPredictor(str(ckpt), videos, str(tmp_path / "res2"), 2, 1, 1.0, 0, threads=1)
    assert again({"video": np.array([1])})["frames"].tolist() == [len(videos[1].frames)]


def test_video_predictor_refuses_an_image_model(tmp_path):
    from helpers_ckpt import image_config

    root = make_davis(tmp_path / "davis", 0, 0, 1, 40, 56)
    ckpt = write_checkpoint(tmp_path / "ckpt", image_config(8))
    pred = VideoPredictor(str(ckpt), load_davis(root, "val"), str(tmp_path / "res"), 2, 1, 1.0, 0)
    with pytest.raises(ValueError, match="cond_frames"):
        pred({"video": np.array([0])})
