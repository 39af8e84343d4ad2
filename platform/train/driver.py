"""The driver of a training job, one for images and videos: Ray, the task's data, the
MLflow run, Ray Train's fit, the final evaluation, the summary.

The task type (`image_task.ImageTask`, `video_task.VideoTask`) supplies what differs: its config
checks, loading, the stream and periodic evaluation data the workers read, and the final
evaluation with its summary metrics.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Protocol

from pix2seqd.platform import tracking
from pix2seqd.platform.cluster_fit import check_training_fits
from pix2seqd.platform.config import AutoSize, Config, canvas_unit
from pix2seqd.platform.ray_env import ray_session
from pix2seqd.platform.tracking_buffer import set_final_status
from pix2seqd.platform.train.auto import resolve_auto
from pix2seqd.platform.train.fit import (
    FitInputs,
    chosen_checkpoint,
    fit,
    log_final_model,
    open_run,
)
from pix2seqd.platform.train.options import RunOptions
from pix2seqd.platform.train.run_lock import DriverLease

log = logging.getLogger(__name__)


class Task(Protocol):
    """A training task loaded for one run (made by its type's `load`)."""

    def resolved(self, cfg: Config) -> Config:
        """`cfg` with what the data decided (the data root found, the class count)."""

    def tags(self, cfg: Config) -> dict[str, str]:
        """MLflow tags of the run besides the preset: `dataset`, `data_source`."""

    def log_inputs(self, cfg: Config, mlc, run_id: str) -> None:
        """What the data checks found, logged before training (`cfg`: the run's, resolved)."""

    def fit_inputs(self, cfg: Config) -> FitInputs:
        """What the workers read besides the config."""

    def evaluate(
        self, cfg: Config, checkpoint: str, step: int, mlc, run_id: str
    ) -> dict[str, float]:
        """Score `checkpoint` on the val split, log the scores at `step`; the summary's
        metrics."""


class TaskType(Protocol):
    @staticmethod
    def validate(cfg: Config) -> None:
        """Reject a config this task cannot train."""

    @classmethod
    def load(cls, cfg: Config, tmp: Path) -> Task:
        """Read and check the data (Ray is up); `tmp` lives as long as the run."""


def train(task_type: TaskType, cfg: Config, opts: RunOptions) -> dict[str, Any]:
    """Check the config, load the data, train, evaluate, log everything; the summary
    (docs/cli.md, "Training summary"), also written to `opts.summary_json` when set."""
    task_type.validate(cfg)
    train_cpus = cfg.train.num_workers * cfg.train.cpus_per_worker
    with (
        ray_session(train_cpus, cfg.data.executor_nap),
        tempfile.TemporaryDirectory(prefix="pix2seqd-train-") as tmp,
    ):
        cfg = resolve_auto(cfg, opts.init_from)
        check_training_fits(cfg)
        task = task_type.load(cfg, Path(tmp))
        summary = _tracked_run(task, task.resolved(cfg), opts)
    if opts.summary_json:
        Path(opts.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.summary_json).write_text(json.dumps(summary, indent=2))
    return summary


def _tracked_run(task: Task, cfg: Config, opts: RunOptions) -> dict[str, Any]:
    """The MLflow run around fit + evaluation, held by this driver's lease for as long
    (platform/train/run_lock.py); marked FAILED if anything raises, KILLED on Ctrl-C."""
    mlc = tracking.client()
    lease = DriverLease(mlc)
    run_id = open_run(mlc, cfg, opts, {"preset": opts.preset, **task.tags(cfg)}, lease)
    with lease.kept(run_id):
        try:
            task.log_inputs(cfg, mlc, run_id)
            result = fit(cfg, opts, task.fit_inputs(cfg), run_id, mlc.tracking_uri)
            checkpoint, step = chosen_checkpoint(mlc, run_id, result, opts)
            metrics = task.evaluate(cfg, checkpoint, step, mlc, run_id)
            log_final_model(mlc, run_id, checkpoint)
            _end_run(mlc, run_id, lease, "FINISHED")
        except BaseException as exc:
            _end_run(
                mlc, run_id, lease, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            )
            raise
    return {
        "mlflow_run_id": run_id,
        "tracking_uri": mlc.tracking_uri,
        "checkpoint": checkpoint,
        "metrics": metrics,
    }


def _end_run(mlc, run_id: str, lease: DriverLease, status: str) -> None:
    """Set the run's final status (retried while the tracking server is unreachable,
    `tracking_buffer.set_final_status`), unless another driver took the run over meanwhile."""
    if lease.lost.is_set():
        log.error("MLflow run %s left as it is (not %s): another driver holds it", run_id, status)
        return
    set_final_status(mlc, run_id, status)


def validate_common(cfg: Config) -> None:
    """Checks every training job shares: batch split, positive counters, canvas sizes,
    evaluation cadence."""
    t = cfg.train
    per_step = t.num_workers * t.accum
    if t.batch_size % per_step or t.batch_size < per_step:
        raise ValueError(
            f"train.batch_size={t.batch_size} must be a positive multiple of "
            f"train.num_workers * train.accum = {per_step}"
        )
    for key in ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "num_workers"):
        if getattr(t, key) <= 0:
            raise ValueError(f"train.{key} must be > 0, got {getattr(t, key)}")
    if t.progress_every < 0:
        raise ValueError(
            f"train.progress_every must be >= 0 (0: no progress line), got {t.progress_every}"
        )
    if isinstance(cfg.data.image_size, AutoSize) and cfg.data.image_width:
        raise ValueError(
            f"data.image_size=auto chooses a square canvas; data.image_width="
            f"{cfg.data.image_width} must be 0 with it"
        )
    unit = canvas_unit(cfg)
    for key, size in (
        ("data.image_size", cfg.data.image_size),
        ("data.image_width", cfg.data.image_width),
    ):
        if not isinstance(size, AutoSize) and size % unit:
            raise ValueError(
                f"{key}={size} must be a multiple of {unit} (encoder stride 16, "
                f"mask stride {cfg.model.mask_stride}, decoder levels)"
            )
    e = cfg.eval
    if e.every_steps < 0 or (e.every_steps and e.every_steps % t.checkpoint_every):
        raise ValueError(
            f"eval.every_steps={e.every_steps} must be 0 or a multiple of "
            f"train.checkpoint_every={t.checkpoint_every} (evaluations go with checkpoints)"
        )
