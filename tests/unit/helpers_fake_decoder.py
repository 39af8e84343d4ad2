"""A stand-in for the TransUNet whose output is a known function of its input, recording
every call, so a test can follow what Pix2SeqD feeds its decoder and work out the result
by hand.

Decoder input channels (models/pix2seq_d.py, docs/model.md "Architecture" and "Video"):
[x_t (16) | fused encoder map (fuse_dim) | video conditioning (16 per frame) | previous
x̂_0 (16, self-conditioning only)].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from pix2seqd.models.pix2seq_d import Pix2SeqD

BITS = 16  # analog bits of one (class, id) mask

# (decoder input (B, C, Hm, Wm), gamma (B,)) -> channels-last output (B, Hm, Wm, C_out)
OutputFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Call:
    inputs: torch.Tensor
    gamma: torch.Tensor
    grad_enabled: bool


class FakeDecoder(nn.Module):
    def __init__(self, fn: OutputFn):
        super().__init__()
        self.fn, self.calls = fn, []

    def forward(self, x, gamma, memory=None):
        self.calls.append(Call(x.detach().clone(), gamma.detach().clone(), torch.is_grad_enabled()))
        return self.fn(x, gamma)


def install(model: Pix2SeqD, fn: OutputFn) -> FakeDecoder:
    """Replace `model.decoder` by a FakeDecoder computing `fn`."""
    fake = FakeDecoder(fn)
    model.decoder = fake
    return fake


def x_t_of(inputs: torch.Tensor) -> torch.Tensor:
    return inputs[:, :BITS]


def cond_of(model: Pix2SeqD, inputs: torch.Tensor) -> torch.Tensor:
    start = BITS + model.cfg.encoder.fuse_dim
    return inputs[:, start : start + BITS * model.cfg.decoder.cond_frames]


def x0_prev_of(model: Pix2SeqD, inputs: torch.Tensor) -> torch.Tensor:
    assert model.cfg.decoder.self_cond
    return inputs[:, -BITS:]
