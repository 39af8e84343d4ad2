"""`loss.fused`: the head and the softmax cross-entropy in chunks (models/fused_ce.py) give
the plain loss's value and gradients, hold fewer bytes for the backward pass, and compile
without a graph break."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from helpers_model import TINY, loss_grads_saved, toy_batch

from pix2seqd.models.config import DiffusionConfig, LossConfig
from pix2seqd.models.fused_ce import fused_softmax_ce
from pix2seqd.models.losses import softmax_ce_loss
from pix2seqd.models.pix2seq_d import Pix2SeqD


def _head_case(rows_h: int = 5, rows_w: int = 3, feat: int = 6, groups: int = 2):
    g = torch.Generator().manual_seed(0)
    n = 2 ** (16 // groups)
    h = torch.randn(2, rows_h, rows_w, feat, generator=g, dtype=torch.float64)
    weight = torch.randn(groups * n, feat, generator=g, dtype=torch.float64) * 0.3
    bias = torch.randn(groups * n, generator=g, dtype=torch.float64) * 0.1
    masks = torch.randint(0, 200, (2, 2, rows_h, rows_w), generator=g)
    weights = torch.rand(2, rows_h, rows_w, generator=g, dtype=torch.float64)
    return h, weight, bias, masks, weights


def test_fused_head_loss_equals_the_plain_loss_and_its_gradients_in_any_chunking():
    h, weight, bias, masks, weights = _head_case()
    leaves = [t.clone().requires_grad_() for t in (h, weight, bias)]
    logits = F.linear(leaves[0], leaves[1], leaves[2]).unflatten(-1, (2, -1))
    plain = softmax_ce_loss(logits, masks, weights.float())
    plain.backward()
    for chunk in (1, 7, 30, 1 << 16):  # 30 rows: one chunk; 7: a ragged last chunk
        fused_leaves = [t.clone().requires_grad_() for t in (h, weight, bias)]
        fused = fused_softmax_ce(*fused_leaves, masks, weights, groups=2, chunk=chunk)
        fused.backward()
        torch.testing.assert_close(fused.double(), plain.double(), rtol=1e-6, atol=1e-9)
        for a, b in zip(fused_leaves, leaves):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-9)


def test_fused_head_loss_with_four_groups():
    h, weight, bias, masks, weights = _head_case(groups=4)
    logits = F.linear(h, weight, bias).unflatten(-1, (4, -1))
    torch.testing.assert_close(
        fused_softmax_ce(h, weight, bias, masks, weights, groups=4, chunk=4).double(),
        softmax_ce_loss(logits, masks, weights).double(),
        rtol=1e-6,
        atol=1e-9,
    )


def _model(fused: bool) -> Pix2SeqD:
    torch.manual_seed(0)
    return Pix2SeqD(TINY, DiffusionConfig(), LossConfig(fused=fused)).train()


def test_fused_model_loss_matches_the_plain_model_and_saves_less():
    loss_a, grads_a, saved_a = loss_grads_saved(_model(False))
    loss_b, grads_b, saved_b = loss_grads_saved(_model(True))
    # stated tolerance: float32 rounding of a differently ordered sum
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    assert len(grads_a) == len(grads_b)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)
    # the 512 logits per mask pixel and their float32 log-softmax are no longer kept
    assert saved_b < saved_a, (saved_b, saved_a)


def test_losses_compile_whole_graphs():
    """fullgraph=True: a graph break in the training loss would raise here (backend
    'eager': dynamo's tracing without code generation). The plain image loss, and the video
    model's loss (frame dropout) with the fused head and activation checkpointing."""
    images, masks = toy_batch()
    video = dataclasses.replace(TINY, decoder=dataclasses.replace(TINY.decoder, cond_frames=2))
    cond = masks[:, None].expand(-1, 2, -1, -1, -1).clone()
    for cfg, fused, remat, extra in ((TINY, False, False, ()), (video, True, True, (cond,))):
        torch.manual_seed(0)
        model = Pix2SeqD(cfg, DiffusionConfig(), LossConfig(fused=fused)).train()
        model.set_grad_checkpointing(remat)
        compiled = torch.compile(model.loss, backend="eager", fullgraph=True, dynamic=False)
        torch.manual_seed(2)
        expected = model.loss(images, masks, *extra)
        torch.manual_seed(2)
        got = compiled(images, masks, *extra)
        got.backward()
        torch.testing.assert_close(got, expected)
        assert model.decoder.conv_out.weight.grad is not None
