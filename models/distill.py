"""Progressive distillation of the DDIM sampler (Salimans & Ho, "Progressive Distillation for
Fast Sampling of Diffusion Models", ICLR 2022, Algorithm 2) for the analog-bit x̂_0 model
with the asymmetric time difference of paper §3.3 (docs/distillation.md).

A student sampling with N steps and time difference τ_d is trained so that each of its
steps lands where two steps of the teacher, sampling with 2N steps and 2·τ_d, land:

    student step i   told t = 1 − i/N, moved to t' = max(1 − (i + 1 + τ_d)/N, 0)
    teacher steps    2i and 2i + 1 of its 2N-step grid: told t, then 1 − (2i + 1)/(2N);
                     moved to max(1 − (2i + 2 + 2τ_d)/(2N), 0) = t'

(τ_d is counted in steps of the sampler, so the time shift τ_d/N stays the teacher's.) With
z_t the forward process at t (Eq. (1)) and z'' the teacher's state after its two steps, the
student's target x̃ is the x̂_0 whose one DDIM step from z_t reaches z'':

    z'' = √γ'·x̃ + √(1−γ')·(z_t − √γ·x̃)/√(1−γ)
    x̃   = (z'' − c·z_t) / (√γ' − c·√γ),   c = √(1−γ')/√(1−γ),   γ = γ(t), γ' = γ(t')

clipped to [−b, b] as the sampler clips x̂_0. The loss is the instance-weighted squared
error of the student's x̂_0 (the expected bits of its softmax head) to x̃, weighted by the
truncated SNR max(γ/(1−γ), 1) of Salimans & Ho.

    code name      paper symbol
    steps          N          the student's sampler steps
    td             τ_d        the student's time difference (the teacher's is 2·τ_d)
    gamma          γ(t)       signal level; gamma_next = γ(t')
    target         x̃          the student's x̂_0 target
"""

from __future__ import annotations

import torch

from .bits import int_to_analog_bits
from .diffusion import corrupt, ddim_step, gamma_cosine
from .frame_dropout import drop_frames
from .losses import instance_weights
from .pix2seq_d import Pix2SeqD


def student_times(index: torch.Tensor, steps: int, td: float) -> tuple[torch.Tensor, ...]:
    """Per-example (t, t_mid, t') of student step `index` (int (B,)): the time the student
    and the teacher's first step are told, the teacher's second step's, and where both
    move to."""
    i = index.double()
    t = 1 - i / steps
    t_mid = 1 - (2 * i + 1) / (2 * steps)
    t_next = (1 - (i + 1 + td) / steps).clamp(min=0.0)
    return t, t_mid, t_next


def teacher_two_steps(
    teacher: Pix2SeqD,
    z: torch.Tensor,
    times: tuple[torch.Tensor, ...],
    td: float,
    steps: int,
    encoded,
    cond: torch.Tensor,
) -> torch.Tensor:
    """The teacher's state after its steps 2i and 2i + 1 from z (at t), as its 2N-step,
    2·τ_d sampler moves it (`ddim_sample_final`'s updates, per-example times)."""
    t, t_mid, _ = times
    b = teacher.b_scale
    t_first = (t - (1 + 2 * td) / (2 * steps)).clamp(min=0.0)
    t_second = (t_mid - (1 + 2 * td) / (2 * steps)).clamp(min=0.0)
    x0_prev = torch.zeros_like(z)
    for told, moved in ((t, t_first), (t_mid, t_second)):
        g_now, g_next = gamma_cosine(told), gamma_cosine(moved)
        x0_prev = teacher.x0_step(z, g_now.float(), encoded.tokens, encoded.fused, cond, x0_prev)
        x0_prev = x0_prev.float().clamp(-b, b)
        z = ddim_step(z, x0_prev, g_now, g_next).float()
    return z


def student_target(
    z: torch.Tensor, z_next: torch.Tensor, gamma: torch.Tensor, gamma_next: torch.Tensor, b: float
) -> torch.Tensor:
    """x̃ (B, 16, H, W): the x̂_0 whose DDIM step from z at γ reaches z_next at γ_next,
    clipped to [−b, b]. gamma, gamma_next: (B,) float64."""
    view = (-1,) + (1,) * (z.dim() - 1)
    g, g2 = gamma.view(view), gamma_next.view(view)
    c = ((1 - g2) / (1 - g)).sqrt()
    target = (z_next.double() - c * z.double()) / (g2.sqrt() - c * g.sqrt())
    return target.float().clamp(-b, b)


def distillation_loss(
    student: Pix2SeqD,
    teacher: Pix2SeqD,
    images: torch.Tensor,
    masks: torch.Tensor,
    cond_masks: torch.Tensor | None,
    steps: int,
    td: float,
    index: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """The student's loss on one batch (module docstring): a student step per example
    (`index` (B,), default uniform), z from the forward process of the masks' bits (with
    `noise`, default standard normal), the teacher's two steps, the weighted squared error
    of the student's x̂_0 to x̃."""
    b = student.b_scale
    x0 = int_to_analog_bits(masks, b)
    if index is None:
        index = torch.randint(0, steps, (x0.shape[0],), device=x0.device)
    times = student_times(index, steps, td)
    gamma, gamma_next = gamma_cosine(times[0]), gamma_cosine(times[2])
    z = corrupt(x0, gamma.float(), torch.randn_like(x0) if noise is None else noise)
    if cond_masks is not None and student.training:
        dec = student.cfg.decoder
        cond_masks = drop_frames(cond_masks, dec.frame_dropout, all_rate=dec.history_dropout)
    cond = student.cond_bits(cond_masks, x0)
    with torch.no_grad():
        z_next = teacher_two_steps(teacher, z, times, td, steps, teacher.encode(images), cond)
        target = student_target(z, z_next, gamma, gamma_next, b)
    encoded = student.encode(images)
    x0_hat = student.x0_step(
        z, gamma.float(), encoded.tokens, encoded.fused, cond, torch.zeros_like(z)
    )
    snr = (gamma / (1 - gamma)).clamp(min=1.0).float()
    weights = instance_weights(masks[:, 1], student.loss_cfg.p, student.cfg.max_instances)
    err = (x0_hat.float() - target) ** 2 * weights[:, None]
    return (err.mean(dim=(1, 2, 3)) * snr).mean()
