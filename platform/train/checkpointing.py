"""Checkpoints inside the training loop: what a snapshot holds, how it is reported to Ray
Train, restored, and recorded in MLflow.

A snapshot is everything exact resume needs: model, EMA, optimizer (the learning rate is a
function of the step), step, epoch and data position, every rank's RNG state, the resolved
config, plus where it came from (MLflow run, categories). Ray Train persists it under
`<storage>/<run name>/checkpoint_<step:08d>` and keeps the last `train.keep_checkpoints`.
Rank 0 tags each one in MLflow as `checkpoint/<step>` as soon as it is persisted (tags of
checkpoints Ray has deleted are removed), and keeps the best one by val/pq apart, as
`<storage>/<run name>/best_<step:08d>` (uploaded before the tag `best_checkpoint` is moved
to it, so the tag always names a complete checkpoint).
"""
from __future__ import annotations

import tempfile
from typing import Any

import ray.train
import torch.distributed as dist

from pix2seqd.platform import tracking
from pix2seqd.platform.config import Config, flatten
from pix2seqd.platform.train import checkpoint as ckpt_io
from pix2seqd.platform.train.step import rng_state, set_rng_state


def checkpoint_ref(storage: str, run_name: str, dir_name: str) -> str:
    """The URI (or local path) of a checkpoint folder under the Ray Train storage path;
    a query string of the storage URI (e.g. an S3 endpoint) is kept at the end."""
    if "://" not in storage:
        return f"{storage.rstrip('/')}/{run_name}/{dir_name}"
    base, _, query = storage.partition("?")
    return f"{base.rstrip('/')}/{run_name}/{dir_name}" + (f"?{query}" if query else "")


def gather_rng(world: int) -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (a collective: all ranks must call it)."""
    if world == 1 or not dist.is_initialized():
        return [rng_state()]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, rng_state())
    return out


def snapshot(state: dict[str, Any], cfg: Config, rngs: list[dict[str, Any]],
             num_train: int) -> dict[str, Any]:
    position = state["step"] * cfg.train.batch_size
    return {
        "model": state["model"].state_dict(), "ema": state["ema"].state_dict(),
        "optimizer": state["optimizer"].state_dict(), "step": state["step"],
        "data_position": position, "epoch": position // max(1, num_train), "rng": rngs,
        "config": ckpt_io.config_to_storable(flatten(cfg)), **state["meta"],
    }


def restore(state: dict[str, Any], snap: dict[str, Any], rank: int) -> None:
    state["model"].load_state_dict(snap["model"])
    state["ema"].load_state_dict(snap["ema"])
    state["optimizer"].load_state_dict(snap["optimizer"])
    state["step"] = int(snap["step"])
    rngs = snap["rng"]
    # one state per rank since checkpoints store them all; older ones hold rank 0's only
    set_rng_state(rngs[rank % len(rngs)] if isinstance(rngs, list) else rngs)


def report(state: dict[str, Any], cfg: Config, rank: int, world: int, metrics: dict[str, float],
           log: "CheckpointLog | None", num_train: int) -> None:
    """Every rank reports (a barrier); rank 0 attaches the snapshot, then records it."""
    name = f"checkpoint_{state['step']:08d}"
    rngs = gather_rng(world)
    if rank != 0:
        ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
        return
    with tempfile.TemporaryDirectory() as d:
        ckpt_io.save(d, snapshot(state, cfg, rngs, num_train))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                         checkpoint_dir_name=name)
        if log is not None:
            log.record(state["step"], name, d, metrics.get("val/pq"))


class CheckpointLog:
    """Rank 0's MLflow record of the persisted checkpoints and of the best one.

    State is read back from the run's tags, so a restarted worker group continues it."""

    def __init__(self, mlc, run_id: str, storage: str, run_name: str, keep: int):
        self.mlc, self.run_id, self.storage, self.run_name, self.keep = mlc, run_id, storage, run_name, keep
        tags = mlc.get_run(run_id).data.tags
        self.steps = sorted(int(k.split("/", 1)[1]) for k in tags if k.startswith("checkpoint/"))
        self.best_score = float(tags.get("best_val_pq", "-inf"))
        self.best_ref = tags.get("best_checkpoint", "")

    def record(self, step: int, dir_name: str, local_dir: str, score: float | None) -> None:
        ref = checkpoint_ref(self.storage, self.run_name, dir_name)
        tags = {f"checkpoint/{step}": ref}
        if score is None:  # no periodic evaluation: the latest checkpoint is the best guess
            tags["best_checkpoint"] = ref
        elif score > self.best_score:
            tags.update(self._keep_best(step, local_dir, score))
        tracking.set_tags(self.mlc, self.run_id, tags)
        self.steps = sorted(set(self.steps) | {step})
        for old in self.steps[:-self.keep]:  # Ray Train deleted these folders
            self.mlc.delete_tag(self.run_id, f"checkpoint/{old}")
        self.steps = self.steps[-self.keep:]

    def _keep_best(self, step: int, local_dir: str, score: float) -> dict[str, str]:
        import pyarrow.fs as pafs

        previous = self.best_ref if "/best_" in self.best_ref else ""
        ref = checkpoint_ref(self.storage, self.run_name, f"best_{step:08d}")
        fs, path = pafs.FileSystem.from_uri(_as_uri(ref))
        fs.create_dir(path, recursive=True)
        pafs.copy_files(local_dir, path, destination_filesystem=fs)
        if previous:
            tracking.set_tags(self.mlc, self.run_id, {"best_checkpoint": ref})
            old_fs, old_path = pafs.FileSystem.from_uri(_as_uri(previous))
            old_fs.delete_dir(old_path)
        self.best_score, self.best_ref = score, ref
        return {"best_checkpoint": ref, "best_val_pq": repr(score), "best_step": str(step)}


def _as_uri(ref: str) -> str:
    return ref if "://" in ref else f"file://{ref}"
