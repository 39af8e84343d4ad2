"""The GPU speed options, checked on CPU: activation checkpointing (same loss and
gradients, fewer saved activations), the compiled sampler step (same masks, same state dict),
the compiled training loss, channels_last only on CUDA.
The compiled paths use backend 'eager' (dynamo tracing without code generation, which
takes minutes on a 2-core CPU); the GPU runs them through `benchmark.py gpu`."""

from __future__ import annotations

import dataclasses

import torch
from helpers_model import TINY, toy_batch

from pix2seqd.models.config import DiffusionConfig, LossConfig
from pix2seqd.models.pix2seq_d import Pix2SeqD
from pix2seqd.platform.presets import tiny as tiny_preset
from pix2seqd.platform.train.step import LossModule, compile_loss, to_device


def _model(grad_checkpoint: bool) -> Pix2SeqD:
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, grad_checkpoint=grad_checkpoint)
    return Pix2SeqD(cfg, DiffusionConfig(), LossConfig()).train()


def _loss_grads_saved(model: Pix2SeqD) -> tuple[torch.Tensor, list[torch.Tensor], int]:
    """Loss, gradients and the bytes autograd saved for the backward pass."""
    images, masks = toy_batch()
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    torch.manual_seed(1)  # the same t, noise and dropout in both models
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model.loss(images, masks)
    loss.backward()
    return (
        loss.detach(),
        [p.grad.clone() for p in model.parameters() if p.grad is not None],
        saved[0],
    )


def test_grad_checkpoint_same_loss_and_gradients_fewer_saved_activations():
    plain, remat = _model(False), _model(True)
    assert (
        remat.decoder.remat and remat.decoder.bottleneck.remat and remat.encoder.transformer.remat
    )
    loss_a, grads_a, saved_a = _loss_grads_saved(plain)
    loss_b, grads_b, saved_b = _loss_grads_saved(remat)
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
    model.compile_sampler(backend="eager")  # fullgraph: a graph break would raise here
    compiled = model.sample(images, 3, 2.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(eager, compiled) and eager.unique().numel() > 1
    assert list(model.state_dict()) == keys


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
