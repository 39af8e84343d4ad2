"""Pix2SeqD.sample(..., return_probs=True): the probability of each pixel's returned class
at the last DDIM step, for the three losses, worked out by hand from a decoder whose output
is fixed; on a real tiny model it agrees with a softmax recomputed from the last decoder
output and leaves the sampled masks unchanged (models/pix2seq_d.py `class_prob`)."""

import math

import torch
from helpers_model import tiny, toy_batch
from torch import nn

from pix2seqd.models.config import DiffusionConfig, LossConfig, LossKind
from pix2seqd.models.diffusion import ddim_sample, ddim_sample_final
from pix2seqd.models.pix2seq_d import Pix2SeqD

B = 0.1  # DiffusionConfig's default b_scale
NEG = -1e4  # a logit whose softmax weight is 0 in float32


class FixedOutput(nn.Module):
    """A decoder whose channels-last output is `per_pixel` (C,) at every pixel."""

    def __init__(self, per_pixel: torch.Tensor):
        super().__init__()
        self.per_pixel = per_pixel

    def forward(self, x, gamma, memory=None):
        b, _, h, w = x.shape
        return self.per_pixel.expand(b, h, w, -1).clone()


def fixed_model(kind: LossKind, per_pixel: torch.Tensor) -> Pix2SeqD:
    model = Pix2SeqD(tiny(), DiffusionConfig(b_scale=B), LossConfig(kind=kind)).eval()
    model.decoder = FixedOutput(per_pixel)
    return model


def softmax_logits(class_probs: dict[int, float], id_value: int) -> torch.Tensor:
    """512 logits (2 groups of 256): the class group with the given probabilities, the id
    group certain of `id_value`."""
    logits = torch.full((512,), NEG)
    for value, p in class_probs.items():
        logits[value] = math.log(p)
    logits[256 + id_value] = 0.0
    return logits


def sample(model: Pix2SeqD, **kw):
    images, _ = toy_batch()
    return model.sample(images, 3, 1.0, generator=torch.Generator().manual_seed(0), **kw)


def test_softmax_probability_of_the_class_the_expected_bits_give():
    # p(2) = 0.6, p(3) = 0.4: E[bit0] = 0.4 (only 3 = 0b11 has it), E[bit1] = 1 -> class 2
    masks, probs = sample(
        fixed_model(LossKind.SOFTMAX_CE, softmax_logits({2: 0.6, 3: 0.4}, 5)), return_probs=True
    )
    assert probs.shape == (2, 16, 16) and probs.dtype == torch.float32
    assert (masks[:, 0] == 2).all() and (masks[:, 1] == 5).all()
    torch.testing.assert_close(probs, torch.full_like(probs, 0.6))


def test_softmax_probability_is_that_of_the_clipped_class():
    # all mass on 12 = 0b1100; the tiny model's classes stop at 7, so 7 = 0b0111 is
    # returned, which the softmax gives weight 0
    masks, probs = sample(
        fixed_model(LossKind.SOFTMAX_CE, softmax_logits({12: 1.0}, 1)), return_probs=True
    )
    assert (masks[:, 0] == 7).all()
    assert probs.abs().max() < 1e-6


def test_sigmoid_probability_is_the_product_of_the_class_bits():
    # class bits: bit0 σ = 0.75 (set), bit1 σ = 0.2 (clear, 0.8), bits 2-7 certainly clear
    out = torch.full((16,), -30.0)
    out[0], out[1] = math.log(3.0), -math.log(4.0)
    masks, probs = sample(fixed_model(LossKind.SIGMOID_CE, out), return_probs=True)
    assert (masks[:, 0] == 1).all()
    torch.testing.assert_close(probs, torch.full_like(probs, 0.75 * 0.8))


def test_l2_probability_reads_the_clipped_estimate_as_bit_expectations():
    # x̂_0 class bits: +0.5b -> 0.75, -0.6b -> 0.8, -2b clipped to -b -> 1
    out = torch.full((16,), -2 * B)
    out[0], out[1] = 0.5 * B, -0.6 * B
    masks, probs = sample(fixed_model(LossKind.L2, out), return_probs=True)
    assert (masks[:, 0] == 1).all()
    torch.testing.assert_close(probs, torch.full_like(probs, 0.75 * 0.8))


def test_tiny_model_probabilities_match_the_last_decoder_output():
    torch.manual_seed(3)
    model = Pix2SeqD(tiny(), DiffusionConfig(), LossConfig()).eval()
    with torch.no_grad():  # the head starts near zero (uniform softmax): make pixels differ
        head = model.decoder.conv_out
        head.weight.copy_(torch.randn_like(head.weight) * 3)
        head.bias[:8] += 3.0  # and favour the classes the tiny model has
    outputs = []
    model.decoder.register_forward_hook(lambda m, i, o: outputs.append(o.detach().clone()))
    plain = sample(model)
    masks, probs = sample(model, return_probs=True)
    assert torch.equal(plain, masks)  # the extra output changes nothing that was sampled
    softmax = outputs[-1][..., :256].float().softmax(-1)  # the class group of the last step
    expected = softmax.gather(-1, masks[:, 0, :, :, None]).squeeze(-1)
    torch.testing.assert_close(probs, expected, rtol=1e-5, atol=1e-6)
    # where one class has most of the mass, its bits are also the majority bits: returned
    confident = softmax.max(-1).values > 0.5
    assert confident.any() and not confident.all()
    assert probs.max() - probs.min() > 0.5
    assert torch.equal(masks[:, 0][confident], softmax.argmax(-1).clamp(max=7)[confident])


def test_tiny_model_with_a_dominant_class_is_confident():
    torch.manual_seed(3)
    model = Pix2SeqD(tiny(), DiffusionConfig(), LossConfig()).eval()
    with torch.no_grad():
        model.decoder.conv_out.bias[3] += 40.0  # class value 3 of the class group
    masks, probs = sample(model, return_probs=True)
    assert (masks[:, 0] == 3).all() and probs.min() > 0.99


def test_final_fn_runs_once_at_the_last_step_and_keeps_the_result():
    def denoise(x, g, prev):
        return torch.tanh(x + prev)

    seen = []

    def final(x, g, prev):
        seen.append(g.clone())
        return denoise(x, g, prev), "extra"

    shape, gen = (1, 16, 2, 2), lambda: torch.Generator().manual_seed(4)
    x0, extra = ddim_sample_final(denoise, final, shape, 4, 1.0, 0.5, gen())
    assert extra == "extra" and len(seen) == 1
    # the last step is at t_now = 1/N = 0.25: γ = cos²((0.25 + 2e-4)/(1 + 2.5e-4)·π/2)
    g_last = math.cos((0.25 + 2e-4) / (1 + 2.5e-4) * math.pi / 2) ** 2
    torch.testing.assert_close(seen[0], torch.full((1,), g_last))
    assert torch.equal(x0, ddim_sample(denoise, shape, 4, 1.0, 0.5, gen()))
    assert ddim_sample_final(denoise, None, shape, 4, 1.0, 0.5, gen())[1] is None


def test_no_steps_gives_zero_probabilities():
    model = Pix2SeqD(tiny(), DiffusionConfig(), LossConfig()).eval()
    images, _ = toy_batch()
    masks, probs = model.sample(images, 0, 1.0, return_probs=True)
    assert (masks == 0).all() and (probs == 0).all() and probs.shape == (2, 16, 16)
