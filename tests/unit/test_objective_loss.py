"""Pix2SeqD.loss's wiring (paper Algorithm 1, §3.2-3.4), with the decoder replaced by a known
function of its input (helpers_fake_decoder): the weight exponent p reaches the loss, t
reaches the decoder as γ(t) with x_t = √γ·x_0 + √(1−γ)·ε, frame dropout acts in training
only, and self-conditioning makes a no-grad first pass whose estimate the second pass sees
for about half of the examples."""

import math

import pytest
import torch
from helpers_fake_decoder import cond_of, install, x0_prev_of, x_t_of
from helpers_model import tiny, toy_batch
from helpers_threads import one_thread

from pix2seqd.models.config import DiffusionConfig, LossConfig, LossKind
from pix2seqd.models.pix2seq_d import Pix2SeqD

B = 0.1  # b_scale
K = 16  # helpers_model.TINY's max_instances
# 16x16 mask: id 1 a 8x8 square (64 px), id 2 a 4x4 square (16 px), 4 px of id 20 >= K
# (weight 0), the rest id 0 (172 px)
COUNTS = {0: 172, 1: 64, 2: 16}


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def hand_mask() -> torch.Tensor:
    ids = torch.zeros(16, 16, dtype=torch.long)
    ids[:8, :8] = 1
    ids[10:14, 10:14] = 2
    ids[15, 12:16] = 20
    classes = torch.where(ids > 0, 3, 0)
    return torch.stack([classes, ids])[None]


def analog_bits(masks: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) (class, id) -> x_0 (B, 16, H, W) by hand: 8 class bits then 8 id bits,
    LSB first, bit -> (2·bit − 1)·b."""
    bits = (masks[:, :, None] >> torch.arange(8).view(1, 1, 8, 1, 1)) & 1
    return ((2.0 * bits - 1.0) * B).flatten(1, 2)


def l2_model(p: float, **decoder) -> Pix2SeqD:
    torch.manual_seed(0)
    return Pix2SeqD(tiny(**decoder), DiffusionConfig(b_scale=B), LossConfig(LossKind.L2, p))


@pytest.mark.parametrize("p", [0.0, 0.6, 1.0])
def test_p_weights_the_per_pixel_losses(p):
    """The decoder returns the true bits on id 1 and 0 elsewhere, so each pixel of id 0, id 2
    and id 20 has squared error b² on each of its 16 bits. With w = (1/(c + 1))^p per pixel
    (c = pixels of its id, ids >= K weigh 0), normalised to sum to H·W, the loss is
    b²·Σ_{id 0, id 2} w / Σ w."""
    images, masks = toy_batch(1)[0], hand_mask()
    perfect_on_id_1 = torch.where(masks[:, 1:] == 1, analog_bits(masks), 0.0)
    model = l2_model(p).eval()
    install(model, lambda inputs, g: perfect_on_id_1.permute(0, 2, 3, 1))

    w = {i: (1 / (c + 1)) ** p for i, c in COUNTS.items()}
    total = sum(COUNTS[i] * w[i] for i in COUNTS)
    expected = B**2 * (COUNTS[0] * w[0] + COUNTS[2] * w[2]) / total
    assert model.loss(images, masks).item() == pytest.approx(expected, rel=1e-5)
    if p == 0.0:  # uniform over the 252 valid pixels
        assert expected == pytest.approx(B**2 * 188 / 252)


def test_t_reaches_the_decoder_as_gamma_and_corrupts_x0():
    """Algorithm 1 draws t ~ U(0, 1) per example, then ε; the decoder is told γ(t), not t,
    and sees x_t = √γ·x_0 + √(1−γ)·ε. In eval mode nothing else draws random numbers first."""
    images, masks = toy_batch(3)
    model = l2_model(0.2).eval()
    fake = install(model, lambda inputs, g: inputs[:, :16].permute(0, 2, 3, 1))
    torch.manual_seed(11)
    t = torch.rand(3)
    eps = torch.randn(3, 16, 16, 16)
    torch.manual_seed(11)
    model.loss(images, masks)

    (call,) = fake.calls
    gammas = [math.cos((s + 2e-4) / (1 + 2.5e-4) * math.pi / 2) ** 2 for s in t.tolist()]
    torch.testing.assert_close(call.gamma, torch.tensor(gammas), rtol=1e-6, atol=1e-7)
    assert len(set(call.gamma.tolist())) == 3  # one t per example
    g = torch.tensor(gammas).view(3, 1, 1, 1)
    expected = g.sqrt() * analog_bits(masks) + (1 - g).sqrt() * eps
    torch.testing.assert_close(x_t_of(call.inputs), expected, rtol=0, atol=1e-6)


def _cond_bits(frames: list[tuple[int, int]]) -> torch.Tensor:
    """Conditioning channels of constant (class, id) frames, oldest first, by hand: 8 class
    bits then 8 id bits per frame, LSB first, bit -> (2·bit − 1)·b."""
    bits = [(v >> k) & 1 for c, i in frames for v in (c, i) for k in range(8)]
    return (2.0 * torch.tensor(bits, dtype=torch.float32) - 1.0) * B


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_frame_dropout_acts_in_training_only(mode):
    """With frame_dropout 1 every conditioning frame is dropped in training (all bits −b, a
    missing frame); in eval mode the decoder sees the history's bits."""
    images, masks = toy_batch()
    model = l2_model(0.2, cond_frames=2, frame_dropout=1.0)
    model.train(mode == "train")
    fake = install(model, lambda inputs, g: inputs[:, :16].permute(0, 2, 3, 1))
    history = torch.zeros(2, 2, 2, 16, 16, dtype=torch.long)
    history[:, 0, 0], history[:, 0, 1] = 3, 5  # t−2: class 3, id 5
    history[:, 1, 0], history[:, 1, 1] = 6, 9  # t−1: class 6, id 9
    model.loss(images, masks, history)

    seen = cond_of(model, fake.calls[0].inputs)
    expected = _cond_bits([(0, 0), (0, 0)] if mode == "train" else [(3, 5), (6, 9)])
    torch.testing.assert_close(seen, expected.view(1, 32, 1, 1).expand_as(seen))


def test_without_dropout_training_keeps_the_history():
    """The training-mode drop above is frame dropout's doing: at rate 0 the frames stay."""
    images, masks = toy_batch()
    model = l2_model(0.2, cond_frames=2, frame_dropout=0.0, history_dropout=0.0).train()
    fake = install(model, lambda inputs, g: inputs[:, :16].permute(0, 2, 3, 1))
    history = torch.zeros(2, 2, 2, 16, 16, dtype=torch.long)
    history[:, 1, 0], history[:, 1, 1] = 6, 9
    model.loss(images, masks, history)
    seen = cond_of(model, fake.calls[0].inputs)
    expected = _cond_bits([(0, 0), (6, 9)])
    torch.testing.assert_close(seen, expected.view(1, 32, 1, 1).expand_as(seen))


def test_self_conditioning_runs_a_no_grad_pass_and_feeds_half_the_batch_its_estimate():
    images, masks = toy_batch(64)
    model = l2_model(0.2, self_cond=True).train()
    # x̂_0 of an l2 head = its output clipped to [−b, b]; 0.2·tanh(x_t) reaches past b
    fake = install(model, lambda inputs, g: 0.2 * torch.tanh(inputs[:, :16]).permute(0, 2, 3, 1))
    torch.manual_seed(3)
    model.loss(images, masks)

    first, second = fake.calls
    assert (first.grad_enabled, second.grad_enabled) == (False, True)
    assert torch.equal(first.gamma, second.gamma)
    assert torch.equal(x_t_of(first.inputs), x_t_of(second.inputs))
    assert x0_prev_of(model, first.inputs).abs().sum() == 0
    estimate = (0.2 * torch.tanh(x_t_of(first.inputs))).clamp(-B, B)
    prev = x0_prev_of(model, second.inputs)
    kept = [torch.equal(p, e) for p, e in zip(prev, estimate)]
    zero = [p.abs().sum().item() == 0 for p in prev]
    assert all(k != z for k, z in zip(kept, zero))  # each example: the estimate or zeros
    assert 20 <= sum(kept) <= 44  # rate 0.5 of 64 (binomial sd 4)


def test_without_self_conditioning_one_decoder_pass():
    images, masks = toy_batch()
    model = l2_model(0.2).train()
    fake = install(model, lambda inputs, g: inputs[:, :16].permute(0, 2, 3, 1))
    model.loss(images, masks)
    assert [c.grad_enabled for c in fake.calls] == [True]
