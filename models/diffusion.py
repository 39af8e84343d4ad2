"""Bit Diffusion process: cosine schedule, forward corruption, DDIM with asymmetric time
intervals (paper §3, Algorithms 1-2; official `diffusion_utils.Scheduler`). Pure functions.

    code name      paper symbol   meaning
    t              t ∈ [0, 1]     diffusion time (t = 1: pure noise)
    gamma          γ(t)           signal level, x_t = √γ·x_0 + √(1−γ)·ε
    td             τ_d            asymmetric time difference (§3.3): the network is asked about
                                  t_now but the state is moved to t_next = t_now − (1+τ_d)/N
    b_scale        b              analog bits live in {−b, +b}; x̂_0 is clipped to [−b, b]
    x0_hat         x̂_0            network estimate of the clean bits
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

# DenoiseFn(x_t (B, C, H, W), gamma (B,), x0_prev (B, C, H, W)) -> x0_hat (B, C, H, W).
# x0_prev is the previous x̂_0 (zeros at the first step) for self-conditioning; others ignore it.
DenoiseFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# FinalFn: the same arguments -> (x0_hat, anything else the last step wants to hand back).
FinalFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, Any]]
# StopFn(previous x̂_0, current x̂_0) -> whether the sampler stops now (an adaptive rule).
StopFn = Callable[[torch.Tensor, torch.Tensor], bool]


def gamma_cosine(t: torch.Tensor | float) -> torch.Tensor | float:
    """γ(t) = cos²((t + 2e-4)/(1 + 2.5e-4)·π/2) (official 'cosine' = `cosine_schedule_simple`).

    Works on a tensor (any shape) or a Python float (then computed in double precision).
    """
    if isinstance(t, torch.Tensor):
        return torch.cos((t + 2e-4) / (1 + 2.5e-4) * (math.pi / 2)) ** 2
    return math.cos((t + 2e-4) / (1 + 2.5e-4) * (math.pi / 2)) ** 2


def _roots(
    gamma: torch.Tensor | float, x: torch.Tensor
) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    """(√γ, √(1−γ)) broadcastable against x (B, C, H, W); gamma is (B,), 0-d or a float.

    Floats stay in double precision: near t = 0, 1 − γ ≈ 1e-7 is below float32 resolution.
    """
    if not isinstance(gamma, torch.Tensor):
        return math.sqrt(gamma), math.sqrt(1 - gamma)
    g = gamma.to(x.dtype)
    g = g.view(-1, *([1] * (x.dim() - 1))) if g.dim() == 1 else g
    return g.sqrt(), (1 - g).sqrt()


def corrupt(x0: torch.Tensor, gamma: torch.Tensor | float, noise: torch.Tensor) -> torch.Tensor:
    """Forward process x_t = √γ·x_0 + √(1−γ)·ε. x0, noise: (B, C, H, W); gamma: (B,) or scalar."""
    root_g, root_1mg = _roots(gamma, x0)
    return root_g * x0 + root_1mg * noise


def time_pairs(steps: int, td: float) -> list[tuple[float, float]]:
    """[(t_now, t_next)] for i = 0..N−1: t_now = 1 − i/N, t_next = max(1 − (i+1+τ_d)/N, 0)."""
    return [(1 - i / steps, max(1 - (i + 1 + td) / steps, 0.0)) for i in range(steps)]


def ddim_step(
    x_t: torch.Tensor,
    x0_hat: torch.Tensor,
    gamma_now: float | torch.Tensor,
    gamma_next: float | torch.Tensor,
) -> torch.Tensor:
    """Deterministic DDIM (η = 0) move from γ_now to γ_next given x̂_0 (official `transition_step`).

    ε̂ = (x_t − √γ_now·x̂_0)/√(1−γ_now);  x_next = √γ_next·x̂_0 + √(1−γ_next)·ε̂.
    """
    root_now, root_1m_now = _roots(gamma_now, x_t)
    root_next, root_1m_next = _roots(gamma_next, x_t)
    eps_hat = (x_t - root_now * x0_hat) / root_1m_now
    return root_next * x0_hat + root_1m_next * eps_hat


def ddim_sample(
    denoise_fn: DenoiseFn,
    shape: tuple[int, ...],
    steps: int,
    td: float,
    b_scale: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Algorithm 2 of the paper with asymmetric time intervals (docs/model.md, "Sampler").

    Starts from x ~ N(0, I) of `shape` (B, C, H, W) and returns the LAST x̂_0 estimate (made at
    t = 1/N), clipped to [−b, b] — not the final DDIM state. With a generator the noise is
    drawn on the generator's device, so a CPU generator gives the same start on any device.
    """
    x0_hat, _ = ddim_sample_final(denoise_fn, None, shape, steps, td, b_scale, generator, device)
    return x0_hat


def ddim_sample_final(
    denoise_fn: DenoiseFn,
    final_fn: FinalFn | None,
    shape: tuple[int, ...],
    steps: int,
    td: float,
    b_scale: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    stop: StopFn | None = None,
) -> tuple[torch.Tensor, Any]:
    """`ddim_sample` whose last step (t = 1/N) calls `final_fn` instead of `denoise_fn`.

    final_fn(x_t, gamma, x0_prev) -> (x̂_0, extra) lets a caller keep what the network said
    at that step besides x̂_0 (the class probabilities of `Pix2SeqD.sample`) without a second
    network call. Returns (the last x̂_0 clipped to [−b, b], extra); extra is None when
    `final_fn` is None or steps = 0 (then x̂_0 is all zeros, as in `ddim_sample`).
    stop(previous x̂_0, x̂_0) is asked after every step but the first and the last; when it
    says so the sampler returns that step's x̂_0 (extra None): an adaptive step count.
    """
    noise_device = generator.device if generator is not None else device
    x = torch.randn(shape, generator=generator, device=noise_device).to(device)
    x0_hat, extra = torch.zeros_like(x), None
    pairs = time_pairs(steps, td)
    for i, (t_now, t_next) in enumerate(pairs):
        previous = x0_hat
        g_now, g_next = gamma_cosine(t_now), gamma_cosine(t_next)
        gamma = torch.full((shape[0],), g_now, device=device)
        if final_fn is not None and i == len(pairs) - 1:
            x0_hat, extra = final_fn(x, gamma, x0_hat)
        else:
            x0_hat = denoise_fn(x, gamma, x0_hat)
        x0_hat = x0_hat.float().clamp(-b_scale, b_scale)
        if stop is not None and 0 < i < len(pairs) - 1 and stop(previous, x0_hat):
            return x0_hat, None
        x = ddim_step(x, x0_hat, g_now, g_next)
    return x0_hat, extra
