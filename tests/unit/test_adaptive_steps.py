"""`sample.adaptive`: the stop rule of later video frames (models/video.py, StableIds) on
hand-built estimates, the sampler stopping where it says, and the steps counted."""

from __future__ import annotations

import dataclasses

import torch
from helpers_model import TINY

from pix2seqd.models.bits import int_to_analog_bits
from pix2seqd.models.config import DiffusionConfig, LossConfig
from pix2seqd.models.diffusion import ddim_sample_final
from pix2seqd.models.pix2seq_d import Pix2SeqD
from pix2seqd.models.video import StableIds, stream_videos

B = 0.1


def _bits(ids: list[list[int]]) -> torch.Tensor:
    """(B, 16, 2, 2) analog bits of class 1 and the given 2x2 id maps, one per example."""
    masks = torch.tensor([[[[1, 1], [1, 1]], [row[:2], row[2:]]] for row in ids])
    return int_to_analog_bits(masks, B)


def test_adaptive_rule_stops_when_no_decoded_id_changes():
    rule = StableIds(num_classes=4, max_instances=8)
    a = _bits([[1, 1, 2, 2], [3, 3, 3, 3]])
    assert rule(a, a.clone())
    # analog values may move: only the decoded ids count
    assert rule(a, a * 0.5)
    one_pixel = _bits([[1, 1, 2, 2], [3, 3, 3, 4]])
    assert not rule(a, one_pixel)  # every video of the batch must be stable
    quarter = StableIds(num_classes=4, max_instances=8, max_change=0.25)
    assert quarter(a, one_pixel)  # 1 of 4 pixels changed
    assert not quarter(a, _bits([[1, 1, 2, 2], [3, 3, 4, 4]]))


def test_adaptive_sampler_stops_at_the_first_stable_step_and_counts_it():
    """Estimates A, B, B, C, ... : the third step repeats the second, so the sampler returns
    B after 3 of 8 steps; without the rule it runs all 8 and returns the last one."""
    a, b, c = _bits([[1, 1, 1, 1]]), _bits([[2, 2, 2, 2]]), _bits([[3, 3, 3, 3]])
    sequence = [a, b, b, c, c, c, c, a]
    calls = []

    def denoise(x, gamma, prev):
        calls.append(len(calls))
        return sequence[len(calls) - 1]

    rule = StableIds(num_classes=4, max_instances=8)
    out, _ = ddim_sample_final(denoise, None, (1, 16, 2, 2), 8, 1.0, B, stop=rule)
    rule.sampled(8, videos=1)
    assert len(calls) == 3 and torch.equal(out, b)
    assert (rule.frames, rule.steps, rule.mean_steps) == (1, 3, 3.0)
    calls.clear()
    out, _ = ddim_sample_final(denoise, None, (1, 16, 2, 2), 8, 1.0, B)
    assert len(calls) == 8 and torch.equal(out, a)


def test_adaptive_rule_never_stops_on_the_first_or_after_the_last_step():
    a = _bits([[1, 1, 1, 1]])
    rule = StableIds(num_classes=4, max_instances=8)
    out, _ = ddim_sample_final(lambda x, g, p: a, None, (1, 16, 2, 2), 2, 1.0, B, stop=rule)
    rule.sampled(2, videos=1)
    assert rule.steps == 2 and torch.equal(out, a)  # two steps: nothing between to stop at


def test_adaptive_steps_only_on_later_frames_of_a_video_stream():
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, decoder=dataclasses.replace(TINY.decoder, cond_frames=2))
    model = Pix2SeqD(cfg, DiffusionConfig(), LossConfig()).eval()
    frames = torch.rand(2, 3, 3, 32, 32)
    rule = StableIds(cfg.num_classes, cfg.max_instances, max_change=1.0)  # stops at once
    out = list(stream_videos(model, lambda t, act: frames[act, t], [3, 2], 6, 4, 1.0, None, rule))
    assert [t for t, _, _ in out] == [0, 1, 2]
    # later frames: 2 videos at t = 1, 1 at t = 2, each stopped after its second step
    assert (rule.frames, rule.steps) == (3, 6)
