"""Progressive distillation (models/distill.py, platform/train/distill_run.py): the target
against the teacher's own sampler and a hand-unrolled computation, an overfit student that
takes the teacher's two steps in one, the frozen teacher, exact resume, the round plan and
the teacher's config check."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers_ckpt import tiny_at_64, write_checkpoint
from helpers_model import TINY, toy_batch

from pix2seqd.models.bits import int_to_analog_bits
from pix2seqd.models.config import DiffusionConfig, LossConfig
from pix2seqd.models.diffusion import corrupt, ddim_sample_final, ddim_step, gamma_cosine
from pix2seqd.models.distill import (
    distillation_loss,
    student_target,
    student_times,
    teacher_two_steps,
)
from pix2seqd.models.pix2seq_d import Pix2SeqD
from pix2seqd.platform.benchmarks.model_bench import make_batches
from pix2seqd.platform.config import override
from pix2seqd.platform.train.distill_run import make_plan, round_config
from pix2seqd.platform.train.init_weights import teacher_weights
from pix2seqd.platform.train.progress import Meter
from pix2seqd.platform.train.state import build_state, restore, snapshot
from pix2seqd.platform.train.step import DistillModule, optimizer_step

B_SCALE = 0.3


def _teacher(seed: int = 0) -> Pix2SeqD:
    torch.manual_seed(seed)
    model = Pix2SeqD(TINY, DiffusionConfig(b_scale=B_SCALE), LossConfig()).eval()
    with torch.no_grad():  # a head far from zero, so that the estimates vary
        model.decoder.conv_out.weight.normal_(std=0.5)
    return model


def _x0(model: Pix2SeqD, x, gamma, encoded, prev):
    cond = model.cond_bits(None, x)
    return model.x0_step(x, gamma, encoded.tokens, encoded.fused, cond, prev)


def test_distill_times_of_a_student_step():
    t, t_mid, t_next = student_times(torch.tensor([0, 1, 4]), steps=5, td=1.0)
    torch.testing.assert_close(t, torch.tensor([1.0, 0.8, 0.2], dtype=torch.float64))
    torch.testing.assert_close(t_mid, torch.tensor([0.9, 0.7, 0.1], dtype=torch.float64))
    torch.testing.assert_close(t_next, torch.tensor([0.6, 0.4, 0.0], dtype=torch.float64))


@torch.no_grad()
def test_distill_teacher_steps_are_the_teachers_sampler_steps():
    """From pure noise (student step 0), the teacher's two steps are the first two steps of
    its own 2N-step, 2·τ_d sampler (`ddim_sample_final`)."""
    teacher = _teacher()
    images, _ = toy_batch()
    encoded = teacher.encode(images)
    seen = []

    def denoise(x, gamma, prev):
        seen.append(x.clone())
        return _x0(teacher, x, gamma, encoded, prev)

    gen = torch.Generator().manual_seed(4)
    ddim_sample_final(denoise, None, (2, 16, 16, 16), 10, 2.0, B_SCALE, gen)
    z = torch.randn((2, 16, 16, 16), generator=torch.Generator().manual_seed(4))
    cond = teacher.cond_bits(None, z)
    times = student_times(torch.zeros(2, dtype=torch.long), steps=5, td=1.0)
    got = teacher_two_steps(teacher, z, times, 1.0, 5, encoded, cond)
    torch.testing.assert_close(got, seen[2], rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_distill_target_for_one_pair_of_teacher_steps_unrolled_by_hand():
    """N = 5, τ_d = 1, student step 1: told t = 0.8, moved to t' = 1 − 3/5 = 0.4; the teacher
    (10 steps, τ_d = 2) is told 0.8 and moves to 0.5, then is told 0.7 and moves to 0.4."""
    teacher = _teacher()
    images, _ = toy_batch()
    encoded = teacher.encode(images)
    z = torch.randn(2, 16, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.5

    def g(t):
        return math.cos((t + 2e-4) / (1 + 2.5e-4) * math.pi / 2) ** 2

    def full(v):
        return torch.full((2,), v)

    x1 = _x0(teacher, z, full(g(0.8)), encoded, torch.zeros_like(z)).clamp(-B_SCALE, B_SCALE)
    eps1 = (z - math.sqrt(g(0.8)) * x1) / math.sqrt(1 - g(0.8))
    z1 = math.sqrt(g(0.5)) * x1 + math.sqrt(1 - g(0.5)) * eps1
    x2 = _x0(teacher, z1, full(g(0.7)), encoded, x1).clamp(-B_SCALE, B_SCALE)
    eps2 = (z1 - math.sqrt(g(0.7)) * x2) / math.sqrt(1 - g(0.7))
    z2 = math.sqrt(g(0.4)) * x2 + math.sqrt(1 - g(0.4)) * eps2
    c = math.sqrt(1 - g(0.4)) / math.sqrt(1 - g(0.8))
    by_hand = (z2 - c * z) / (math.sqrt(g(0.4)) - c * math.sqrt(g(0.8)))

    times = student_times(torch.tensor([1, 1]), steps=5, td=1.0)
    z_next = teacher_two_steps(teacher, z, times, 1.0, 5, encoded, teacher.cond_bits(None, z))
    torch.testing.assert_close(z_next, z2, rtol=1e-5, atol=1e-6)
    gamma, gamma_next = gamma_cosine(times[0]), gamma_cosine(times[2])
    target = student_target(z, z_next, gamma, gamma_next, b=10.0)  # no clipping
    torch.testing.assert_close(target, by_hand, rtol=1e-4, atol=1e-5)
    # the target is the x̂_0 whose one DDIM step lands where the teacher's two did
    one_step = ddim_step(z.double(), target.double(), g(0.8), g(0.4))
    torch.testing.assert_close(one_step.float(), z_next, rtol=1e-4, atol=1e-5)
    clipped = student_target(z, z_next, gamma, gamma_next, b=B_SCALE)
    assert clipped.abs().max() <= B_SCALE and (clipped != target).any()


def test_distill_student_overfit_moves_to_the_teachers_two_steps_in_one():
    """A student (the teacher's copy) trained on one fixed image, step and noise: within
    100 Adam steps its x̂_0 is at most half as far from the target (the x̂_0 whose one DDIM
    step lands on the teacher's two-step state) as it started. Eval mode throughout, so
    BatchNorm uses the same statistics in training and in the check."""
    teacher = _teacher()
    student = copy.deepcopy(teacher).eval()
    images, masks = toy_batch(b=1)
    index = torch.tensor([2])
    noise = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(7))
    times = student_times(index, steps=5, td=1.0)
    gamma, gamma_next = gamma_cosine(times[0]), gamma_cosine(times[2])
    with torch.no_grad():
        z = corrupt(int_to_analog_bits(masks, B_SCALE), gamma.float(), noise)
        cond = teacher.cond_bits(None, z)
        z2 = teacher_two_steps(teacher, z, times, 1.0, 5, teacher.encode(images), cond)
        target = student_target(z, z2, gamma, gamma_next, B_SCALE)

    def distance() -> float:
        with torch.no_grad():
            x0 = _x0(student, z, gamma.float(), student.encode(images), torch.zeros_like(z))
        return float((x0 - target).abs().mean())

    before, steps = distance(), 0
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    while steps < 100 and (steps % 10 or steps == 0 or distance() > 0.5 * before):
        opt.zero_grad()
        distillation_loss(student, teacher, images, masks, None, 5, 1.0, index, noise).backward()
        opt.step()
        steps += 1
    assert before > 0.02, before  # the teacher's own single step is not the target already
    assert distance() <= 0.5 * before, (distance(), before, steps)


def test_distill_module_keeps_the_teacher_frozen():
    teacher, student = _teacher(), _teacher(1).train()
    module = DistillModule(student, teacher, steps=4, td=0.5).train()
    assert student.training and not teacher.training
    images, masks = toy_batch()
    module(images, masks).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.decoder.conv_out.weight.grad is not None


def test_distill_resume_continues_exactly():
    """A distillation state restored from its snapshot takes the same next step as the
    state that was never stopped (the teacher comes back from its weights)."""
    cfg = override(tiny_at_64(), {"sample.steps": "4", "sample.td": "0.5", "train.batch_size": "2"})
    torch.manual_seed(0)
    teacher = {
        k: v.clone() for k, v in Pix2SeqD(cfg.model, cfg.diffusion, cfg.loss).state_dict().items()
    }

    def plain(module, kwargs):
        return module

    batches = make_batches(cfg, 2, 2, seed=0)
    torch.manual_seed(1)
    a = build_state(cfg, torch.device("cpu"), 1, plain, teacher=teacher)
    assert isinstance(a.ddp, DistillModule)
    torch.manual_seed(2)
    optimizer_step(a, cfg, iter(batches[:1]), torch.device("cpu"), Meter())
    # a copy, as a checkpoint file is: the state dicts hold the live tensors
    snap = copy.deepcopy(snapshot(a, cfg, [{"torch": torch.get_rng_state()}], num_train=10))
    optimizer_step(a, cfg, iter(batches[1:]), torch.device("cpu"), Meter())

    b = build_state(cfg, torch.device("cpu"), 1, plain, teacher=teacher)
    restore(b, snap, rank=0)
    optimizer_step(b, cfg, iter(batches[1:]), torch.device("cpu"), Meter())
    assert a.step == b.step == 2
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_distill_plan_halves_steps_and_keeps_td_in_steps():
    cfg = tiny_at_64()  # 20 steps, τ_d 2
    plan = make_plan(cfg, "runs:/abc", rounds=3)
    assert (plan.teacher_steps, plan.teacher_td) == (16, 2.0)
    assert [plan.steps(k) for k in (1, 2, 3)] == [8, 4, 2]
    r2 = round_config(cfg, plan, 2, "/ckpt/round1")
    # τ_d counts the student's own steps: 2 in every round (its teacher's two steps use 4)
    assert (r2.sample.steps, r2.sample.td, r2.distill.teacher) == (4, 2.0, "/ckpt/round1")
    assert make_plan(cfg, "t", rounds=4, teacher_steps=16).steps(4) == 1
    with pytest.raises(ValueError, match="at most 4 rounds"):
        make_plan(cfg, "t", rounds=5)
    with pytest.raises(ValueError, match="power of two"):
        make_plan(cfg, "t", rounds=1, teacher_steps=12)


def test_distill_teacher_of_another_model_is_refused(tmp_path):
    cfg = tiny_at_64()
    other = override(cfg, {"model.decoder.dim": "24"})
    ckpt = write_checkpoint(tmp_path / "teacher", other)
    student = override(cfg, {"distill.teacher": str(ckpt)})
    with pytest.raises(ValueError, match=r"model\.decoder\.dim: teacher 24, student 16"):
        teacher_weights(student)
    same = write_checkpoint(tmp_path / "same", cfg)
    weights = teacher_weights(override(cfg, {"distill.teacher": str(same)}))
    assert weights is not None and "decoder.conv_out.weight" in weights
    assert teacher_weights(cfg) is None
