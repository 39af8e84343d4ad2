"""The per-worker training loop run by Ray Train's `TorchTrainer` (DDP)."""
from __future__ import annotations

import contextlib
import tempfile
import time
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from pix2seqd.platform import tracking
from pix2seqd.platform.config import Config, from_flat
from pix2seqd.platform.train import checkpoint as ckpt_io
from pix2seqd.platform.train.schedule import ema_update, lr_factor
from pix2seqd.platform.train.step import (
    LossModule, build_model, make_ema, make_optimizer, rng_state, set_rng_state, sync_batch_norm,
    to_model_inputs,
)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """loop_config: {'config': flattened Config, 'run_id', 'tracking_uri', 'init_from'}."""
    cfg = from_flat(loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if cfg.train.torch_threads > 0:
        torch.set_num_threads(cfg.train.torch_threads)
    torch.manual_seed(cfg.train.seed * 1000 + rank)
    device = ray.train.torch.get_device()
    state = _build_state(cfg, loop_config.get("init_from", ""), device, world)
    state["meta"] = checkpoint_meta(loop_config)
    mlc = tracking.client(loop_config["tracking_uri"]) if rank == 0 and loop_config.get("run_id") else None
    shard = ray.train.get_dataset_shard(f"train_{rank}" if cfg.data.exact_order else "train")
    micro = cfg.train.batch_size // (world * cfg.train.accum)
    batches = iter(shard.iter_torch_batches(batch_size=micro, drop_last=True))
    meter = _Meter()
    deadline = time.monotonic() + 60 * cfg.train.time_budget_min if cfg.train.time_budget_min > 0 else None
    last_saved = -1
    while state["step"] < cfg.train.steps:
        if deadline is not None and _agree_to_stop(time.monotonic() > deadline, device, world):
            break
        loss = optimizer_step(state, cfg, batches, device, meter)
        if loss is None:
            break
        step = state["step"]
        if step % cfg.train.log_every == 0:
            metrics = meter.flush(step, micro * cfg.train.accum * world, state["optimizer"])
            if mlc:
                tracking.log_metrics(mlc, loop_config["run_id"], metrics, step)
        if step % cfg.train.checkpoint_every == 0:
            _report(state, cfg, rank, meter.last_loss)
            last_saved = step
    if last_saved != state["step"]:
        _report(state, cfg, rank, meter.last_loss)


def checkpoint_meta(loop_config: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint records about where it came from: its MLflow run (so evaluations
    nest under it) and the data set's categories (so prediction needs no data set)."""
    return {"mlflow_run_id": loop_config.get("run_id") or "",
            "tracking_uri": loop_config.get("tracking_uri") or "",
            "categories": list(loop_config.get("categories") or [])}


def _build_state(cfg: Config, init_from: str, device, world: int) -> dict[str, Any]:
    model = build_model(cfg)
    if init_from:
        model.load_state_dict(ckpt_io.load(init_from)["ema"])
    model = sync_batch_norm(model, cfg, world, device)
    model.to(device)
    ema = make_ema(model)
    unused = cfg.model.decoder.conditional.value == "none"
    ddp = ray.train.torch.prepare_model(
        LossModule(model), move_to_device=False,
        parallel_strategy_kwargs={"find_unused_parameters": unused},
    )
    state = {"model": model, "ema": ema, "ddp": ddp, "step": 0,
             "optimizer": make_optimizer(model, cfg, device)}
    restored = ray.train.get_checkpoint()
    if restored:
        with restored.as_directory() as d:
            _restore(state, ckpt_io.load(d, map_location=str(device)))
    return state


def optimizer_step(state, cfg: Config, batches, device, meter) -> float | None:
    """One optimizer step over `accum` micro-batches; None when the data ran out."""
    ddp, opt = state["ddp"], state["optimizer"]
    ddp.train()
    for group in opt.param_groups:
        group["lr"] = cfg.optim.lr * lr_factor(state["step"], cfg.optim.warmup_steps,
                                               cfg.train.steps, cfg.optim.end_lr_factor)
    opt.zero_grad(set_to_none=True)
    total = 0.0
    for k in range(cfg.train.accum):
        t0 = time.perf_counter()
        batch = next(batches, None)
        meter.wait += time.perf_counter() - t0
        if batch is None:
            return None
        images, masks, cond = to_model_inputs(batch, device, cfg.data.pad_value)
        sync = k == cfg.train.accum - 1 or not hasattr(ddp, "no_sync")
        with (contextlib.nullcontext() if sync else ddp.no_sync()), _autocast(cfg, device):
            loss = ddp(images, masks, cond) / cfg.train.accum
        loss.backward()
        total += loss.detach()
    if cfg.optim.clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(state["model"].parameters(), cfg.optim.clip_norm)
    opt.step()
    ema_update(state["ema"], state["model"], cfg.train.ema_decay)
    state["step"] += 1
    meter.add(total)
    return total


def _autocast(cfg: Config, device):
    if device.type == "cuda" and cfg.train.bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _agree_to_stop(local: bool, device, world: int) -> bool:
    """All ranks must stop at the same step (DDP); rank 0's clock decides."""
    if world == 1 or not dist.is_initialized():
        return local
    flag = torch.tensor([1.0 if local else 0.0], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def _report(state, cfg: Config, rank: int, loss: float) -> None:
    """Every rank reports; rank 0 attaches the checkpoint (Ray persists it to storage)."""
    metrics = {"step": state["step"], "train/loss": loss}
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as d:
        ckpt_io.save(d, _snapshot(state, cfg))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def _snapshot(state, cfg: Config) -> dict[str, Any]:
    from pix2seqd.platform.config import flatten

    return {
        "model": state["model"].state_dict(), "ema": state["ema"].state_dict(),
        "optimizer": state["optimizer"].state_dict(), "step": state["step"],
        "rng": rng_state(), "config": ckpt_io.config_to_storable(flatten(cfg)),
        **state["meta"],
    }


def _restore(state, snap: dict[str, Any]) -> None:
    state["model"].load_state_dict(snap["model"])
    state["ema"].load_state_dict(snap["ema"])
    state["optimizer"].load_state_dict(snap["optimizer"])
    state["step"] = int(snap["step"])
    set_rng_state(snap["rng"])


class _Meter:
    """Running loss, throughput and the fraction of time spent waiting for data."""

    def __init__(self):
        self.wait, self.sum, self.n, self.last_loss = 0.0, 0.0, 0, float("nan")
        self.t0 = time.perf_counter()

    def add(self, loss) -> None:
        self.sum = self.sum + loss  # stays a tensor: no host sync inside the step
        self.n += 1

    def flush(self, step: int, global_batch: int, opt) -> dict[str, float]:
        elapsed = max(1e-9, time.perf_counter() - self.t0)
        self.last_loss = float(self.sum) / max(1, self.n)
        out = {"train/loss": self.last_loss, "train/lr": opt.param_groups[0]["lr"],
               "train/img_per_s": global_batch * self.n / elapsed,
               "train/data_wait_frac": self.wait / elapsed}
        self.wait, self.sum, self.n, self.t0 = 0.0, 0.0, 0, time.perf_counter()
        return out
