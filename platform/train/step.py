"""The training step and its pieces, independent of Ray: batch -> tensors, the loss module
that DDP wraps, model, EMA and optimizer construction, and `optimizer_step`, which the Ray
Train loop and `benchmark.py gpu` both run. Pure torch (no Ray, MLflow or pyarrow), so the
benchmark runs it on a bare GPU machine."""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from typing import Any, Protocol

import torch

from pix2seqd.models.distill import distillation_loss
from pix2seqd.models.pix2seq_d import Pix2SeqD
from pix2seqd.platform.config import Config
from pix2seqd.platform.train.progress import Meter
from pix2seqd.platform.train.schedule import ema_update, lr_factor


class StepState(Protocol):
    """What `optimizer_step` reads and advances: `state.TrainState`."""

    model: torch.nn.Module
    ema: torch.nn.Module
    ddp: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step: int


class LossModule(torch.nn.Module):
    """DDP hooks `forward`; the model's training objective is `Pix2SeqD.loss`."""

    def __init__(self, model: Pix2SeqD):
        super().__init__()
        self.model = model

    def forward(self, images, masks, cond_masks=None):
        return self.model.loss(images, masks, cond_masks)


class DistillModule(torch.nn.Module):
    """DDP hooks `forward`: the student's progressive-distillation loss against a frozen
    teacher (`models.distill.distillation_loss`), the student sampling with `steps` steps
    and time difference `td`. The teacher stays in eval mode whatever `train()` is called
    with, and has no gradients (DDP leaves it out of its buckets)."""

    def __init__(self, model: Pix2SeqD, teacher: Pix2SeqD, steps: int, td: float):
        super().__init__()
        self.model, self.teacher, self.steps, self.td = model, teacher, steps, td
        self.teacher.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> DistillModule:
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, images, masks, cond_masks=None):
        return distillation_loss(
            self.model, self.teacher, images, masks, cond_masks, self.steps, self.td
        )


def to_model_inputs(
    batch: dict[str, torch.Tensor], device, pad_value: float, channels_last: bool = False
):
    """Ray batch -> (images (B, 3, H, W) float in [0, 1], masks (B, 2, Hm, Wm) int64,
    cond (B, F, 2, Hm, Wm) int64 or None).

    batch['image'] (B, H, W, 3) uint8, batch['hw'] (B, 2) valid size, batch['mask']
    (B, Hm, Wm, 2) uint8; video batches also carry batch['cond_mask'] (B, F, Hm, Wm, 2)
    uint8, the masks of the F previous frames, oldest first (image batches: cond is None).
    Padding with `pad_value` is done here, on the device. The images come in the model's
    memory format (`channels_last`, else contiguous NCHW), converted in the one copy that
    makes them float: weight gradients then have their parameters' strides, as DDP's
    gradient buckets expect (no "grad strides do not match" copy).
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    img = batch["image"].to(device, non_blocking=True).permute(0, 3, 1, 2)
    img = img.to(dtype=torch.float32, memory_format=fmt).div_(255.0)
    hw = batch["hw"].to(device)
    rows = torch.arange(img.shape[-2], device=device)
    cols = torch.arange(img.shape[-1], device=device)
    valid = (rows[None, :, None] < hw[:, 0, None, None]) & (
        cols[None, None, :] < hw[:, 1, None, None]
    )
    img.masked_fill_(~valid[:, None], pad_value)
    masks = batch["mask"].to(device, non_blocking=True).permute(0, 3, 1, 2).long()
    cond = batch.get("cond_mask")
    if cond is not None:
        cond = cond.to(device, non_blocking=True).permute(0, 1, 4, 2, 3).long()
    return img, masks, cond


def build_model(cfg: Config) -> Pix2SeqD:
    return Pix2SeqD(cfg.model, cfg.diffusion, cfg.loss)


def load_start(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load `start_weights(...).state` into a freshly built model (a training worker)."""
    unexpected = model.load_state_dict(state, strict=False).unexpected_keys
    if unexpected:  # the driver planned on the same config: a bug, not a user error
        raise RuntimeError(f"start weights the model does not have: {unexpected}")


def sync_batch_norm(
    model: torch.nn.Module, cfg: Config, world: int, device: torch.device
) -> torch.nn.Module:
    """`model.encoder.norm=sync` (the official synchronised BN): convert the encoder's
    BatchNorm layers to SyncBatchNorm when several CUDA workers train. On CPU (gloo) torch
    has no SyncBatchNorm kernel, so each worker keeps its own batch statistics."""
    if cfg.model.encoder.norm.value == "sync" and world > 1 and device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def channels_last(cfg: Config, device: torch.device) -> bool:
    """`train.channels_last`, which applies on CUDA only (on CPU NCHW is faster)."""
    return cfg.train.channels_last and torch.device(device).type == "cuda"


def to_device(model: torch.nn.Module, cfg: Config, device: torch.device) -> torch.nn.Module:
    """The model on `device`, in channels_last when `channels_last(cfg, device)`."""
    model.to(device)
    if channels_last(cfg, device):
        model.to(memory_format=torch.channels_last)
    return model


def compile_loss(ddp: torch.nn.Module, cfg: Config) -> torch.nn.Module:
    """`train.compile`: the (DDP-wrapped) loss module compiled, static shapes; DDP's
    `no_sync` and `train()` still reach the wrapped module. Otherwise `ddp` itself."""
    if not cfg.train.compile:
        return ddp
    return torch.compile(ddp, backend=cfg.train.compile_backend, dynamic=False)


def make_ema(model: torch.nn.Module) -> torch.nn.Module:
    """EMA copy initialised from the online weights (the project's choice; docs/model.md,
    "Optimisation")."""
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


def make_optimizer(model: torch.nn.Module, cfg: Config, device) -> torch.optim.AdamW:
    """AdamW with decoupled weight decay on every parameter (official: no exclusions).

    Fused on CPU as well as CUDA: for the tiny model's 315 tensors on one core the
    per-tensor loop takes 14-15 ms a step, the fused kernel ~3 ms
    (docs/results.md, "CPU speed")."""
    o = cfg.optim
    return torch.optim.AdamW(
        model.parameters(),
        lr=o.lr,
        betas=(o.beta1, o.beta2),
        eps=o.eps,
        weight_decay=o.weight_decay,
        fused=torch.device(device).type in ("cpu", "cuda"),
    )


def optimizer_step(
    state: StepState,
    cfg: Config,
    batches: Iterator[dict[str, Any]],
    device: torch.device,
    meter: Meter,
    decay_frac: float = 0.0,
) -> torch.Tensor | None:
    """The training step: one optimizer step over `accum` micro-batches of `batches` (Ray
    batches, `to_model_inputs`), under `autocast`, with gradient clipping, AdamW and the EMA
    update, and no host synchronisation; the summed loss (a tensor), or None when the data
    ran out. The Ray Train loop and `benchmark.py gpu` both run it.
    decay_frac: the elapsed fraction of the time budget under `train.decay_to_budget`, else 0."""
    ddp, opt = state.ddp, state.optimizer
    ddp.train()
    for group in opt.param_groups:
        group["lr"] = cfg.optim.lr * lr_factor(
            state.step, cfg.optim.warmup_steps, cfg.train.steps, cfg.optim.end_lr_factor, decay_frac
        )
    opt.zero_grad(set_to_none=True)
    total, wait = 0.0, 0.0
    for k in range(cfg.train.accum):
        t0 = time.perf_counter()
        batch = next(batches, None)
        wait += time.perf_counter() - t0
        if batch is None:
            return None
        images, masks, cond = to_model_inputs(
            batch, device, cfg.data.pad_value, channels_last(cfg, device)
        )
        sync = k == cfg.train.accum - 1 or not hasattr(ddp, "no_sync")
        with contextlib.nullcontext() if sync else ddp.no_sync(), autocast(cfg, device):
            loss = ddp(images, masks, cond) / cfg.train.accum
        loss.backward()
        total += loss.detach()
    if cfg.optim.clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.optim.clip_norm)
    opt.step()
    ema_update(state.ema, state.model, cfg.train.ema_decay)
    state.step += 1
    meter.add(total, wait)
    return total


def autocast(cfg: Config, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA with `train.bf16`; float32 otherwise (and on every CPU)."""
    if device.type == "cuda" and cfg.train.bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
