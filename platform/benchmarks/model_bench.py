"""`benchmark.py model`: size, training FLOPs and inference timings of a preset's model.

Pure torch (no ray / mlflow import) so it also runs on a bare GPU machine. Timings are the
median of `repeats` runs after `warmup` runs; on CUDA every timed region is synchronised.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from pix2seqd.models.pix2seq_d import MASK_BITS, Pix2SeqD
from pix2seqd.platform.config import Config
from pix2seqd.platform.train.step import build_model

SAMPLE_STEPS = 20


def input_shapes(cfg: Config) -> tuple[tuple[int, int], tuple[int, int]]:
    """(image (H, W), mask (Hm, Wm)) of the preset; DAVIS presets are not square."""
    h, w = cfg.data.image_hw
    s = cfg.model.mask_stride
    return (h, w), (h // s, w // s)


def dummy_batch(cfg: Config, batch: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Random images in [0, 1] and valid (class, id) masks (B, 2, Hm, Wm), plus the video
    conditioning masks (B, cond_frames, 2, Hm, Wm) or None."""
    (h, w), (hm, wm) = input_shapes(cfg)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, h, w, generator=g)
    cls = torch.randint(0, cfg.model.num_classes, (batch, 1, hm, wm), generator=g)
    ids = torch.randint(0, cfg.model.max_instances, (batch, 1, hm, wm), generator=g)
    masks = torch.cat([cls, ids], dim=1)
    frames = cfg.model.decoder.cond_frames
    cond = masks[:, None].expand(-1, frames, -1, -1, -1).clone() if frames else None
    return images.to(device), masks.to(device), None if cond is None else cond.to(device)


def make_batches(cfg: Config, batch: int, n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """`n` random batches as the Ray Data pipeline yields them (see `step.to_model_inputs`).

    image (B, H, W, 3) uint8; hw (B, 2) int32 valid size, at least 3/4 of the canvas per side;
    mask (B, Hm, Wm, 2) uint8 [class < num_classes, instance < max_instances], Hm, Wm = the
    canvas / mask_stride; video configs add cond_mask (B, F, Hm, Wm, 2) uint8.
    """
    rng = np.random.default_rng(seed)
    (h, w), m = cfg.data.image_hw, cfg.model
    hm, wm, frames = h // m.mask_stride, w // m.mask_stride, m.decoder.cond_frames

    def mask(*lead: int) -> np.ndarray:
        cls = rng.integers(0, m.num_classes, size=(*lead, hm, wm, 1))
        ids = rng.integers(0, m.max_instances, size=(*lead, hm, wm, 1))
        return np.concatenate([cls, ids], axis=-1).astype(np.uint8)

    out = []
    for _ in range(n):
        hw = np.stack(
            [rng.integers(h * 3 // 4, h + 1, batch), rng.integers(w * 3 // 4, w + 1, batch)], axis=1
        ).astype(np.int32)
        item = {
            "image": rng.integers(0, 256, size=(batch, h, w, 3), dtype=np.uint8),
            "hw": hw,
            "mask": mask(batch),
        }
        if frames:
            item["cond_mask"] = mask(batch, frames)
        out.append({k: torch.from_numpy(v) for k, v in item.items()})
    return out


def train_gflops_per_image(model: Pix2SeqD, cfg: Config, device: torch.device) -> float:
    """Forward + backward FLOPs of one training example (loss incl. the decoder call)."""
    images, masks, cond = dummy_batch(cfg, 1, device)
    counter = FlopCounterMode(display=False)
    with counter:
        model.loss(images, masks, cond).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 1e9


def timed_ms(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time of fn() in milliseconds."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


@torch.no_grad()
def inference_timings(
    model: Pix2SeqD, cfg: Config, device: torch.device, batch: int, warmup: int, repeats: int
) -> dict[str, float]:
    """encoder_ms and decoder_step_ms per image, and sampling_ratio = time of a 20-step
    sample / (encoder + 20 x decoder step); the sampler's own overhead makes it > 1."""
    images, masks, cond = dummy_batch(cfg, batch, device)
    encoded = model.encode(images)
    x_t = torch.randn(batch, MASK_BITS, *masks.shape[-2:], device=device)
    gamma = torch.full((batch,), 0.5, device=device)
    cond_bits = model.cond_bits(cond, x_t)
    zeros = torch.zeros_like(x_t)
    enc_ms = timed_ms(lambda: model.encode(images), device, warmup, repeats)
    dec_ms = timed_ms(
        lambda: model.x0_estimate(model.denoise(x_t, gamma, encoded, cond_bits, zeros)),
        device,
        warmup,
        repeats,
    )
    sample_ms = timed_ms(
        lambda: model.sample(images, SAMPLE_STEPS, cfg.sample.td, cond),
        device,
        1,
        max(1, repeats // 2),
    )
    return {
        "encoder_ms": enc_ms / batch,
        "decoder_step_ms": dec_ms / batch,
        "sample20_ms": sample_ms / batch,
        "sampling_ratio": sample_ms / (enc_ms + SAMPLE_STEPS * dec_ms),
    }


def benchmark_model(
    cfg: Config, device: str, batch: int = 1, quick: bool = False
) -> dict[str, Any]:
    """The `model` keys of the benchmark JSON (docs/cli.md)."""
    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_model(cfg).to(dev)
    model.train()
    gflops = train_gflops_per_image(model, cfg, dev)
    model.eval()
    warmup, repeats = (1, 3) if quick else (3, 10)
    timings = inference_timings(model, cfg, dev, batch, warmup, repeats)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "gflops_per_train_image": gflops,
        "batch": batch,
        **timings,
    }
