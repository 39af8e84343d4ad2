"""The weights a run starts from: a user's ResNet-50 file (torchvision `.pth`, timm
`.safetensors`), ImageNet input normalisation, and the stage hand-offs of --init-from
(decoder pre-training -> conditional, image -> video) with their trained scopes; the
`auto` choices a run makes when it starts."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from pix2seqd.models.config import Conditioning, InputNorm, StemPool
from pix2seqd.models.encoder import Encoder
from pix2seqd.models.pix2seq_d import Pix2SeqD
from pix2seqd.models.resnet import ResNetC4, load_torchvision_resnet, tf_same_max_pool
from pix2seqd.models.weight_transfer import merge_scopes
from pix2seqd.platform.config import GpuChoice, override, storable
from pix2seqd.platform.presets import as_video, get_preset, tiny
from pix2seqd.platform.train import auto, checkpoints
from pix2seqd.platform.train.init_weights import start_weights
from pix2seqd.platform.train.step import build_model


def _random_resnet(width: int = 8, depths=(1, 1, 1)) -> ResNetC4:
    torch.manual_seed(1)
    net = ResNetC4(depths, width)
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.normal_()
    return net


def _torchvision_state(net: ResNetC4) -> dict[str, torch.Tensor]:
    """What torchvision's resnet50 file holds beyond stage 3: layer4.* and the classifier."""
    return {
        **net.state_dict(),
        "layer4.0.conv1.weight": torch.zeros(4, 4, 1, 1),
        "fc.weight": torch.zeros(10, 4),
        "fc.bias": torch.zeros(10),
    }


def _write_safetensors(path, tensors: dict[str, torch.Tensor]) -> None:
    """The safetensors layout written by hand: u64 header size, JSON header, raw bytes."""
    names = {torch.float32: "F32", torch.int64: "I64"}
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        raw = t.contiguous().numpy().tobytes()
        header[name] = {
            "dtype": names[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def _assert_loaded(target: ResNetC4, source: ResNetC4) -> None:
    for key, value in source.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(target.state_dict()[key], value), key


def test_torchvision_pth_loads_and_reports_the_unused_stages(tmp_path):
    source = _random_resnet()
    path = tmp_path / "resnet50-torchvision.pth"
    torch.save(_torchvision_state(source), path)
    target = ResNetC4((1, 1, 1), 8)
    done = load_torchvision_resnet(target, path)
    _assert_loaded(target, source)
    assert done.unused == ("fc.bias", "fc.weight", "layer4.0.conv1.weight")
    assert len(done.loaded) == len(source.state_dict())


def test_timm_safetensors_and_wrapped_files_load(tmp_path):
    source = _random_resnet()
    # timm's files have no num_batches_tracked; a training script's wrap {"state_dict"} and
    # DDP's "module." prefix are undone
    timm = {k: v for k, v in _torchvision_state(source).items() if "num_batches" not in k}
    _write_safetensors(tmp_path / "model.safetensors", timm)
    torch.save({"state_dict": {f"module.{k}": v for k, v in timm.items()}}, tmp_path / "w.pt")
    for name in ("model.safetensors", "w.pt"):
        target = ResNetC4((1, 1, 1), 8)
        load_torchvision_resnet(target, tmp_path / name)
        _assert_loaded(target, source)


def test_a_wrong_or_broken_file_is_named_with_its_keys(tmp_path):
    state = _torchvision_state(_random_resnet())
    del state["layer1.0.conv2.weight"]
    state["head.weight"] = torch.zeros(3)
    state["conv1.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(state, tmp_path / "other.pth")
    with pytest.raises(ValueError) as err:
        load_torchvision_resnet(ResNetC4((1, 1, 1), 8), tmp_path / "other.pth")
    for part in ("other.pth", "layer1.0.conv2.weight", "head.weight", "conv1.weight: file"):
        assert part in str(err.value)
    _write_safetensors(tmp_path / "cut.safetensors", {"conv1.weight": torch.zeros(8, 3, 7, 7)})
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "cut.safetensors").read_bytes()[:-8])
    with pytest.raises(ValueError, match="cut.safetensors.*conv1.weight.*truncated"):
        load_torchvision_resnet(ResNetC4((1, 1, 1), 8), tmp_path / "cut.safetensors")
    with pytest.raises(ValueError, match="missing.pth: no such file"):
        load_torchvision_resnet(ResNetC4((1, 1, 1), 8), tmp_path / "missing.pth")


def test_imagenet_normalisation_is_applied_inside_the_encoder():
    enc = tiny().model.encoder
    plain = Encoder(enc, mask_stride=4).eval()
    normed = Encoder(override(enc, {"input_norm": "imagenet"}), mask_stride=4).eval()
    normed.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # torchvision's
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(normed(x).fused, plain((x - mean) / std).fused)
    unresolved = Encoder(override(enc, {"input_norm": "auto"}), mask_stride=4).eval()
    unresolved.load_state_dict(plain.state_dict())
    torch.testing.assert_close(unresolved(x).fused, plain(x).fused)  # auto unresolved = none


def _save(path, cfg, model, scope=None) -> str:
    snap = {"ema": model.state_dict(), "config": storable(cfg)}
    if scope is not None:
        snap["trained_scope"] = list(scope)
    checkpoints.save(path, snap)
    return str(path)


def _model(cfg, seed: int) -> Pix2SeqD:
    torch.manual_seed(seed)
    return build_model(cfg)


def test_decoder_pretraining_hands_its_decoder_to_the_conditional_stage(tmp_path):
    pre_cfg = override(tiny(), {"model.decoder.conditional": "none"})
    pre = _model(pre_cfg, 0)
    ref = _save(tmp_path / "pre", pre_cfg, pre, scope=("decoder.",))
    start = start_weights(tiny(), ref)
    target = build_model(tiny()).state_dict()
    cross = [k for k in target if ".cross_attn." in k or ".ln_cross." in k]
    assert cross and set(cross) <= set(start.fresh)
    assert {k for k in target if k.startswith("decoder.")} - set(cross) == set(start.loaded)
    assert all(k.startswith("encoder.") or k in cross for k in start.fresh)
    for key in start.loaded:
        assert torch.equal(start.state[key], pre.state_dict()[key]), key
    assert start.trained_scope == ("",)
    assert start.tags()["init/fresh_keys"] == str(len(start.fresh))
    assert "cross_attn" in start.tags()["init/fresh"]


def test_a_pretraining_run_declares_the_decoder_and_the_pretrained_backbone(tmp_path):
    torch.save(_torchvision_state(_random_resnet()), tmp_path / "r50.pth")
    pre_cfg = override(
        tiny(), {"model.decoder.conditional": "none", "model.encoder.init": tmp_path / "r50.pth"}
    )
    start = start_weights(pre_cfg)
    assert start.trained_scope == ("decoder.", "encoder.backbone.")
    assert {k for k in start.loaded} == {
        f"encoder.backbone.{k}" for k in ResNetC4((1, 1, 1), 8).state_dict()
    }
    # the next stage: the backbone from the file, the decoder from the pre-training
    pre = _model(override(pre_cfg, {"model.encoder.init": ""}), 2)
    ref = _save(tmp_path / "pre", pre_cfg, pre, scope=start.trained_scope)
    cond_cfg = override(tiny(), {"model.encoder.init": tmp_path / "r50.pth"})
    nxt = start_weights(cond_cfg, ref)
    backbone = nxt.state["encoder.backbone.conv1.weight"]
    assert torch.equal(backbone, pre.state_dict()["encoder.backbone.conv1.weight"])
    assert not any(k.startswith("encoder.transformer.") for k in nxt.loaded)


def test_other_mismatches_stay_errors_naming_the_keys(tmp_path):
    pre_cfg = override(tiny(), {"model.decoder.conditional": "none"})
    state = dict(_model(pre_cfg, 0).state_dict())
    del state["decoder.conv_out.bias"]
    state["decoder.extra.weight"] = torch.zeros(1)
    snap = {"ema": state, "config": {}, "trained_scope": ["decoder."]}
    checkpoints.save(tmp_path / "bad", snap)
    with pytest.raises(ValueError) as err:
        start_weights(tiny(), str(tmp_path / "bad"))
    assert "decoder.conv_out.bias" in str(err.value) and "decoder.extra.weight" in str(err.value)
    assert str(tmp_path / "bad") in str(err.value)


def test_image_to_video_keeps_the_shared_channels_and_zeroes_the_history(tmp_path):
    image_cfg = tiny()
    image = _model(image_cfg, 3)
    ref = _save(tmp_path / "img", image_cfg, image)  # no trained_scope: an older checkpoint
    video_cfg = as_video(image_cfg)
    start = start_weights(video_cfg, ref)
    by_method = build_model(video_cfg)
    by_method.load_video_from_image(image.state_dict())
    for key, value in by_method.state_dict().items():
        if key in start.state:
            assert torch.equal(start.state[key], value), key
    assert "decoder.conv_in.weight" in start.loaded


def test_merge_scopes_drops_covered_prefixes():
    assert merge_scopes(("decoder.",), ("",)) == ("",)
    assert merge_scopes(("decoder.",), ("encoder.backbone.", "encoder.")) == (
        "decoder.",
        "encoder.",
    )


def test_encoder_conventions_auto_follow_the_file_or_the_checkpoint(tmp_path):
    assert auto.decide_input_norm(tiny()) is InputNorm.NONE
    assert auto.decide_stem_pool(tiny()) is StemPool.TORCH
    with_file = override(tiny(), {"model.encoder.init": "/data/r50.pth"})
    assert auto.decide_input_norm(with_file) is InputNorm.IMAGENET
    trained = {"model.encoder.input_norm": "imagenet", "model.encoder.stem_pool": "tf_same"}
    ref = _save(tmp_path / "a", override(tiny(), trained), _model(tiny(), 0))
    source = auto.source_encoder(ref)
    assert auto.decide_input_norm(tiny(), source) is InputNorm.IMAGENET
    assert auto.decide_stem_pool(tiny(), source) is StemPool.TF_SAME
    resolved = auto.resolve_auto(with_file, ref)
    assert resolved.model.encoder.stem_pool is StemPool.TF_SAME
    # a decoder pre-training without a pretrained encoder carries no encoder over
    pre = override(tiny(), {**trained, "model.decoder.conditional": Conditioning.NONE})
    ref = _save(tmp_path / "b", pre, _model(pre, 0), scope=("decoder.",))
    assert auto.source_encoder(ref) is None
    assert auto.source_encoder("") is None
    explicit = override(tiny(), {"model.encoder.input_norm": "none"})
    assert auto.decide_input_norm(explicit, source) is InputNorm.NONE  # kept, with a warning


def test_tf_same_stem_pool_pads_the_odd_pixel_after():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # windows at rows/cols 0-2 and 2-3 (+ the pad after): TensorFlow's SAME
    assert tf_same_max_pool(x).flatten().tolist() == [10, 11, 14, 15]
    tf_net = ResNetC4((1, 1, 1), 8, stem_pool=StemPool.TF_SAME).eval()
    torch_net = ResNetC4((1, 1, 1), 8).eval()
    torch_net.load_state_dict(tf_net.state_dict())
    images = torch.rand(1, 3, 32, 32)
    stem = tf_net.relu(tf_net.bn1(tf_net.conv1(images)))
    torch.testing.assert_close(tf_net(images)[0], tf_net.layer1(tf_same_max_pool(stem)))
    assert not torch.allclose(tf_net(images)[0], torch_net(images)[0])
    odd = torch.arange(25.0).view(1, 1, 5, 5)  # odd sides pad one on each side, as torch
    torch.testing.assert_close(tf_same_max_pool(odd), torch.nn.functional.max_pool2d(odd, 3, 2, 1))


def test_use_gpu_auto_looks_at_the_cluster_and_its_autoscaler(tmp_path, monkeypatch):
    cfg = override(tiny(), {"train.use_gpu": "auto", "train.num_workers": 2})
    resources = {"CPU": 8.0}
    monkeypatch.setattr(auto.ray, "cluster_resources", lambda: resources)
    monkeypatch.setattr(auto, "AUTOSCALER_CONFIG", str(tmp_path / "bootstrap.yaml"))
    assert auto.decide_gpu(cfg) is GpuChoice.FALSE
    resources["GPU"] = 1.0  # fewer than the workers: CPU, with a warning
    assert auto.decide_gpu(cfg) is GpuChoice.FALSE
    resources["GPU"] = 2.0
    assert auto.decide_gpu(cfg) is GpuChoice.TRUE
    resources.pop("GPU")
    (tmp_path / "bootstrap.yaml").write_text(
        "available_node_types:\n"
        "  head: {resources: {CPU: 0}}\n"
        "  gpu_1x: {min_workers: 0, max_workers: 8, resources: {CPU: 8, GPU: 1}}\n"
        "  off: {max_workers: 0, resources: {GPU: 8}}\n"
    )
    assert auto.gpu_node_types(tmp_path / "bootstrap.yaml") == ["gpu_1x"]
    assert auto.decide_gpu(cfg) is GpuChoice.TRUE
    assert auto.decide_gpu(override(cfg, {"train.use_gpu": False})) is GpuChoice.FALSE


def test_use_gpu_reads_booleans_and_auto_and_must_be_decided():
    for text, choice in (("true", "true"), (True, "true"), ("False", "false"), ("auto", "auto")):
        assert override(tiny(), {"train.use_gpu": text}).train.use_gpu.value == choice
    with pytest.raises(ValueError, match="train.use_gpu"):
        override(tiny(), {"train.use_gpu": "maybe"})
    assert tiny().train.uses_gpu is False
    with pytest.raises(RuntimeError, match="auto"):
        _ = override(tiny(), {"train.use_gpu": "auto"}).train.uses_gpu
    for name in ("coco_lowres", "coco_highres", "r50_ablation", "decoder_pretrain", "davis"):
        assert get_preset(name).train.use_gpu is GpuChoice.AUTO, name
