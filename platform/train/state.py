"""A training worker's state (model, EMA, optimizer, step, where it came from) and its
checkpoint snapshot.

A snapshot is everything exact resume needs: model, EMA, optimizer (the learning rate is a
function of the step and, under `train.decay_to_budget`, of the training time), step, epoch
and data position, the training seconds so far (the time budget spans restarts), every
rank's RNG state, the resolved config, plus where it came from (MLflow run, categories).
Its keys are the `checkpoint.pt` contents listed in docs/cli.md.

Pure torch (no Ray, MLflow or pyarrow), like `step.py`: `benchmark.py gpu` builds its
training state here on a bare GPU machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from pix2seqd.platform.config import Config, storable
from pix2seqd.platform.train.step import (
    DistillModule,
    LossModule,
    build_model,
    compile_loss,
    load_start,
    make_ema,
    make_optimizer,
    sync_batch_norm,
    to_device,
)

# (LossModule, DDP kwargs) -> the module the loop trains: Ray's `prepare_model`, or plain DDP
DdpWrap = Callable[[torch.nn.Module, dict[str, Any]], torch.nn.Module]


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint records about where it came from: its MLflow run (so evaluations
    nest under it), the data set's categories (so prediction needs no data set), and which
    of its weights are trained (`trained_scope`: key prefixes, "" = all; a later stage's
    --init-from copies only those, models/weight_transfer.py)."""

    mlflow_run_id: str = ""
    tracking_uri: str = ""
    categories: list[dict[str, Any]] = field(default_factory=list)
    trained_scope: list[str] = field(default_factory=lambda: [""])


@dataclass(eq=False)
class TrainState:
    """model: the online weights; ddp: the loss module that is trained (the model inside
    `LossModule`, DDP-wrapped, maybe compiled); step: optimizer steps done; train_seconds:
    rank 0's training time up to `step` over all the run's attempts (set by the loop before
    each snapshot; the time between a failure and the restart is not in it); restored: the
    state came from a checkpoint (a worker-group restart or --resume)."""

    model: torch.nn.Module
    ema: torch.nn.Module
    ddp: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step: int = 0
    train_seconds: float = 0.0
    restored: bool = False
    meta: CheckpointMeta = field(default_factory=CheckpointMeta)

    def data_position(self, batch_size: int) -> int:
        """Examples of the training stream consumed so far (all ranks)."""
        return self.step * batch_size


def ddp_kwargs(cfg: Config) -> dict[str, Any]:
    """DistributedDataParallel kwargs (unconditional decoders leave the cross-attention
    unused)."""
    return {"find_unused_parameters": cfg.model.decoder.conditional.value == "none"}


def build_state(
    cfg: Config,
    device: torch.device,
    world: int,
    wrap: DdpWrap,
    start: dict[str, torch.Tensor] | None = None,
    teacher: dict[str, torch.Tensor] | None = None,
) -> TrainState:
    """A fresh state at step 0: the model (with the `start` weights the driver chose,
    `init_weights.start_weights`) on `device`, its EMA copy, the wrapped loss module and the
    optimizer. With `teacher` weights (`distill.teacher`, `init_weights.teacher_weights`)
    the loss module is the distillation loss against a frozen copy of the model holding
    them."""
    model = build_model(cfg)
    if start:
        load_start(model, start)
    model = to_device(sync_batch_norm(model, cfg, world, device), cfg, device)
    ema = make_ema(model)
    ddp = compile_loss(wrap(loss_module(model, cfg, device, teacher), ddp_kwargs(cfg)), cfg)
    return TrainState(model, ema, ddp, make_optimizer(model, cfg, device))


def loss_module(
    model: torch.nn.Module,
    cfg: Config,
    device: torch.device,
    teacher: dict[str, torch.Tensor] | None,
) -> torch.nn.Module:
    """The module DDP wraps: `LossModule`, or with teacher weights `DistillModule`."""
    if teacher is None:
        return LossModule(model)
    frozen = build_model(cfg)
    frozen.load_state_dict(teacher)
    frozen = to_device(frozen, cfg, device)
    return DistillModule(model, frozen, cfg.sample.steps, cfg.sample.td)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    # map_location may have moved the byte tensors to the GPU; RNG states live on the CPU.
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


def gather_rng(world: int) -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (a collective: all ranks must call it)."""
    if world == 1 or not dist.is_initialized():
        return [rng_state()]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, rng_state())
    return out


def snapshot(
    state: TrainState, cfg: Config, rngs: list[dict[str, Any]], num_train: int
) -> dict[str, Any]:
    """The `checkpoint.pt` contents of `state`; `num_train`: examples per epoch."""
    position = state.data_position(cfg.train.batch_size)
    return {
        "model": state.model.state_dict(),
        "ema": state.ema.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "step": state.step,
        "train_seconds": float(state.train_seconds),
        "data_position": position,
        "epoch": position // max(1, num_train),
        "rng": rngs,
        "config": storable(cfg),
        **asdict(state.meta),
    }


def restore(state: TrainState, snap: dict[str, Any], rank: int) -> None:
    """Load a snapshot into `state`; rank `rank` gets its own RNG state back."""
    state.model.load_state_dict(snap["model"])
    state.ema.load_state_dict(snap["ema"])
    state.optimizer.load_state_dict(snap["optimizer"])
    state.step = int(snap["step"])
    # absent in checkpoints written before the time budget spanned restarts
    state.train_seconds = float(snap.get("train_seconds", 0.0))
    state.restored = True
    rngs = snap["rng"]
    # one state per rank since checkpoints store them all; older ones hold rank 0's only
    set_rng_state(rngs[rank % len(rngs)] if isinstance(rngs, list) else rngs)
