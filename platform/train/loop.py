"""The per-worker training loop run by Ray Train's `TorchTrainer` (DDP)."""
from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from pix2seqd.platform import tracking
from pix2seqd.platform.config import Config, from_flat
from pix2seqd.platform.train import checkpoint as ckpt_io
from pix2seqd.platform.train.schedule import ema_update, lr_factor
from pix2seqd.platform.train.checkpointing import CheckpointLog, report, restore
from pix2seqd.platform.train.step import (
    LossModule, build_model, compile_loss, make_ema, make_optimizer, sync_batch_norm, to_device,
    to_model_inputs,
)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """loop_config (built by run.py): 'config' (flattened Config), 'run_id', 'tracking_uri',
    'init_from', 'categories', 'storage', 'run_name', 'num_train', and optionally
    'train_source' (a Ray object ref: per-rank datasets are then built here, from the
    restored step) and 'val_subset' (periodic evaluation)."""
    cfg = from_flat(loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if cfg.train.torch_threads > 0:
        torch.set_num_threads(cfg.train.torch_threads)
    torch.manual_seed(cfg.train.seed * 1000 + rank)
    device = ray.train.torch.get_device()
    state = _build_state(cfg, loop_config.get("init_from", ""), device, world, rank)
    state["meta"] = checkpoint_meta(loop_config)
    mlc = tracking.client(loop_config["tracking_uri"]) if rank == 0 and loop_config.get("run_id") else None
    log = (CheckpointLog(mlc, loop_config["run_id"], loop_config["storage"], loop_config["run_name"],
                         cfg.train.keep_checkpoints) if mlc else None)
    nodes = _gather_nodes(world)
    if mlc:
        tracking.set_tags(mlc, loop_config["run_id"], {"worker_nodes": json.dumps(nodes)})
    if mlc and state["restored"]:  # a FailureConfig restart or --resume: visible in the UI
        tracking.log_metrics(mlc, loop_config["run_id"], {"train/restored_from": state["step"]},
                             state["step"])
    evaluator = _PeriodicEval(loop_config, cfg, rank)
    micro = cfg.train.batch_size // (world * cfg.train.accum)
    batches = iter(_train_batches(loop_config, cfg, rank, world, state["step"], micro))
    meter = _Meter()
    budget_s, start, time_frac = 60 * cfg.train.time_budget_min, time.monotonic(), 0.0
    last_saved, num_train = state["step"], int(loop_config.get("num_train", 0))
    while state["step"] < cfg.train.steps:
        if budget_s > 0 and state["step"] % STOP_CHECK_EVERY == 0:
            time_frac = _shared_budget_fraction((time.monotonic() - start) / budget_s, device, world)
            if time_frac > 1.0:
                break
        decay_frac = time_frac if cfg.train.decay_to_budget else 0.0
        if optimizer_step(state, cfg, batches, device, meter, decay_frac) is None:
            break
        step = state["step"]
        if step % cfg.train.log_every == 0:
            metrics = meter.flush(step, micro * cfg.train.accum * world, state["optimizer"])
            if mlc:
                tracking.log_metrics(mlc, loop_config["run_id"], metrics, step)
        if step % cfg.train.checkpoint_every == 0:
            due = evaluator(state, step, mlc, final=step >= cfg.train.steps)
            metrics = {"step": step, "train/loss": meter.last_loss, **due}
            report(state, cfg, rank, world, metrics, log, num_train)
            last_saved = step
    if last_saved != state["step"] or state["step"] == 0:
        metrics = {"step": state["step"], "train/loss": meter.last_loss,
                   **evaluator(state, state["step"], mlc, final=True)}
        report(state, cfg, rank, world, metrics, log, num_train)


def _gather_nodes(world: int) -> list[str]:
    """The Ray node id of every rank, in rank order (a collective: all ranks call it)."""
    node = ray.get_runtime_context().get_node_id()
    if world == 1 or not dist.is_initialized():
        return [node]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, node)
    return out


def checkpoint_meta(loop_config: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint records about where it came from: its MLflow run (so evaluations
    nest under it) and the data set's categories (so prediction needs no data set)."""
    return {"mlflow_run_id": loop_config.get("run_id") or "",
            "tracking_uri": loop_config.get("tracking_uri") or "",
            "categories": list(loop_config.get("categories") or [])}


def _train_batches(loop_config: dict[str, Any], cfg: Config, rank: int, world: int, step: int,
                   micro: int):
    """This rank's training batches from optimizer step `step` on.

    With a 'train_source', the rank's own ordered dataset is built here, starting at the
    stream position of `step`: after a restart from a checkpoint the data continue exactly
    where they stopped. Otherwise Ray Train's split of the driver's dataset is read."""
    if loop_config.get("train_source") is None:
        shard = ray.train.get_dataset_shard("train")
        return shard.iter_torch_batches(batch_size=micro, drop_last=True)
    source = ray.get(loop_config["train_source"])
    start = step * cfg.train.batch_size
    if source["kind"] == "video":
        from pix2seqd.platform.data.video_pipeline import build_video_train_dataset

        ds = build_video_train_dataset(source["videos"], cfg, rank, world, start, source.get("stills"))
    else:
        from pix2seqd.platform.data.pipeline import build_rank_dataset

        ds = build_rank_dataset(source["rows"], source["cmap"], cfg, rank, world, start)
    return ds.iter_torch_batches(batch_size=micro, drop_last=True)


class _PeriodicEval:
    """Rank 0 scores the EMA weights on the val subset every eval.every_steps and at the
    end; returns the metrics for the checkpoint's report ({} when not due, other ranks)."""

    def __init__(self, loop_config: dict[str, Any], cfg: Config, rank: int):
        self.cfg, self.subset = cfg, loop_config.get("val_subset")
        self.enabled = rank == 0 and cfg.eval.every_steps > 0 and self.subset is not None
        self.run_id = loop_config.get("run_id")
        self.cmap = None
        if self.enabled:
            from pix2seqd.platform.data.coco_panoptic import CategoryMap

            self.cmap = CategoryMap.from_coco(loop_config["categories"], "loop config")

    def __call__(self, state, step: int, mlc, final: bool = False) -> dict[str, float]:
        if not self.enabled or not (final or step % self.cfg.eval.every_steps == 0):
            return {}
        from pix2seqd.platform.train.periodic_eval import score_subset

        metrics = score_subset(state["ema"], self.cfg, self.subset, self.cmap, self.cfg.train.seed)
        if mlc:
            tracking.log_metrics(mlc, self.run_id, metrics, step)
        return {k: v for k, v in metrics.items() if not k.startswith("eval/pq_class/")}


def _build_state(cfg: Config, init_from: str, device, world: int, rank: int) -> dict[str, Any]:
    model = build_model(cfg)
    if init_from:
        _initialise(model, cfg, init_from)
    model = to_device(sync_batch_norm(model, cfg, world, device), cfg, device)
    ema = make_ema(model)
    unused = cfg.model.decoder.conditional.value == "none"
    ddp = compile_loss(ray.train.torch.prepare_model(
        LossModule(model), move_to_device=False,
        parallel_strategy_kwargs={"find_unused_parameters": unused},
    ), cfg)
    restored = ray.train.get_checkpoint()
    state = {"model": model, "ema": ema, "ddp": ddp, "step": 0, "restored": bool(restored),
             "optimizer": make_optimizer(model, cfg, device)}
    if restored:
        with restored.as_directory() as d:
            restore(state, ckpt_io.load(d, map_location=str(device)), rank)
    return state


def _initialise(model, cfg: Config, init_from: str) -> None:
    """--init-from: the EMA weights of another run (the previous stage, or an image model
    for a video model: the new conditioning input channels then start at zero)."""
    snap = ckpt_io.load(init_from)
    source_video = int(snap.get("config", {}).get("model.decoder.cond_frames", 0)) > 0
    if cfg.model.decoder.cond_frames > 0 and not source_video:
        model.load_video_from_image(snap["ema"])
    else:
        model.load_state_dict(snap["ema"])


def optimizer_step(state, cfg: Config, batches, device, meter, decay_frac: float = 0.0
                   ) -> float | None:
    """One optimizer step over `accum` micro-batches; None when the data ran out.
    decay_frac: the elapsed fraction of the time budget under `train.decay_to_budget`, else 0."""
    ddp, opt = state["ddp"], state["optimizer"]
    ddp.train()
    for group in opt.param_groups:
        group["lr"] = cfg.optim.lr * lr_factor(state["step"], cfg.optim.warmup_steps,
                                               cfg.train.steps, cfg.optim.end_lr_factor, decay_frac)
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


# The time budget is checked every this many steps: the ranks' agreement is a broadcast
# read on the host, which on a GPU waits for the step's kernels.
STOP_CHECK_EVERY = 8


def _shared_budget_fraction(local_frac: float, device, world: int) -> float:
    """The elapsed fraction of the time budget by rank 0's clock, on every rank: all ranks
    must stop at the same step and use the same learning rate (DDP)."""
    if world == 1 or not dist.is_initialized():
        return local_frac
    frac = torch.tensor([local_frac], dtype=torch.float64, device=device)
    dist.broadcast(frac, src=0)
    return float(frac.item())


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
