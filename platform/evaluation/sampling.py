"""The sampler as every prediction path runs it: `eval_coco`, `predict`, `eval_davis`, the
served model, the inference sweep and `benchmark.py gpu` go through these functions, so a
setting that is fast in the benchmark is the one prediction uses.

Pure torch (no Ray, MLflow or pyarrow): the GPU benchmark runs it on a bare machine.

- `sample.compile`: the denoising step and the last step compiled once per batch size
  (`Pix2SeqD.compile_sampler`; on CUDA captured in CUDA graphs), the encoder run once per
  batch, the DDIM update and bits -> integers on the device.
- `sample.bf16`: the network passes under bf16 autocast on CUDA (float32 elsewhere).
"""

from __future__ import annotations

import contextlib

import torch

from pix2seqd.models.pix2seq_d import Pix2SeqD
from pix2seqd.platform.config import Config


def sampling_autocast(cfg: Config, device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA with `sample.bf16`; a no-op otherwise."""
    if torch.device(device).type == "cuda" and cfg.sample.bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_sampler(model: Pix2SeqD, cfg: Config, backend: str = "inductor") -> Pix2SeqD:
    """`model` in eval mode, its sampler steps compiled with `backend` when
    `sample.compile`."""
    model.eval()
    if cfg.sample.compile:
        model.compile_sampler(backend=backend)
    return model


@torch.no_grad()
def sample_images(
    model: Pix2SeqD,
    cfg: Config,
    images: torch.Tensor,
    steps: int,
    td: float,
    generator: torch.Generator | None = None,
    return_probs: bool = False,
    cond_masks: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """`model.sample` of images (B, 3, H, W) under `sampling_autocast`: int64 masks
    (B, 2, Hm, Wm), with return_probs also the class probabilities (B, Hm, Wm) as float32."""
    with sampling_autocast(cfg, images.device):
        out = model.sample(images, steps, td, cond_masks, generator, return_probs)
    if return_probs:
        masks, probs = out
        return masks, probs.float()
    return out
