"""Pix2SeqD.sample with τ_d > 0 against Algorithm 2 unrolled by hand (paper §3.3): γ from
the cosine formula and the x̂_0 -> x_{t'} update are written out here, and the decoder is
replaced by a known function of its input (helpers_fake_decoder), so every decoder input,
every γ and the final (class, id) map can be worked out without the model's code."""

import math

import pytest
import torch
from helpers_fake_decoder import FakeDecoder, install, x_t_of
from helpers_model import tiny, toy_batch
from helpers_threads import one_thread

from pix2seqd.models import pix2seq_d
from pix2seqd.models.bits import analog_bits_to_int
from pix2seqd.models.config import DiffusionConfig, LossConfig, LossKind
from pix2seqd.models.pix2seq_d import Pix2SeqD

B_SCALE = 0.3
STEPS, TD = 3, 1.5  # (t_now, t_next): (1, 1/6), (2/3, 0 clipped from −1/6), (1/3, 0)
SEED = 7
NUM_CLASSES, K = 8, 16  # helpers_model.TINY


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def gamma(t: float) -> float:
    """γ(t) = cos²((t + 2e-4)/(1 + 2.5e-4)·π/2), the cosine schedule of §3.1."""
    return math.cos((t + 2e-4) / (1 + 2.5e-4) * math.pi / 2) ** 2


def network(x_t: torch.Tensor, g: torch.Tensor, x0_prev: torch.Tensor) -> torch.Tensor:
    """The fake network's x̂_0 before clipping: reaches past ±b, so clipping matters, and
    depends on x_t, γ and the previous estimate. g broadcasts over (B, 16, H, W)."""
    return 0.4 * torch.tanh(4.0 * x_t + 1.0) * (1.0 - 0.5 * g) + 0.5 * x0_prev


def unrolled(noise: torch.Tensor, td: float, self_cond: bool):
    """Algorithm 2 by hand in float64: per step, the x_t the network sees, the γ it is told
    and its clipped x̂_0 (the sampler's result is the last x̂_0, not the last x_t)."""
    x, x0 = noise.double(), torch.zeros_like(noise, dtype=torch.float64)
    seen, gammas, estimates = [], [], []
    for i in range(STEPS):
        t_now, t_next = 1 - i / STEPS, max(1 - (i + 1 + td) / STEPS, 0.0)
        g_now, g_next = gamma(t_now), gamma(t_next)
        seen.append(x)
        gammas.append(g_now)
        prev = x0 if self_cond else torch.zeros_like(x0)
        x0 = network(x, torch.tensor(g_now, dtype=torch.float64), prev).clamp(-B_SCALE, B_SCALE)
        estimates.append(x0)
        eps = (x - math.sqrt(g_now) * x0) / math.sqrt(1 - g_now)  # ε̂
        x = math.sqrt(g_next) * x0 + math.sqrt(1 - g_next) * eps  # deterministic DDIM
    return seen, gammas, estimates


def to_ints(x0: torch.Tensor) -> torch.Tensor:
    """x̂_0 (B, 16, H, W) -> (class, id): bit k of each channel is x̂_0 > 0, LSB first,
    class clipped to num_classes − 1 and id to K − 1."""
    bits = (x0 > 0).long().view(x0.shape[0], 2, 8, *x0.shape[2:])
    ints = sum(bits[:, :, k] << k for k in range(8))
    return torch.stack([ints[:, 0].clamp(max=NUM_CLASSES - 1), ints[:, 1].clamp(max=K - 1)], 1)


def fake_model(self_cond: bool) -> tuple[Pix2SeqD, FakeDecoder]:
    model = Pix2SeqD(
        tiny(self_cond=self_cond), DiffusionConfig(b_scale=B_SCALE), LossConfig(kind=LossKind.L2)
    ).eval()

    def decoder(inputs: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        prev = inputs[:, -16:] if self_cond else torch.zeros_like(inputs[:, :16])
        out = network(x_t_of(inputs), g.view(-1, 1, 1, 1), prev)
        return out.permute(0, 2, 3, 1)  # an l2 head is channels-last x̂_0

    return model, install(model, decoder)


@pytest.mark.parametrize("self_cond", [False, True])
def test_sampler_with_td_matches_algorithm_2_unrolled_by_hand(self_cond, monkeypatch):
    model, fake = fake_model(self_cond)
    quantised = []  # the analog x̂_0 the sampler turns into (class, id)

    def spy(x, num_classes, max_instances):
        quantised.append(x.clone())
        return analog_bits_to_int(x, num_classes, max_instances)

    monkeypatch.setattr(pix2seq_d, "analog_bits_to_int", spy)
    images, _ = toy_batch()
    out = model.sample(images, STEPS, TD, generator=torch.Generator().manual_seed(SEED))

    noise = torch.randn(2, 16, 16, 16, generator=torch.Generator().manual_seed(SEED))
    seen, gammas, estimates = unrolled(noise, TD, self_cond)
    assert len(fake.calls) == STEPS
    previous = [torch.zeros_like(estimates[0])] + estimates[:-1]
    for call, x_t, g, prev in zip(fake.calls, seen, gammas, previous):
        torch.testing.assert_close(call.gamma, torch.full((2,), g), rtol=1e-6, atol=0)
        torch.testing.assert_close(x_t_of(call.inputs).double(), x_t, rtol=0, atol=2e-6)
        if self_cond:  # the previous clipped estimate; zeros at the first step
            torch.testing.assert_close(call.inputs[:, -16:].double(), prev, rtol=0, atol=1e-5)
    (last,) = quantised
    torch.testing.assert_close(last.double(), estimates[-1], rtol=0, atol=1e-5)
    assert torch.equal(out, to_ints(last))
    assert out.unique().numel() > 2  # the map is not a constant that anything would match


def test_the_unrolled_reference_tells_td_apart():
    """The hand reference is sensitive to τ_d: a sampler that ignored it (τ_d = 0) would put
    a different x_t in front of the network from the second step on."""
    noise = torch.randn(2, 16, 16, 16, generator=torch.Generator().manual_seed(SEED))
    with_td, _, _ = unrolled(noise, TD, False)
    without, _, _ = unrolled(noise, 0.0, False)
    assert torch.equal(with_td[0], without[0])
    assert (with_td[1] - without[1]).abs().max() > 0.05
