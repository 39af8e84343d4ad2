"""TransUNet mask decoder (paper §3.1, docs/model.md; official `architectures/transunet.py`).

U-Net over the decoder input [x_t | fused | video bits | self-cond bits] with FiLM time
conditioning from the γ embedding and a transformer at the bottleneck (time token +
cross-attention to the encoder tokens). Shapes below for mask (Hm, Wm), dim D = 128,
ch_mult (1, 1, 2, 2): levels at Hm, Hm/2, Hm/4, Hm/8 with D, D, 2D, 2D channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import DecoderConfig
from .encoder import glorot_conv, group_norm
from .remat import run_block
from .transformer import (
    DecoderLayer,
    ScalarEmbedding,
    glorot_linear,
    position_codes_2d,
    tokens_to_map,
)


class ResBlock(nn.Module):
    """h = conv(SiLU(GN(x))); h = SiLU(GN(h)·(1+scale)+shift); h = conv(h); (h + skip(x))/√2."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, init_gain: float):
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), glorot_conv(c_in, c_out, 3)
        self.film = glorot_linear(emb_dim, 2 * c_out)
        self.norm2, self.conv2 = group_norm(c_out), glorot_conv(c_out, c_out, 3, gain=init_gain)
        self.skip = glorot_conv(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x: (B, c_in, h, w), emb: (B, emb_dim) -> (B, c_out, h, w)."""
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return (h + self.skip(x)) / math.sqrt(2.0)


class BottleneckTransformer(nn.Module):
    """(B, C, h, w) -> (B, tf_dim, h, w): GN -> 1x1 conv -> tokens + 2-D code, + time token ->
    decoder layers (cross-attention when kv_dim is set) -> drop time token -> GN -> 1x1 conv."""

    def __init__(self, c_in: int, cfg: DecoderConfig, emb_dim: int, kv_dim: int | None):
        super().__init__()
        self.norm_in, self.proj_in = group_norm(c_in), glorot_conv(c_in, cfg.tf_dim, 1)
        self.time_token = glorot_linear(emb_dim, cfg.tf_dim)
        self.layers = nn.ModuleList(
            DecoderLayer(cfg.tf_dim, cfg.tf_heads, cfg.tf_mlp, kv_dim) for _ in range(cfg.tf_layers)
        )
        self.norm_out = group_norm(cfg.tf_dim)
        self.proj_out = glorot_conv(cfg.tf_dim, cfg.tf_dim, 1)

    remat = False  # models/remat.py; set by Pix2SeqD.set_grad_checkpointing

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, memory: torch.Tensor | None
    ) -> torch.Tensor:
        b, _, h, w = x.shape
        tokens = self.proj_in(self.norm_in(x)).flatten(2).transpose(1, 2)
        tokens = tokens + position_codes_2d(h, w, tokens.shape[-1], x.device).to(tokens.dtype)
        tokens = torch.cat([tokens, self.time_token(emb)[:, None]], dim=1)
        for layer in self.layers:
            tokens = run_block(layer, tokens, memory, remat=self.remat)
        x = tokens_to_map(tokens[:, :-1], h, w)
        return self.proj_out(self.norm_out(x))


class TransUNet(nn.Module):
    """Denoiser: (x (B, in_channels, Hm, Wm), gamma (B,), memory (B, N, kv_dim) | None) ->
    channels-last (B, Hm, Wm, out_channels); out_channels = 2·256 logits (softmax_ce) or 16
    (l2/sigmoid_ce). Channels-last because the 512-wide head then is one contiguous matmul and
    the softmax groups are contiguous rows (≈4x faster on CPU than a 1x1 conv + NCHW softmax).

    Hm and Wm must be divisible by 2**(len(ch_mult) − 1). `kv_dim=None` builds no cross-attention.
    """

    def __init__(self, cfg: DecoderConfig, in_channels: int, out_channels: int, kv_dim: int | None):
        super().__init__()
        dim, emb_dim = cfg.dim, 4 * cfg.dim
        gain = math.sqrt(cfg.init_scale)  # VarianceScaling(s) = Glorot with gain √s
        self.time_emb = ScalarEmbedding(dim, emb_dim, cfg.time_scaling)
        self.conv_in, self.norm_in = glorot_conv(in_channels, dim, 1), group_norm(dim)
        chans = [dim * m for m in cfg.ch_mult]
        skips, c = [dim], dim
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        for i, ch in enumerate(chans):
            blocks = nn.ModuleList()
            for _ in range(cfg.n_res_blocks):
                blocks.append(ResBlock(c, ch, emb_dim, gain))
                c = ch
                skips.append(c)
            self.down.append(blocks)
            if i < len(chans) - 1:
                self.downsample.append(glorot_conv(c, c, 3, stride=2))
                skips.append(c)
        self.bottleneck = BottleneckTransformer(c, cfg, emb_dim, kv_dim)
        c = cfg.tf_dim
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, ch in reversed(list(enumerate(chans))):
            blocks = nn.ModuleList()
            for _ in range(cfg.n_res_blocks + 1):
                blocks.append(ResBlock(c + skips.pop(), ch, emb_dim, gain))
                c = ch
            self.up.append(blocks)
            if i > 0:
                self.upsample.append(glorot_conv(c, c, 3))
        self.norm_out = group_norm(c)
        self.conv_out = glorot_conv(c, out_channels, 1, gain=gain)

    remat = False  # models/remat.py; set by Pix2SeqD.set_grad_checkpointing

    def forward(
        self, x: torch.Tensor, gamma: torch.Tensor, memory: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.features(x, gamma, memory)
        return F.linear(h, self.conv_out.weight.flatten(1), self.conv_out.bias)

    def features(
        self, x: torch.Tensor, gamma: torch.Tensor, memory: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The head's input: channels-last features (B, Hm, Wm, C) of the last up block
        (`forward` applies the head, `conv_out`, to them)."""
        emb = self.time_emb(gamma)
        x = self.norm_in(self.conv_in(x))
        skips = [x]
        for i, blocks in enumerate(self.down):
            for block in blocks:
                x = run_block(block, x, emb, remat=self.remat)
                skips.append(x)
            if i < len(self.downsample):
                x = self.downsample[i](x)
                skips.append(x)
        x = self.bottleneck(x, emb, memory)
        for i, blocks in enumerate(self.up):
            for block in blocks:
                x = run_block(block, torch.cat([x, skips.pop()], dim=1), emb, remat=self.remat)
            if i < len(self.upsample):
                x = self.upsample[i](F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return F.silu(self.norm_out(x)).permute(0, 2, 3, 1)
