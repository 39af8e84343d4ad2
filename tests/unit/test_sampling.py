"""The prediction jobs' sampler settings: a job's `sample.*` replaces the checkpoint's
(`compile` and `bf16` reach the model), bf16 autocast only on CUDA, and the sampler the
benchmark times is the one prediction runs."""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from helpers_ckpt import image_config, write_checkpoint

from pix2seqd.models.config import SampleConfig
from pix2seqd.platform.evaluation.predict import load_for_inference
from pix2seqd.platform.evaluation.sampling import sample_images, sampling_autocast


def test_a_jobs_sampler_settings_replace_the_checkpoints(tmp_path):
    cfg = image_config(3)
    ckpt = write_checkpoint(tmp_path / "ckpt", cfg)
    model, loaded = load_for_inference(str(ckpt))
    assert loaded.sample == cfg.sample and not model.sampler_compiled and not model.training
    job = SampleConfig(steps=3, td=1.0, compile=True, bf16=True)
    model, loaded = load_for_inference(str(ckpt), "cpu", job)
    assert loaded.sample == job and loaded.model == cfg.model
    assert model.sampler_compiled  # compiled lazily, at the first call


def test_bf16_autocast_only_on_cuda_and_only_when_asked():
    on = dataclasses.replace(image_config(3), sample=SampleConfig(bf16=True))
    off = image_config(3)
    assert isinstance(sampling_autocast(on, "cpu"), contextlib.nullcontext)
    assert isinstance(sampling_autocast(off, "cuda"), contextlib.nullcontext)
    ctx = sampling_autocast(on, "cuda")
    assert isinstance(ctx, torch.autocast)
    assert ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16


def test_sample_images_is_model_sample(tmp_path):
    cfg = image_config(3)
    model, cfg = load_for_inference(str(write_checkpoint(tmp_path / "ckpt", cfg)))
    h, w = cfg.data.image_hw
    images = torch.rand(2, 3, h, w)
    got, probs = sample_images(
        model, cfg, images, 2, 1.0, torch.Generator().manual_seed(3), return_probs=True
    )
    want = model.sample(images, 2, 1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(got, want) and probs.dtype == torch.float32
    assert probs.shape == (2, *got.shape[-2:])
