"""Pieces of the training step that are independent of Ray: batch -> tensors, the loss module
that DDP wraps, model, EMA and optimizer construction."""

from __future__ import annotations

import copy

import torch

from pix2seqd.models.pix2seq_d import Pix2SeqD
from pix2seqd.platform.config import Config


class LossModule(torch.nn.Module):
    """DDP hooks `forward`; the model's training objective is `Pix2SeqD.loss`."""

    def __init__(self, model: Pix2SeqD):
        super().__init__()
        self.model = model

    def forward(self, images, masks, cond_masks=None):
        return self.model.loss(images, masks, cond_masks)


def to_model_inputs(batch: dict[str, torch.Tensor], device, pad_value: float):
    """Ray batch -> (images (B, 3, H, W) float in [0, 1], masks (B, 2, Hm, Wm) int64,
    cond (B, F, 2, Hm, Wm) int64 or None).

    batch['image'] (B, H, W, 3) uint8, batch['hw'] (B, 2) valid size, batch['mask']
    (B, Hm, Wm, 2) uint8; video batches also carry batch['cond_mask'] (B, F, Hm, Wm, 2)
    uint8, the masks of the F previous frames, oldest first (image batches: cond is None).
    Padding with `pad_value` is done here, on the device.
    """
    img = batch["image"].to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    hw = batch["hw"].to(device)
    rows = torch.arange(img.shape[-2], device=device)
    cols = torch.arange(img.shape[-1], device=device)
    valid = (rows[None, :, None] < hw[:, 0, None, None]) & (
        cols[None, None, :] < hw[:, 1, None, None]
    )
    img = torch.where(valid[:, None], img, torch.full_like(img, pad_value))
    masks = batch["mask"].to(device, non_blocking=True).permute(0, 3, 1, 2).long()
    cond = batch.get("cond_mask")
    if cond is not None:
        cond = cond.to(device, non_blocking=True).permute(0, 1, 4, 2, 3).long()
    return img, masks, cond


def build_model(cfg: Config) -> Pix2SeqD:
    return Pix2SeqD(cfg.model, cfg.diffusion, cfg.loss)


def sync_batch_norm(
    model: torch.nn.Module, cfg: Config, world: int, device: torch.device
) -> torch.nn.Module:
    """`model.encoder.norm=sync` (the official synchronised BN): convert the encoder's
    BatchNorm layers to SyncBatchNorm when several CUDA workers train. On CPU (gloo) torch
    has no SyncBatchNorm kernel, so each worker keeps its own batch statistics."""
    if cfg.model.encoder.norm.value == "sync" and world > 1 and device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def to_device(model: torch.nn.Module, cfg: Config, device: torch.device) -> torch.nn.Module:
    """The model on `device`, channels_last on CUDA when `train.channels_last` (the images
    arrive channels_last anyway: `to_model_inputs` permutes NHWC batches)."""
    model.to(device)
    if cfg.train.channels_last and device.type == "cuda":
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
