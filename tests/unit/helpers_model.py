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
