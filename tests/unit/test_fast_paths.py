"""The GPU speed options, checked on CPU: activation checkpointing (same loss and
gradients, fewer saved activations), the compiled sampler step (same masks, same state dict),
the compiled training loss, channels_last only on CUDA.
The compiled paths use backend 'eager' (dynamo tracing without code generation, which
takes minutes on a 2-core CPU); the GPU runs them through `benchmark.py gpu`."""

from __future__ import annotations

import dataclasses

import torch
from helpers_model import TINY, loss_grads_saved, toy_batch

from pix2seqd.models.config import DiffusionConfig, LossConfig
from pix2seqd.models.pix2seq_d import Pix2SeqD
from pix2seqd.models.video import stream_videos
from pix2seqd.platform.presets import tiny as tiny_preset
from pix2seqd.platform.train.step import LossModule, compile_loss, to_device


def _model(grad_checkpoint: bool) -> Pix2SeqD:
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, grad_checkpoint=grad_checkpoint)
    return Pix2SeqD(cfg, DiffusionConfig(), LossConfig()).train()


def test_grad_checkpoint_same_loss_and_gradients_fewer_saved_activations():
    plain, remat = _model(False), _model(True)
    assert (
        remat.decoder.remat and remat.decoder.bottleneck.remat and remat.encoder.transformer.remat
    )
    loss_a, grads_a, saved_a = loss_grads_saved(plain)
    loss_b, grads_b, saved_b = loss_grads_saved(remat)
    assert torch.equal(loss_a, loss_b)
    assert len(grads_a) == len(grads_b)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert saved_b < 0.6 * saved_a, (saved_b, saved_a)
    # no recomputation without gradients (sampling): the flag changes nothing there
    remat.eval()
    with torch.no_grad():
        images, _ = toy_batch()
        gen = torch.Generator().manual_seed(0)
        assert remat.sample(images, 2, 2.0, generator=gen).shape == (2, 2, 16, 16)


def test_compiled_sampler_gives_the_same_masks_and_keeps_the_state_dict():
    model = _model(False).eval()
    with torch.no_grad():
        model.decoder.conv_out.weight.normal_()  # a non-trivial head so ids vary
    images, _ = toy_batch()
    keys = list(model.state_dict())
    eager = model.sample(images, 3, 2.0, generator=torch.Generator().manual_seed(1))
    eager_p = model.sample(
        images, 3, 2.0, generator=torch.Generator().manual_seed(1), return_probs=True
    )
    model.compile_sampler(backend="eager")  # fullgraph: a graph break would raise here
    assert model.sampler_compiled
    compiled = model.sample(images, 3, 2.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(eager, compiled) and eager.unique().numel() > 1
    # the last step, with the class probabilities eval_coco scores segments by, compiled too
    calls = []
    final = model._compiled_final_step
    model._compiled_final_step = lambda *a: calls.append(a[0].shape[0]) or final(*a)
    masks, probs = model.sample(
        images, 3, 2.0, generator=torch.Generator().manual_seed(1), return_probs=True
    )
    assert calls == [2]
    assert torch.equal(masks, eager_p[0]) and torch.equal(masks, eager)
    torch.testing.assert_close(probs, eager_p[1])
    assert list(model.state_dict()) == keys


def test_compiled_sampler_keeps_a_video_batch_at_one_size():
    """Videos that end early stay in the batch as blank frames under a compiled sampler (one
    graph per batch size); eager sampling drops them."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, decoder=dataclasses.replace(TINY.decoder, cond_frames=2))
    model = Pix2SeqD(cfg, DiffusionConfig(), LossConfig()).eval()
    frames = torch.rand(3, 3, 3, 32, 32)
    lengths = [3, 1, 2]

    def run() -> tuple[list[int], list[tuple[int, list[int], tuple[int, ...]]]]:
        sizes = []
        name = "_compiled_x0_step" if model.sampler_compiled else "x0_step"
        step = getattr(model, name)
        setattr(model, name, lambda *a: sizes.append(a[0].shape[0]) or step(*a))
        out = [
            (t, active, tuple(pred.shape))
            for t, active, pred in stream_videos(
                model, lambda t, act: frames[act, t], lengths, 2, 2, 1.0
            )
        ]
        return sorted(set(sizes)), out

    eager_sizes, eager = run()
    model.compile_sampler(backend="eager")
    compiled_sizes, compiled = run()
    assert eager_sizes == [1, 2, 3] and compiled_sizes == [3]
    assert (
        compiled
        == eager
        == [
            (0, [0, 1, 2], (3, 2, 16, 16)),
            (1, [0, 2], (2, 2, 16, 16)),
            (2, [0], (1, 2, 16, 16)),
        ]
    )


def test_compiled_loss_module_matches_and_reaches_the_wrapped_module():
    cfg = tiny_preset()
    cfg = dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, compile=True, compile_backend="eager")
    )
    model = _model(False)
    module = LossModule(model)
    compiled = compile_loss(module, cfg)
    assert compiled is not module and compiled.model is model
    images, masks = toy_batch()
    torch.manual_seed(3)
    a = module(images, masks)
    torch.manual_seed(3)
    b = compiled(images, masks)
    torch.testing.assert_close(a, b)
    off = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, compile=False))
    assert compile_loss(module, off) is module


def test_channels_last_only_on_cuda():
    cfg = tiny_preset()
    assert not cfg.train.channels_last  # measured slower on the H100 (docs/results.md)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, channels_last=True))
    model = to_device(_model(False), cfg, torch.device("cpu"))
    weight = model.decoder.down[0][0].conv1.weight  # 3 x 3: the two layouts differ
    assert weight.is_contiguous()
    assert not weight.is_contiguous(memory_format=torch.channels_last)
