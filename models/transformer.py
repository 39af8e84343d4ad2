"""Transformer parts shared by the image encoder and the TransUNet bottleneck (paper §3.1;
official `architectures/transformers.py`): pre-LN layers, drop-path, fixed sin-cos codes
and the scalar (γ) embedding. All attention goes through `F.scaled_dot_product_attention`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-6  # official LayerNormalization(epsilon=1e-6)


def glorot_linear(in_dim: int, out_dim: int) -> nn.Linear:
    """Dense layer with Keras defaults: Glorot-uniform weight, zero bias."""
    layer = nn.Linear(in_dim, out_dim)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def tokens_to_map(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Tokens (B, h·w, C) in raster order -> a contiguous map (B, C, h, w).

    The transposed view would have channels-last strides, and a 1×1 convolution on it
    gets a weight gradient in that layout, not its parameter's: DDP then copies it into
    its bucket every step. One copy of a low-resolution map avoids that.
    """
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w).contiguous()


def sincos_1d(coords: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoid code (..., ) -> (..., dim): [sin(c·ω_k), cos(c·ω_k)], ω_k = 10000^(−2k/dim)."""
    half = dim // 2
    inv_freq = 10000.0 ** (-torch.arange(half, device=coords.device, dtype=torch.float32) / half)
    angles = coords.float()[..., None] * inv_freq
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def position_codes_2d(
    n_rows: int, n_cols: int, dim: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Fixed 2-D code (n_rows·n_cols, dim), row-major (official `get_2d_position_codes`).

    Row and column coordinates are normalised to [0, 2π] so the same code family serves any
    grid size; the row code fills channels [0, dim/2), the column code [dim/2, dim).
    """
    rows = torch.arange(n_rows, device=device, dtype=torch.float32) / max(n_rows - 1, 1)
    cols = torch.arange(n_cols, device=device, dtype=torch.float32) / max(n_cols - 1, 1)
    row_code = sincos_1d(rows * 2 * math.pi, dim // 2)[:, None].expand(n_rows, n_cols, dim // 2)
    col_code = sincos_1d(cols * 2 * math.pi, dim // 2)[None, :].expand(n_rows, n_cols, dim // 2)
    return torch.cat([row_code, col_code], dim=-1).reshape(n_rows * n_cols, dim)


class ScalarEmbedding(nn.Module):
    """γ -> emb (B, out_dim): sincos(γ·time_scaling, dim) -> Dense -> SiLU -> Dense -> SiLU."""

    def __init__(self, dim: int, out_dim: int, scaling: float):
        super().__init__()
        self.dim, self.scaling = dim, scaling
        self.dense1 = glorot_linear(dim, out_dim)
        self.dense2 = glorot_linear(out_dim, out_dim)

    def forward(self, gamma: torch.Tensor) -> torch.Tensor:
        code = sincos_1d(gamma * self.scaling, self.dim)
        return F.silu(self.dense2(F.silu(self.dense1(code))))


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per example with probability p."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Attention(nn.Module):
    """Multi-head attention with separate query and (fused) key/value projections, so the
    memory may have its own width `kv_dim` (cross-attention to the encoder tokens)."""

    def __init__(self, dim: int, heads: int, kv_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.q = glorot_linear(dim, dim)
        self.kv = glorot_linear(kv_dim or dim, 2 * dim)
        self.out = glorot_linear(dim, dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """x: (B, N, dim), memory: (B, M, kv_dim) -> (B, N, dim)."""
        b, n, d = x.shape
        q = self.q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.kv(memory).view(b, memory.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """Dense -> GELU -> dropout -> Dense (official `FeedForwardLayer`)."""

    def __init__(self, dim: int, mlp_dim: int, drop_units: float = 0.0):
        super().__init__()
        self.fc1 = glorot_linear(dim, mlp_dim)
        self.fc2 = glorot_linear(mlp_dim, dim)
        self.drop = nn.Dropout(drop_units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x))))


class EncoderLayer(nn.Module):
    """Pre-LN self-attention + MLP block with drop-path on both residual branches."""

    def __init__(
        self, dim: int, heads: int, mlp_dim: int, drop_path: float = 0.0, drop_units: float = 0.0
    ):
        super().__init__()
        self.ln_attn = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, heads)
        self.ln_mlp = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, mlp_dim, drop_units)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_attn(x)
        x = x + self.drop_path(self.attn(h, h))
        return x + self.drop_path(self.mlp(self.ln_mlp(x)))


class DecoderLayer(nn.Module):
    """Pre-LN self-attention, optional cross-attention to a memory, MLP (no dropout: the
    official TransUNet bottleneck uses drop 0). `kv_dim=None` builds no cross-attention."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, kv_dim: int | None):
        super().__init__()
        self.ln_self = nn.LayerNorm(dim, eps=LN_EPS)
        self.self_attn = Attention(dim, heads)
        self.cross = kv_dim is not None
        if self.cross:
            self.ln_cross = nn.LayerNorm(dim, eps=LN_EPS)
            self.cross_attn = Attention(dim, heads, kv_dim)
        self.ln_mlp = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, mlp_dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ln_self(x)
        x = x + self.self_attn(h, h)
        if self.cross:
            x = x + self.cross_attn(self.ln_cross(x), memory)
        return x + self.mlp(self.ln_mlp(x))
