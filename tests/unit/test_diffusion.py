"""Cosine schedule, corruption, DDIM step, τ_d time pairs and the sampler loop (pinned values)."""

import math

import pytest
import torch

from pix2seqd.models.diffusion import corrupt, ddim_sample, ddim_step, gamma_cosine, time_pairs


def test_gamma_cosine_pinned():
    assert gamma_cosine(0.0) == pytest.approx(0.9999999013532888, abs=1e-15)
    assert gamma_cosine(0.5) == pytest.approx(0.49988221972164953, rel=1e-12)
    assert gamma_cosine(1.0) == pytest.approx(6.165419642888424e-09, rel=1e-9)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    expected = torch.tensor(
        [0.9999999013532888, 0.49988221972164953, 6.165419642888424e-09], dtype=torch.float64
    )
    torch.testing.assert_close(gamma_cosine(t), expected, rtol=1e-9, atol=1e-15)


def test_time_pairs_20_steps_td_2():
    expected = [
        (1.00, 0.85),
        (0.95, 0.80),
        (0.90, 0.75),
        (0.85, 0.70),
        (0.80, 0.65),
        (0.75, 0.60),
        (0.70, 0.55),
        (0.65, 0.50),
        (0.60, 0.45),
        (0.55, 0.40),
        (0.50, 0.35),
        (0.45, 0.30),
        (0.40, 0.25),
        (0.35, 0.20),
        (0.30, 0.15),
        (0.25, 0.10),
        (0.20, 0.05),
        (0.15, 0.00),
        (0.10, 0.00),
        (0.05, 0.00),
    ]
    pairs = time_pairs(20, 2.0)
    assert len(pairs) == 20
    for (t_now, t_next), (e_now, e_next) in zip(pairs, expected):
        assert t_now == pytest.approx(e_now, abs=1e-12)
        assert t_next == pytest.approx(e_next, abs=1e-12)


def test_time_pairs_td_0_is_plain_ddim():
    assert time_pairs(4, 0.0) == [(1.0, 0.75), (0.75, 0.5), (0.5, 0.25), (0.25, 0.0)]


def test_corrupt():
    x0, noise = torch.full((2, 1, 1, 1), 1.0), torch.full((2, 1, 1, 1), 2.0)
    x_t = corrupt(x0, torch.tensor([0.25, 1.0]), noise)
    assert x_t.flatten().tolist() == pytest.approx([0.5 + math.sqrt(0.75) * 2.0, 1.0])


def test_ddim_step_with_true_x0_keeps_noise():
    """With x̂_0 = x_0, a deterministic DDIM step lands exactly on corrupt(x_0, γ_next, ε)."""
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 16, 4, 4, generator=gen, dtype=torch.float64)
    eps = torch.randn(2, 16, 4, 4, generator=gen, dtype=torch.float64)
    g_now, g_next = gamma_cosine(0.8), gamma_cosine(0.5)
    x_next = ddim_step(corrupt(x0, g_now, eps), x0, g_now, g_next)
    torch.testing.assert_close(x_next, corrupt(x0, g_next, eps))


def test_sampler_returns_last_clipped_x0_estimate():
    calls = []

    def denoise(x_t, gamma, x0_prev):
        calls.append((gamma[0].item(), x0_prev.clone()))
        return torch.full_like(x_t, 0.05 * len(calls))

    out = ddim_sample(denoise, (1, 16, 2, 2), steps=3, td=1.0, b_scale=0.1)
    assert torch.equal(out, torch.full((1, 16, 2, 2), 0.1))  # 3rd estimate 0.15, clipped to b
    assert [round(g, 6) for g, _ in calls] == [round(gamma_cosine(t), 6) for t in (1, 2 / 3, 1 / 3)]
    assert calls[0][1].abs().sum() == 0  # x0_prev starts at zero, then is the last estimate
    assert torch.allclose(calls[2][1], torch.full((1, 16, 2, 2), 0.1))


def test_sampler_two_steps_closed_form():
    """N = 2, τ_d = 0, denoiser f(x) = x/2: x1 = ddim(x, f(x), γ(1), γ(0.5)); returns f(x1)."""
    gen = torch.Generator().manual_seed(3)
    out = ddim_sample(lambda x, g, p: x / 2, (1, 1, 1, 1), 2, 0.0, b_scale=10.0, generator=gen)
    x = torch.randn((1, 1, 1, 1), generator=torch.Generator().manual_seed(3)).item()
    g1, g2 = gamma_cosine(1.0), gamma_cosine(0.5)
    eps = (x - math.sqrt(g1) * x / 2) / math.sqrt(1 - g1)
    x1 = math.sqrt(g2) * x / 2 + math.sqrt(1 - g2) * eps
    assert out.item() == pytest.approx(x1 / 2, rel=1e-6)


def test_sampler_golden_values():
    """diffusers-style golden numbers for a fixed dummy denoiser at a fixed seed."""

    def denoise(x_t, gamma, x0_prev):
        signal = 0.1 * torch.tanh(3.0 * x_t + 0.5) * (1.0 - 0.5 * gamma.view(-1, 1, 1, 1))
        return signal + 0.5 * x0_prev

    gen = torch.Generator().manual_seed(0)
    out = ddim_sample(denoise, (2, 16, 8, 8), steps=20, td=2.0, b_scale=0.1, generator=gen)
    assert out.abs().max() <= 0.1
    assert out.sum().item() == pytest.approx(GOLDEN_SUM, rel=1e-4)
    assert out.abs().mean().item() == pytest.approx(GOLDEN_ABS_MEAN, rel=1e-4)


GOLDEN_SUM = 123.52285
GOLDEN_ABS_MEAN = 0.060313892
