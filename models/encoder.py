"""Image encoder (paper §3.1): ResNet-50 C4 -> tokeniser -> pre-LN transformer encoder, and
the top-down FeaturePyramidMerge fuser that brings [C2, C3, tokens-as-map] to mask resolution.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import EncoderConfig, InputNorm
from .pretrained import IMAGENET_MEAN, IMAGENET_STD
from .remat import run_block
from .resnet import ResNetC4
from .transformer import LN_EPS, EncoderLayer, glorot_linear, position_codes_2d, tokens_to_map


class Encoded(NamedTuple):
    """Encoder output. tokens: (B, N, tf_dim), N = (H/16)·(W/16), the cross-attention memory;
    fused: (B, fuse_dim, H/mask_stride, W/mask_stride), concatenated to the decoder input."""

    tokens: torch.Tensor
    fused: torch.Tensor


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with min(C/4, 32) groups (official convnet blocks), eps 1e-5."""
    groups = max(min(channels // 4, 32), 1)
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels, eps=1e-5)


def glorot_conv(
    c_in: int, c_out: int, kernel: int, stride: int = 1, gain: float = 1.0
) -> nn.Conv2d:
    """Conv with bias; Glorot-uniform weight (VarianceScaling(gain², fan_avg, uniform)); zero
    bias."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2)
    nn.init.xavier_uniform_(conv.weight, gain=gain)
    nn.init.zeros_(conv.bias)
    return conv


class Tokenizer(nn.Module):
    """C4 map (B, C, h, w) -> tokens (B, h·w, dim): dropout -> Dense -> LN -> + 2-D sin-cos code."""

    def __init__(self, in_dim: int, dim: int, drop_units: float):
        super().__init__()
        self.drop = nn.Dropout(drop_units)
        self.proj = glorot_linear(in_dim, dim)
        self.ln = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, c4: torch.Tensor) -> torch.Tensor:
        h, w = c4.shape[-2:]
        tokens = self.ln(self.proj(self.drop(c4.flatten(2).transpose(1, 2))))
        return tokens + position_codes_2d(h, w, tokens.shape[-1], tokens.device).to(tokens.dtype)


class TransformerEncoder(nn.Module):
    """`layers` pre-LN encoder layers followed by a final LayerNorm. (B, N, dim) -> same."""

    def __init__(
        self, layers: int, dim: int, heads: int, mlp_dim: int, drop_path: float, drop_units: float
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(dim, heads, mlp_dim, drop_path, drop_units) for _ in range(layers)
        )
        self.ln_out = nn.LayerNorm(dim, eps=LN_EPS)

    remat = False  # models/remat.py; set by Pix2SeqD.set_grad_checkpointing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = run_block(layer, x, remat=self.remat)
        return self.ln_out(x)


class UpsampleBlock(nn.Module):
    """silu(GN(conv3x3(hr + up(silu(GN(conv1x1(lr))))))) (official `UpsampleBlock`).

    hr=None (final block) drops the hr term. Output has `dim` channels at the hr resolution.
    """

    def __init__(self, lr_dim: int, dim: int):
        super().__init__()
        self.lateral = glorot_conv(lr_dim, dim, 1)
        self.norm_lateral = group_norm(dim)
        self.conv = glorot_conv(dim, dim, 3)
        self.norm = group_norm(dim)

    def forward(
        self, lr: torch.Tensor, hr: torch.Tensor | None, out_hw: tuple[int, int]
    ) -> torch.Tensor:
        up = F.interpolate(F.silu(self.norm_lateral(self.lateral(lr))), size=out_hw, mode="nearest")
        return F.silu(self.norm(self.conv(up if hr is None else hr + up)))


class FeaturePyramidMerge(nn.Module):
    """Top-down merge of [C2, C3, T] (coarsest last) into (B, out_dim, Hm, Wm) (docs/model.md,
    "Architecture").

    Every higher-resolution map not finer than the mask gets a block whose width is that map's
    channel count (finer maps are skipped, as in the official code); a final block without hr
    upsamples to the mask size with `out_dim` channels.
    """

    def __init__(self, in_channels: list[int], strides: list[int], out_dim: int, mask_stride: int):
        super().__init__()
        # indices of the hr maps that are used, coarsest first
        self.hr_index = [i for i in range(len(strides) - 2, -1, -1) if strides[i] >= mask_stride]
        widths = [in_channels[i] for i in self.hr_index]
        lr_dims = [in_channels[-1]] + widths
        self.blocks = nn.ModuleList(
            UpsampleBlock(lr, dim) for lr, dim in zip(lr_dims, widths + [out_dim])
        )

    def forward(self, features: list[torch.Tensor], out_hw: tuple[int, int]) -> torch.Tensor:
        x = features[-1]
        for block, i in zip(self.blocks, self.hr_index):
            x = block(x, features[i], tuple(features[i].shape[-2:]))
        return self.blocks[-1](x, None, out_hw)


class Encoder(nn.Module):
    """images (B, 3, H, W) in [0, 1], H and W divisible by 16 -> Encoded(tokens, fused).

    With `input_norm` IMAGENET the images are normalised with ImageNet's mean and std first,
    in training and sampling alike (the padding too: it is part of the input)."""

    def __init__(self, cfg: EncoderConfig, mask_stride: int):
        super().__init__()
        self.mask_stride = mask_stride
        self.imagenet_norm = cfg.input_norm == InputNorm.IMAGENET
        self.backbone = ResNetC4(cfg.depths, cfg.width, cfg.norm, cfg.stem_pool)
        c2, c3, c4 = self.backbone.out_channels
        self.tokenizer = Tokenizer(c4, cfg.tf_dim, cfg.drop_units)
        self.transformer = TransformerEncoder(
            cfg.tf_layers, cfg.tf_dim, cfg.tf_heads, cfg.tf_mlp, cfg.drop_path, cfg.drop_units
        )
        self.fuser = FeaturePyramidMerge(
            [c2, c3, cfg.tf_dim], [4, 8, 16], cfg.fuse_dim, mask_stride
        )

    def encode_tokens(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """-> ([C2, C3, tokens as a map (B, tf_dim, H/16, W/16)], tokens (B, N, tf_dim))."""
        if self.imagenet_norm:
            images = imagenet_normalise(images)
        c2, c3, c4 = self.backbone(images)
        tokens = self.transformer(self.tokenizer(c4))
        token_map = tokens_to_map(tokens, *c4.shape[-2:])
        return [c2, c3, token_map], tokens

    def forward(self, images: torch.Tensor, fuse: bool = True) -> Encoded:
        """fuse=False skips the fuser (decoders without 'cat') and returns fused=None."""
        features, tokens = self.encode_tokens(images)
        if not fuse:
            return Encoded(tokens, None)
        out_hw = (images.shape[-2] // self.mask_stride, images.shape[-1] // self.mask_stride)
        return Encoded(tokens, self.fuser(features, out_hw))


def imagenet_normalise(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (x - mean) / std with ImageNet's statistics."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std
