"""What a training job runs with besides the model/training config: `RunOptions`, the
Ray Train storage path, and the config and options of a stopped run to resume (by id, or
`--resume auto`: the unfinished run of the job's run name). Cheap to import (no torch, Ray
or MLflow at module level): `platform/cli.py` builds these for the jobs' argument
handling."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pix2seqd.platform import tracking
from pix2seqd.platform.config import Config, from_flat, override
from pix2seqd.platform.train.run_lock import Holder, LeaseTiming, refuse_if_held, resumable_run

STORAGE_DEFAULT = tracking.HOME_DIR / "ray_results"
RESUME_AUTO = "auto"  # --resume auto


@dataclass(frozen=True)
class RunOptions:
    """Job inputs that are not part of the model/training config."""

    preset: str = "tiny"
    storage_path: str = ""
    init_from: str = ""
    summary_json: str = ""
    run_name: str = ""
    experiment: str = ""  # MLflow experiment name; '': tracking.experiment_name()
    resume: str = ""  # MLflow run id of a stopped run to continue
    # --resume auto: at most one unfinished run per run name; a new run gives way to one of
    # the same name that another driver started first
    resume_auto: bool = False
    parent_run_id: str = ""  # nest the MLflow run under this one (a sweep's parent run)
    tags: tuple[tuple[str, str], ...] = ()  # extra MLflow tags of the run
    report_to_tune: bool = False  # forward the workers' reports to Ray Tune (a sweep trial)


def resume_run(ref: str, opts: RunOptions, overrides: dict[str, Any]) -> tuple[Config, RunOptions]:
    """--resume runs:/<id> (or the bare id): the stopped run's config (its params, then
    `overrides`, e.g. more train.steps), storage path and preset. Ray Train then restores
    the latest checkpoint under the same run name and storage path."""
    run_id = ref.removeprefix("runs:/").strip("/")
    run = tracking.client().get_run(run_id)
    refuse_if_held(run, Holder.this_process(), LeaseTiming())  # fail before Ray starts
    tags = run.data.tags
    if "storage_path" not in tags:
        raise ValueError(f"MLflow run {run_id} recorded no storage_path tag; it cannot be resumed")
    cfg = override(from_flat(run.data.params), overrides)
    return cfg, replace(
        opts,
        resume=run_id,
        storage_path=tags["storage_path"],
        preset=tags.get("preset", opts.preset),
    )


def resume_auto(
    cfg: Config, opts: RunOptions, overrides: dict[str, Any]
) -> tuple[Config, RunOptions]:
    """--resume auto: continue the unfinished run named `opts.run_name` in the job's
    experiment (the newest that recorded a checkpoint; `resume_run`), else start a new run
    with `cfg`. Refused while a live driver trains a run of that name; runs whose driver
    died are marked FAILED on the way (platform/train/run_lock.py)."""
    mlc = tracking.client()
    experiment = mlc.get_experiment_by_name(opts.experiment or tracking.experiment_name())
    if experiment is not None:
        found = resumable_run(mlc, experiment.experiment_id, opts.run_name, LeaseTiming())
        if found is not None:
            cfg, opts = resume_run(found, opts, overrides)
    return cfg, replace(opts, resume_auto=True)


def storage_path(opts: RunOptions) -> str:
    """The Ray Train storage path: --storage-path, else PIX2SEQD_STORAGE (set on every node
    of the cluster.yaml cluster: its S3 bucket), else ~/.pix2seqd/ray_results; a URI as
    given, a local path made absolute."""
    path = opts.storage_path or os.environ.get("PIX2SEQD_STORAGE", "") or str(STORAGE_DEFAULT)
    if "://" in path:
        return path
    return str(Path(path).expanduser().resolve())
