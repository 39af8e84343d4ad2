"""Tiny model config and toy batch shared by the model tests."""

import dataclasses

import torch

from pix2seqd.models.config import DecoderConfig, EncoderConfig, ModelConfig, NormMode

TINY = ModelConfig(
    num_classes=8,
    max_instances=16,
    encoder=EncoderConfig(
        depths=(1, 1, 1),
        width=8,
        tf_layers=2,
        tf_dim=64,
        tf_heads=4,
        tf_mlp=128,
        fuse_dim=32,
        norm=NormMode.BATCH,
    ),
    decoder=DecoderConfig(dim=32, tf_dim=64, tf_layers=2, tf_heads=4, tf_mlp=128),
)


def tiny(**decoder_changes) -> ModelConfig:
    return dataclasses.replace(TINY, decoder=dataclasses.replace(TINY.decoder, **decoder_changes))


def toy_batch(b: int = 2, size: int = 32):
    torch.manual_seed(0)
    images = torch.rand(b, 3, size, size)
    m = size // 2
    cls = torch.zeros(b, m, m, dtype=torch.long)
    ids = torch.zeros_like(cls)
    cls[:, : m // 2], ids[:, : m // 2] = 3, 1
    cls[:, m // 2 :, m // 2 :], ids[:, m // 2 :, m // 2 :] = 5, 2
    return images, torch.stack([cls, ids], dim=1)


def loss_grads_saved(model) -> tuple[torch.Tensor, list[torch.Tensor], int]:
    """`model.loss` of the toy batch: the loss, the gradients and the bytes autograd saved
    for the backward pass (seeded: the same t, noise and dropout for models built alike)."""
    images, masks = toy_batch()
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    torch.manual_seed(1)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model.loss(images, masks)
    loss.backward()
    return (
        loss.detach(),
        [p.grad.clone() for p in model.parameters() if p.grad is not None],
        saved[0],
    )
