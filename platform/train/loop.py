"""The per-worker training loop run by Ray Train's `TorchTrainer` (DDP)."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from pix2seqd.platform import tracking
from pix2seqd.platform.config import Config
from pix2seqd.platform.data.skip_count import skipped_metrics
from pix2seqd.platform.log import configure_logging
from pix2seqd.platform.tracking_buffer import BufferedClient, delete_tag_if_present, in_order
from pix2seqd.platform.train import checkpoints, restore_point
from pix2seqd.platform.train.checkpoints import CheckpointLog, CheckpointTags
from pix2seqd.platform.train.periodic_eval import PeriodicEval, ValSubset
from pix2seqd.platform.train.progress import Meter, ProgressLine
from pix2seqd.platform.train.restore_point import RestorePoint
from pix2seqd.platform.train.state import (
    CheckpointMeta,
    TrainState,
    build_state,
    gather_rng,
    restore,
    snapshot,
)
from pix2seqd.platform.train.step import optimizer_step
from pix2seqd.platform.train.watch import PreemptionWatch, TrainClock, seconds_left

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerJob:
    """What every worker reads besides its data (built by `fit.fit`).

    storage / run_name: Ray Train's storage path and run name (checkpoint references);
    num_train: examples (or clips) per epoch; start: a Ray object ref of the weights the run
    starts from (`init_weights.start_weights`), or None; teacher: a Ray object ref of the
    teacher's weights of a distillation run (`init_weights.teacher_weights`), or None; stream: a Ray object ref of the run's
    `streams.TrainStream` when each rank builds its own dataset (`data.exact_order`), else
    None (the driver's stream is split by Ray Train); val_subset: periodic evaluation data;
    val_metric: the periodic score the progress line shows; log_level: the driver's level of
    the package's loggers."""

    cfg: Config
    meta: CheckpointMeta
    storage: str
    run_name: str
    num_train: int
    start: Any = None
    teacher: Any = None
    stream: Any = None
    val_subset: ValSubset | None = None
    val_metric: str = "val/pq"
    log_level: int = logging.INFO


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """loop_config: {'job': WorkerJob}."""
    job: WorkerJob = loop_config["job"]
    cfg, t = job.cfg, job.cfg.train
    # stderr, which Ray forwards to the driver's terminal
    configure_logging(job.log_level)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if t.torch_threads > 0:
        torch.set_num_threads(t.torch_threads)
    torch.manual_seed(t.seed * 1000 + rank)
    device = ray.train.torch.get_device()
    state, point = _initial_state(job, device, world, rank)
    run_id = job.meta.mlflow_run_id
    mlc = BufferedClient(tracking.client(job.meta.tracking_uri)) if rank == 0 and run_id else None
    # a set-aside checkpoint holds one of Ray Train's kept places until it rotates out:
    # tag fewer meanwhile, so that no tag names a folder Ray Train has deleted
    kept = max(1, t.keep_checkpoints - len(point.taken))
    ckpts = CheckpointLog(mlc, run_id, job.storage, job.run_name, kept) if mlc else None
    _record_start(mlc, run_id, state, _gather_nodes(world))
    _record_set_aside(mlc, run_id, job, point)
    evaluator = PeriodicEval(cfg, job.val_subset, job.meta.categories, run_id, rank)
    micro = t.batch_size // (world * t.accum)
    global_batch = micro * t.accum * world
    batches = iter(_train_batches(job, rank, world, state.step, micro))
    meter, scores = Meter(), {}
    budget_s, time_frac = 60 * t.time_budget_min, 0.0
    clock = TrainClock.resumed(state.train_seconds)
    save = Reporter(cfg, rank, world, ckpts, job.num_train, point.taken, clock)
    watch = PreemptionWatch(t.preemption_watcher)
    line = (
        ProgressLine(t.steps, global_batch, job.val_metric, budget_s, clock.origin)
        if rank == 0 and t.progress_every > 0
        else None
    )
    last_saved, first = state.step, True
    while state.step < t.steps:
        # checked at once after a restore: the budget may be spent, the decay goes on
        if budget_s > 0 and (first or state.step % STOP_CHECK_EVERY == 0):
            time_frac = _shared_budget_fraction(clock.elapsed() / budget_s, device, world)
            if time_frac > 1.0:
                if rank == 0:
                    log.info(
                        "time budget of %g min reached at step %d", t.time_budget_min, state.step
                    )
                break
        first = False
        notice = watch.due(state.step) and _new_notice(watch, mlc, run_id, state.step)
        if notice and last_saved != state.step:  # the checkpoint the restart will start from
            save(state, {"step": state.step, "train/loss": meter.last_loss})
            last_saved = state.step
        decay_frac = time_frac if t.decay_to_budget else 0.0
        if optimizer_step(state, cfg, batches, device, meter, decay_frac) is None:
            if rank == 0:  # the stream is built to last: this ends a run short of its steps
                log.warning("the training data ended at step %d of %d", state.step, t.steps)
            break
        step = state.step
        if step % t.log_every == 0:
            metrics = meter.flush(global_batch, state.optimizer)
            if mlc:
                metrics.update(skipped_metrics(cfg))  # data/skipped, with data.skip_bad
                tracking.log_metrics(mlc, run_id, metrics, step)
        if line and step % t.progress_every == 0:
            line.show(step, meter.line.close(), state.optimizer.param_groups[0]["lr"], scores)
        if step % t.checkpoint_every == 0:
            due = evaluator(state.ema, step, mlc, final=step >= t.steps)
            scores = {**scores, **due}
            save(state, {"step": step, "train/loss": meter.last_loss, **due})
            last_saved = step
    if last_saved != state.step or state.step == 0:
        metrics = {
            "step": state.step,
            "train/loss": meter.last_loss,
            **evaluator(state.ema, state.step, mlc, final=True),
        }
        save(state, metrics)
    if mlc:  # deliver what an outage held back before Ray Train ends this process
        mlc.close()


def ray_ddp(module: torch.nn.Module, kwargs: dict[str, Any]) -> torch.nn.Module:
    """Ray Train's DDP wrapping (`state.DdpWrap`); the model is already on its device."""
    return ray.train.torch.prepare_model(
        module, move_to_device=False, parallel_strategy_kwargs=kwargs
    )


def _initial_state(
    job: WorkerJob, device, world: int, rank: int
) -> tuple[TrainState, RestorePoint]:
    """A new state, restored from the run's newest checkpoint that loads
    (`restore_point.agreed`) when the worker group was restarted or the run resumed."""
    start = ray.get(job.start) if job.start is not None else None
    teacher = ray.get(job.teacher) if job.teacher is not None else None
    state = build_state(job.cfg, device, world, ray_ddp, start, teacher)
    state.meta = job.meta
    point = restore_point.agreed(ray.train.get_checkpoint(), rank, world)
    if point.snap is not None:
        restore(state, point.snap, rank)
    return state, point


def _record_set_aside(mlc, run_id: str, job: WorkerJob, point: RestorePoint) -> None:
    """Rank 0: a `corrupt_checkpoint/<step>` tag per checkpoint set aside at this start,
    naming it and why; the `checkpoint/<step>` tags naming them go (a new checkpoint of the
    step, in a folder of another name, is tagged when it is written), and a
    `best_checkpoint` naming one moves to the checkpoint restored, so that the run never
    stands for a checkpoint that does not load. Safe to repeat (after an outage)."""
    if not mlc or not point.set_aside:
        return
    refs = {
        aside: checkpoints.checkpoint_ref(job.storage, job.run_name, aside.dir_name)
        for aside in point.set_aside
    }
    restored = checkpoints.checkpoint_ref(job.storage, job.run_name, point.dir_name)

    def record(client) -> None:
        tags = CheckpointTags.of_run(client, run_id)
        for aside, ref in refs.items():
            tracking.set_tags(
                client, run_id, CheckpointTags.set_aside_tags(aside.step, ref, aside.reason)
            )
            if tags.refs.get(aside.step) == ref:
                delete_tag_if_present(client, run_id, CheckpointTags.step_key(aside.step))
        if tags.best_ref in refs.values():
            tracking.set_tags(client, run_id, CheckpointTags.best_tags(restored))

    in_order(mlc, record, "set-aside checkpoints")


def _new_notice(watch: PreemptionWatch, mlc, run_id: str, step: int) -> bool:
    """Whether a new preemption notice came (a collective); rank 0 logs it and records the
    seconds it leaves as `train/preemption_notice` at `step`."""
    notice = watch.new_notice()
    if notice is None:
        return False
    if mlc:
        left = seconds_left(notice)
        log.warning(
            "preemption notice for nodes %s (%.0f s left): checkpointing at step %d",
            notice.preempted_node_ids,
            left,
            step,
        )
        tracking.log_metrics(mlc, run_id, {"train/preemption_notice": left}, step)
    return True


def _record_start(mlc, run_id: str, state: TrainState, nodes: list[str]) -> None:
    """Rank 0: the node of every rank as a tag, and a restart (a FailureConfig restart or
    --resume) as the metric `train/restored_from`, visible in the UI."""
    if not mlc:
        return
    tracking.set_tags(mlc, run_id, {"worker_nodes": json.dumps(nodes)})
    if state.restored:
        log.info("continuing from the checkpoint of step %d", state.step)
        tracking.log_metrics(mlc, run_id, {"train/restored_from": state.step}, state.step)


def _gather_nodes(world: int) -> list[str]:
    """The Ray node id of every rank, in rank order (a collective: all ranks call it)."""
    node = ray.get_runtime_context().get_node_id()
    if world == 1 or not dist.is_initialized():
        return [node]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, node)
    return out


def _train_batches(job: WorkerJob, rank: int, world: int, step: int, micro: int):
    """This rank's training batches from optimizer step `step` on.

    With a `job.stream`, the rank's own ordered dataset is built here, starting at the
    stream position of `step`: after a restart from a checkpoint the data continue exactly
    where they stopped. Otherwise Ray Train's split of the driver's dataset is read."""
    if job.stream is None:
        shard = ray.train.get_dataset_shard("train")
        return shard.iter_torch_batches(batch_size=micro, drop_last=True)
    ds = ray.get(job.stream).dataset(job.cfg, rank, world, step * job.cfg.train.batch_size)
    return ds.iter_torch_batches(batch_size=micro, drop_last=True)


@dataclass(frozen=True)
class Reporter:
    """A rank's checkpoint report. `taken`: the run's folder names that hold set-aside
    checkpoints (`checkpoints.folder_name` avoids them); `clock`: the training time the
    snapshot records."""

    cfg: Config
    rank: int
    world: int
    ckpts: CheckpointLog | None
    num_train: int
    taken: frozenset[str]
    clock: TrainClock

    def __call__(self, state: TrainState, metrics: dict[str, float]) -> None:
        """Every rank reports (a barrier); rank 0 attaches the snapshot, then records it."""
        name = checkpoints.folder_name(state.step, self.taken)
        rngs = gather_rng(self.world)
        if self.rank != 0:
            ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
            return
        state.train_seconds = self.clock.elapsed()
        with tempfile.TemporaryDirectory() as d:
            checkpoints.save(d, snapshot(state, self.cfg, rngs, self.num_train))
            checkpoint = ray.train.Checkpoint.from_directory(d)
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)
            if self.ckpts is not None:
                self.ckpts.record(state.step, name, d, metrics.get("val/pq"))


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
