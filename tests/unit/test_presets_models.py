"""Every paper preset builds the official architecture (94.5M parameters, paper Table 1) without a
forward pass; tiny is the same code with smaller sizes."""

from dataclasses import replace

import pytest
import torch

from pix2seqd.models.pix2seq_d import Pix2SeqD
from pix2seqd.platform.presets import PRESETS, get_preset
from pix2seqd.platform.train.step import build_model

PAPER = ["coco_lowres", "coco_highres", "r50_ablation", "decoder_pretrain", "cityscapes", "davis"]
PAPER_PARAMS = 94_492_480
EXPECTED = {name: PAPER_PARAMS for name in PAPER} | {
    "davis": PAPER_PARAMS + 32 * 128,  # conv_in (1x1 to 128) sees the 32 conditioning bits
    # unconditional: no cross-attention at the bottleneck (docs/model.md, "Architecture"); the
    # conditional model started from it starts those layers fresh (test_start_weights.py)
    "decoder_pretrain": 88_182_592,
}


def build(name: str) -> Pix2SeqD:
    cfg = get_preset(name)
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        return build_model(cfg)


@pytest.mark.parametrize("name", PAPER)
def test_paper_presets_count_94_5m_parameters(name):
    n = sum(p.numel() for p in build(name).parameters())
    assert n == EXPECTED[name]
    if name != "decoder_pretrain":
        assert n == pytest.approx(94.5e6, rel=0.005)


def test_preset_sizes():
    sizes = {
        name: (get_preset(name).data.image_hw, get_preset(name).model.mask_stride)
        for name in PRESETS
        if name != "tiny"  # data.image_size=auto: tests/unit/test_size_report.py
    }
    assert sizes == {
        "coco_lowres": ((256, 256), 2),
        "coco_highres": ((1024, 1024), 2),
        "r50_ablation": ((512, 512), 2),
        "decoder_pretrain": ((256, 256), 2),
        "cityscapes": ((1024, 2048), 2),
        "davis": ((512, 1024), 2),
    }
    davis = get_preset("davis")
    assert Pix2SeqD.in_channels(davis.model) == 304 and davis.model.max_instances == 16
    assert (davis.sample.steps, davis.sample.later_steps, davis.sample.td) == (32, 8, 1.0)


def test_tiny_is_the_same_model_code_with_smaller_sizes():
    cfg = get_preset("tiny")
    model = build_model(cfg)
    paper = build("coco_lowres")
    assert type(model.encoder) is type(paper.encoder) and type(model.decoder) is type(paper.decoder)
    own = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert own == {n.split(".")[0] for n, _ in paper.named_parameters()}


def test_as_video_turns_an_image_preset_into_the_streaming_model():
    from pix2seqd.platform.presets import as_video

    video = as_video(get_preset("tiny"))
    assert Pix2SeqD.in_channels(video.model) == Pix2SeqD.in_channels(get_preset("tiny").model) + 32
    assert (video.model.num_classes, video.model.max_instances) == (1, 8)
    assert video.model.mask_stride == 2  # the paper's stride: J&F scores boundaries
    assert (video.data.dataset.value, video.data.train_split, video.data.val_split) == (
        "davis",
        "train",
        "val",
    )
    assert (
        video.sample.steps,
        video.sample.later_steps,
        video.sample.td,
        video.sample.min_pixels,
    ) == (32, 8, 1.0, 10)
    assert video.train.ema_decay == 0.99 and video.optim.warmup_steps == 0
    # tiny's video stage decays over train.video_steps; paper presets keep a constant lr
    assert (video.train.steps, video.optim.end_lr_factor) == (7000, 0.1)
    assert video.train.decay_to_budget and video.train.time_budget_min == 15.0  # tiny's
    lowres = get_preset("coco_lowres")
    assert (as_video(lowres).train.steps, as_video(lowres).optim.end_lr_factor) == (
        lowres.train.steps,
        1.0,
    )
    with pytest.raises(ValueError, match=r"train.video_steps=-1 must be >= 0"):
        as_video(replace(lowres, train=replace(lowres.train, video_steps=-1)))
    # the paper's loss weight whatever the image model's (tiny: 0.6); tiny's history noise
    assert (get_preset("tiny").loss.p, video.loss.p) == (0.6, 0.2)
    assert (video.data.history_drop, video.data.history_add) == (0.2, 0.2)
    assert as_video(get_preset("coco_lowres")).data.history_drop == 0.0
    assert as_video(get_preset("davis")) == get_preset("davis")  # already a video preset
    # still clips: tiny's come from its own (generated) image set; paper presets have none
    assert (video.data.stills, video.data.still_fraction) == ("generated", 0.5)
    lowres = as_video(get_preset("coco_lowres"))
    assert (lowres.data.stills, lowres.data.still_fraction) == ("", 0.0)
    mine = replace(get_preset("tiny"), data=replace(get_preset("tiny").data, root="/data/coco"))
    assert as_video(mine).data.stills == "/data/coco"
