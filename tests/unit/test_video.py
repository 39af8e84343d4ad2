"""Streaming video sampling and training-time frame dropout (paper §3.4; docs/model.md, "Video")."""

import pytest
import torch
from helpers_model import tiny, toy_batch

from pix2seqd.models.config import DiffusionConfig, LossConfig
from pix2seqd.models.frame_dropout import drop_frames
from pix2seqd.models.pix2seq_d import Pix2SeqD
from pix2seqd.models.video import sample_video


def video_model() -> Pix2SeqD:
    torch.manual_seed(0)
    model = Pix2SeqD(tiny(cond_frames=2), DiffusionConfig(), LossConfig()).eval()
    with torch.no_grad():
        model.decoder.conv_out.weight.normal_()  # non-trivial head so predictions vary
    return model


def test_frame_dropout_drops_whole_frames_at_the_rate():
    cond = torch.ones(4000, 2, 2, 3, 3, dtype=torch.long)
    out = drop_frames(cond, 0.2, torch.Generator().manual_seed(0))
    per_frame = out.flatten(2).sum(-1)
    assert set(per_frame.unique().tolist()) == {0, 18}  # a frame is kept or dropped whole
    assert (per_frame == 0).float().mean().item() == pytest.approx(0.2, abs=0.02)
    assert torch.equal(drop_frames(cond, 0.0), cond)


def test_history_dropout_drops_all_frames_of_an_example_at_once():
    cond = torch.ones(20000, 2, 2, 3, 3, dtype=torch.long)
    alone = (
        drop_frames(cond, 0.0, torch.Generator().manual_seed(0), all_rate=0.3).flatten(2).sum(-1)
    )
    assert ((alone == 0).all(1) | (alone > 0).all(1)).all()  # never one frame without the other
    assert (alone == 0).all(1).float().mean().item() == pytest.approx(0.3, abs=0.01)
    both = drop_frames(cond, 0.2, torch.Generator().manual_seed(0), all_rate=0.3).flatten(2).sum(-1)
    # independent draws: 0.3 + 0.7 * 0.2 ** 2 of the examples lose both frames
    assert (both == 0).all(1).float().mean().item() == pytest.approx(0.328, abs=0.01)
    assert (both[:, 0] == 0).float().mean().item() == pytest.approx(0.3 + 0.7 * 0.2, abs=0.01)
    # without it, the per-frame draws are those of a run that never had the option
    u = torch.rand(20000, 2, generator=torch.Generator().manual_seed(0))
    before = cond * (u >= 0.2).view(20000, 2, 1, 1, 1)
    assert torch.equal(drop_frames(cond, 0.2, torch.Generator().manual_seed(0)), before)


def test_streaming_sampler_steps_per_frame_and_own_predictions_as_condition():
    model = video_model()
    frames = toy_batch(2)[0][:, None].expand(-1, 4, -1, -1, -1)  # (B=2, T=4, 3, 32, 32)
    calls = []
    model.decoder.register_forward_hook(lambda *_: calls.append(1))
    encoder_calls = []
    model.encoder.register_forward_hook(lambda *_: encoder_calls.append(1))
    seen = []
    original = model.sample

    def spy(images, steps, td, cond_masks=None, generator=None, stop=None):
        seen.append((steps, cond_masks.clone()))
        return original(images, steps, td, cond_masks, generator, stop=stop)

    model.sample = spy
    out = sample_video(
        model,
        frames,
        first_steps=5,
        later_steps=2,
        td=1.0,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.shape == (2, 4, 2, 16, 16) and out.dtype == torch.int64
    assert [s for s, _ in seen] == [5, 2, 2, 2]
    assert len(calls) == 5 + 3 * 2 and len(encoder_calls) == 4
    assert seen[0][1].abs().sum() == 0  # nothing before the first frame
    assert torch.equal(seen[1][1][:, 1], out[:, 0]) and seen[1][1][:, 0].abs().sum() == 0
    assert torch.equal(seen[3][1], out[:, 1:3])  # frames t-2, t-1, oldest first


def test_streaming_sampler_needs_a_video_model():
    model = Pix2SeqD(tiny(), DiffusionConfig(), LossConfig())
    with pytest.raises(ValueError, match="cond_frames"):
        sample_video(model, torch.rand(1, 2, 3, 32, 32), 2, 1, 1.0)
