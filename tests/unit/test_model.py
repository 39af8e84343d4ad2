"""Composed model: parameter count, input widths, conditioning modes, training, sampling,
ResNet names / torchvision loading, BN modes, image -> video weight transfer."""

import dataclasses

import pytest
import torch
from helpers_model import TINY, tiny, toy_batch

from pix2seqd.models.config import (
    Conditioning,
    DecoderConfig,
    DiffusionConfig,
    LossConfig,
    ModelConfig,
    NormMode,
)
from pix2seqd.models.encoder import Encoder
from pix2seqd.models.pix2seq_d import Pix2SeqD, check_head
from pix2seqd.models.resnet import ResNetC4, load_torchvision_resnet

# First keys of torchvision's resnet50().state_dict(), in order.
TORCHVISION_FIRST_KEYS = [
    "conv1.weight",
    "bn1.weight",
    "bn1.bias",
    "bn1.running_mean",
    "bn1.running_var",
    "bn1.num_batches_tracked",
    "layer1.0.conv1.weight",
    "layer1.0.bn1.weight",
    "layer1.0.bn1.bias",
    "layer1.0.bn1.running_mean",
    "layer1.0.bn1.running_var",
    "layer1.0.bn1.num_batches_tracked",
    "layer1.0.conv2.weight",
    "layer1.0.bn2.weight",
    "layer1.0.bn2.bias",
    "layer1.0.bn2.running_mean",
    "layer1.0.bn2.running_var",
    "layer1.0.bn2.num_batches_tracked",
    "layer1.0.conv3.weight",
    "layer1.0.bn3.weight",
    "layer1.0.bn3.bias",
    "layer1.0.bn3.running_mean",
    "layer1.0.bn3.running_var",
    "layer1.0.bn3.num_batches_tracked",
    "layer1.0.downsample.0.weight",
    "layer1.0.downsample.1.weight",
    "layer1.0.downsample.1.bias",
    "layer1.0.downsample.1.running_mean",
    "layer1.0.downsample.1.running_var",
    "layer1.0.downsample.1.num_batches_tracked",
    "layer1.1.conv1.weight",
]


def test_paper_model_has_94_49m_parameters():
    model = Pix2SeqD(ModelConfig(), DiffusionConfig(), LossConfig())
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert model.decoder.conv_in.in_channels == 272
    assert n == pytest.approx(94.49e6, abs=0.01e6)
    assert n == 94_492_480  # docs/model.md, "Architecture": 8.543M + 38.355M + 4.004M + 43.590M


def test_video_decoder_has_304_input_channels():
    video = ModelConfig(decoder=DecoderConfig(cond_frames=2))
    assert Pix2SeqD.in_channels(video) == 304
    assert Pix2SeqD.in_channels(ModelConfig()) == 272
    wide = dataclasses.replace(TINY.encoder, fuse_dim=256)
    cfg = dataclasses.replace(tiny(cond_frames=2), encoder=wide)
    assert Pix2SeqD(cfg, DiffusionConfig(), LossConfig()).decoder.conv_in.in_channels == 304


def test_conditioning_none_keeps_inputs_and_builds_no_cross_attention():
    cat_attn = Pix2SeqD(TINY, DiffusionConfig(), LossConfig())
    none = Pix2SeqD(tiny(conditional=Conditioning.NONE), DiffusionConfig(), LossConfig())
    assert none.decoder.conv_in.in_channels == cat_attn.decoder.conv_in.in_channels == 48
    assert not any("cross" in name for name, _ in none.named_parameters())
    assert any("cross_attn" in name for name, _ in cat_attn.named_parameters())
    assert not any(p.requires_grad for p in none.encoder.parameters())
    images, masks = toy_batch()
    none.loss(images, masks).backward()
    encoded = none.encode(images)
    assert encoded.fused.abs().sum() == 0 and encoded.fused.shape == (2, 32, 16, 16)


def test_tiny_model_overfits_one_batch():
    images, masks = toy_batch()
    torch.manual_seed(0)
    model = Pix2SeqD(TINY, DiffusionConfig(), LossConfig())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model.loss(images, masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(5.545177, abs=1e-3)  # ln 256: the head starts at ~zero
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0]


def test_sample_ints_in_range_deterministic_and_reusable():
    images, _ = toy_batch()
    model = Pix2SeqD(TINY, DiffusionConfig(), LossConfig()).eval()
    with torch.no_grad():
        model.decoder.conv_out.weight.normal_()  # a non-trivial head so ids vary
    a = model.sample(images, 3, 2.0, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 2, 16, 16) and a.dtype == torch.int64
    assert 0 <= a[:, 0].min() and a[:, 0].max() <= 7 and 0 <= a[:, 1].min() and a[:, 1].max() <= 15
    assert a.unique().numel() > 1
    b = model.sample_from_encoded(
        model.encode(images), 3, 2.0, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(a, b)


def test_video_model_loss_and_sample_with_conditioning():
    model = Pix2SeqD(tiny(cond_frames=2, self_cond=True), DiffusionConfig(), LossConfig())
    images, masks = toy_batch()
    cond = torch.stack([masks, torch.zeros_like(masks)], dim=1)  # t-2 known, t-1 missing
    assert torch.isfinite(model.loss(images, masks, cond))
    assert model.eval().sample(images, 2, 1.0, cond).shape == (2, 2, 16, 16)


def test_load_video_from_image_zero_inits_new_channels():
    image_model = Pix2SeqD(TINY, DiffusionConfig(), LossConfig())
    video_model = Pix2SeqD(tiny(cond_frames=2), DiffusionConfig(), LossConfig())
    video_model.load_video_from_image(image_model.state_dict())
    w_img, w_vid = image_model.decoder.conv_in.weight, video_model.decoder.conv_in.weight
    assert w_vid.shape[1] == w_img.shape[1] + 32
    assert torch.equal(w_vid[:, :48], w_img) and w_vid[:, 48:].abs().sum() == 0
    images, masks = toy_batch()
    encoded = image_model.eval().encode(images)
    x_t, gamma = torch.randn(2, 16, 16, 16), torch.full((2,), 0.3)
    cond = torch.randint(0, 9, (2, 2, 2, 16, 16))
    out_img = image_model.denoise(x_t, gamma, encoded, image_model.cond_bits(None, x_t), x_t)
    out_vid = video_model.eval().denoise(x_t, gamma, encoded, video_model.cond_bits(cond, x_t), x_t)
    torch.testing.assert_close(out_vid, out_img)


def test_encoder_any_size_divisible_by_16():
    encoder = Encoder(TINY.encoder, mask_stride=2).eval()
    for h, w in [(16, 16), (48, 80)]:
        tokens, fused = encoder(torch.rand(1, 3, h, w))
        assert tokens.shape == (1, (h // 16) * (w // 16), 64)
        assert fused.shape == (1, 32, h // 2, w // 2) and torch.isfinite(fused).all()
    for stride in (1, 4, 8):  # the fuser skips maps finer than the mask
        fused = Encoder(TINY.encoder, mask_stride=stride).eval()(torch.rand(1, 3, 32, 32)).fused
        assert fused.shape == (1, 32, 32 // stride, 32 // stride)


def test_resnet_has_torchvision_names():
    keys = list(ResNetC4().state_dict())
    assert keys[: len(TORCHVISION_FIRST_KEYS)] == TORCHVISION_FIRST_KEYS
    assert "layer3.5.bn3.weight" in keys and "layer2.0.downsample.0.weight" in keys
    assert not any(k.startswith(("layer4.", "fc.")) for k in keys)
    assert len(keys) == 258  # stem 6 + layer1 60 + layer2 78 + layer3 114
    resnet = ResNetC4()
    assert all((b.bn3.weight == 0).all() for layer in (resnet.layer1, resnet.layer3) for b in layer)


def test_load_torchvision_resnet_round_trip_and_errors(tmp_path):
    source = ResNetC4(width=16)
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    state = dict(source.state_dict())
    state["layer4.0.conv1.weight"] = torch.zeros(4, 4, 1, 1)
    state["fc.weight"], state["fc.bias"] = torch.zeros(10, 4), torch.zeros(10)
    path = tmp_path / "resnet50.pth"
    torch.save(state, path)
    target = ResNetC4(width=16)
    load_torchvision_resnet(target, path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    del state["layer1.0.conv2.weight"]
    state["layer1.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(state, path)
    expected = "resnet50.pth.*layer1.0.conv2.weight.*layer1.0.conv1.weight"
    with pytest.raises(ValueError, match=expected):
        load_torchvision_resnet(ResNetC4(width=16), path)


def test_frozen_batch_norm_stays_fixed_under_train():
    cfg = dataclasses.replace(TINY.encoder, norm=NormMode.FROZEN)
    encoder = Encoder(cfg, mask_stride=2).train()
    bn = encoder.backbone.bn1
    assert not bn.training and not bn.weight.requires_grad
    before = bn.running_mean.clone()
    encoder(torch.rand(2, 3, 32, 32))
    assert torch.equal(bn.running_mean, before)
    batch = Encoder(TINY.encoder, mask_stride=2).train()
    batch(torch.rand(2, 3, 32, 32))
    assert not torch.equal(batch.backbone.bn1.running_mean, torch.zeros(8))


def test_init_scale_controls_the_zero_initialised_convolutions():
    from dataclasses import replace

    from pix2seqd.models.config import DecoderConfig, DiffusionConfig, LossConfig, ModelConfig
    from pix2seqd.models.pix2seq_d import Pix2SeqD

    small = DecoderConfig(dim=16, tf_dim=32, tf_layers=1, tf_heads=2, tf_mlp=32)
    stds = {}
    for scale in (1e-10, 1.0):
        torch.manual_seed(0)
        cfg = ModelConfig(
            num_classes=8,
            max_instances=16,
            decoder=replace(small, init_scale=scale),
            encoder=replace(
                ModelConfig().encoder,
                depths=(1, 1, 1),
                width=8,
                tf_layers=1,
                tf_dim=32,
                tf_heads=2,
                tf_mlp=32,
                fuse_dim=16,
            ),
        )
        dec = Pix2SeqD(cfg, DiffusionConfig(), LossConfig()).decoder
        stds[scale] = (dec.conv_out.weight.std().item(), dec.down[0][0].conv2.weight.std().item())
    # Glorot-uniform std = sqrt(scale * 2 / (fan_in + fan_out)); official scale 1e-10
    assert stds[1e-10][0] < 1e-6 and stds[1e-10][1] < 1e-6
    assert stds[1.0][0] > 1e-2 and stds[1.0][1] > 1e-2
    assert stds[1.0][0] / stds[1e-10][0] == pytest.approx(1e5, rel=1e-3)


def test_four_softmax_groups_train_and_sample():
    model = Pix2SeqD(tiny(softmax_groups=4), DiffusionConfig(), LossConfig())
    assert model.decoder.conv_out.weight.shape[0] == 64  # 4 groups x 16 values
    images, masks = toy_batch()
    loss = model.loss(images, masks)
    loss.backward()
    assert torch.isfinite(loss) and model.decoder.conv_out.weight.grad.abs().sum() > 0
    out = model.eval().sample(images, 2, 1.0)
    assert out.shape == (2, 2, 16, 16)
    assert out[:, 0].max() < TINY.num_classes and out[:, 1].max() < TINY.max_instances


def test_a_checkpoint_with_another_head_is_refused_by_name():
    image_model = Pix2SeqD(TINY, DiffusionConfig(), LossConfig())  # 2 groups: 512 logits
    video_model = Pix2SeqD(tiny(cond_frames=2, softmax_groups=4), DiffusionConfig(), LossConfig())
    with pytest.raises(
        ValueError,
        match="512 channels per mask pixel, this model's 64 "
        r"\(model.decoder.softmax_groups=4",
    ):
        video_model.load_video_from_image(image_model.state_dict())
    with pytest.raises(ValueError, match="runs:/abc: its output head"):
        check_head(image_model.state_dict(), tiny(softmax_groups=4), LossConfig(), "runs:/abc")
    with pytest.raises(ValueError, match="softmax_groups=3"):
        Pix2SeqD(tiny(softmax_groups=3), DiffusionConfig(), LossConfig())
