"""The Ray Train part of a training job, shared by the image and video jobs: build the
`TorchTrainer`, fit, find the checkpoint to evaluate, log the final model to MLflow."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pix2seqd.platform import tracking
from pix2seqd.platform.config import Config, flatten
from pix2seqd.platform.train.checkpoints import checkpoint_uri, resolve_checkpoint

STORAGE_DEFAULT = tracking.HOME_DIR / "ray_results"


@dataclass(frozen=True)
class RunOptions:
    """Job inputs that are not part of the model/training config."""

    preset: str = "tiny"
    storage_path: str = ""
    init_from: str = ""
    summary_json: str = ""
    run_name: str = ""
    experiment: str = tracking.EXPERIMENT
    resume: str = ""  # MLflow run id of a stopped run to continue
    parent_run_id: str = ""  # nest the MLflow run under this one (a sweep's parent run)
    tags: tuple[tuple[str, str], ...] = ()  # extra MLflow tags of the run
    report_to_tune: bool = False  # forward the workers' reports to Ray Tune (a sweep trial)


@dataclass
class FitInputs:
    """What the workers read besides the config.

    train: {'kind': 'image', 'rows', 'cmap'} or {'kind': 'video', 'videos', 'stills'}
    ('stills': a `still_clips.StillSource` or None); categories:
    the COCO category list recorded in checkpoints; val_subset: periodic evaluation data
    (`periodic_eval.ValSubset`) or None."""

    train: dict[str, Any]
    num_train: int
    categories: list[dict[str, Any]] = field(default_factory=list)
    val_subset: Any = None


def open_run(mlc, cfg: Config, opts: RunOptions, tags: dict[str, str]) -> str:
    """The job's MLflow run: a new one (params = the flattened config; the storage path is
    recorded for --resume), or the resumed run, marked RUNNING again."""
    if opts.resume:
        mlc.update_run(opts.resume, status="RUNNING")
        run_id = opts.resume
    else:
        all_tags = {**tags, **dict(opts.tags), "storage_path": storage_path(opts)}
        experiment = mlc.get_run(opts.parent_run_id).info.experiment_id if opts.parent_run_id else None
        run_id = tracking.start_run(mlc, flatten(cfg), all_tags, run_name=opts.run_name or None,
                                    experiment=opts.experiment, parent_run_id=opts.parent_run_id or None,
                                    in_experiment=experiment)
    print(f"[pix2seqd] MLflow run {run_id} in {mlc.tracking_uri}" + (" (resumed)" if opts.resume else ""))
    return run_id


def resume_run(ref: str, opts: RunOptions, overrides: dict[str, Any]) -> tuple[Config, RunOptions]:
    """--resume runs:/<id> (or the bare id): the stopped run's config (its params, then
    `overrides`, e.g. more train.steps), storage path and preset. Ray Train then restores
    the latest checkpoint under the same run name and storage path."""
    from dataclasses import replace

    from pix2seqd.platform.config import from_flat, override

    run_id = ref.removeprefix("runs:/").strip("/")
    run = tracking.client().get_run(run_id)
    tags = run.data.tags
    if "storage_path" not in tags:
        raise ValueError(f"MLflow run {run_id} recorded no storage_path tag; it cannot be resumed")
    cfg = override(from_flat(run.data.params), overrides)
    return cfg, replace(opts, resume=run_id, storage_path=tags["storage_path"],
                        preset=tags.get("preset", opts.preset))


def latest_step(mlc, run_id: str) -> int:
    """The step of the run's newest recorded checkpoint (0 when none)."""
    tags = mlc.get_run(run_id).data.tags
    return max((int(k.split("/", 1)[1]) for k in tags if k.startswith("checkpoint/")), default=0)


def storage_path(opts: RunOptions) -> str:
    """The Ray Train storage path: --storage-path, else PIX2SEQD_STORAGE (set on every node
    of the cluster.yaml cluster: its S3 bucket), else ~/.pix2seqd/ray_results; a URI as
    given, a local path made absolute."""
    path = opts.storage_path or os.environ.get("PIX2SEQD_STORAGE", "") or str(STORAGE_DEFAULT)
    if "://" in path:
        return path
    return str(Path(path).expanduser().resolve())


def ray_run_name(run_id: str) -> str:
    return f"pix2seqd-{run_id[:12]}"


def fit(cfg: Config, opts: RunOptions, inputs: FitInputs, run_id: str, uri: str):
    """Run the training loop on Ray Train; returns the `ray.train.Result`.

    Per-rank datasets (data.exact_order) are built by the workers from the restored step;
    otherwise the driver's stream (images or video clips) is split by Ray Train."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from pix2seqd.platform.ray_env import sigint_handler_kept
    from pix2seqd.platform.train.loop import train_loop_per_worker

    t = cfg.train
    per_rank = cfg.data.exact_order
    loop_config = {
        "config": flatten(cfg), "run_id": run_id, "tracking_uri": uri,
        "init_from": init_checkpoint(cfg, opts.init_from) if opts.init_from else "",
        "categories": inputs.categories, "storage": storage_path(opts),
        "run_name": ray_run_name(run_id), "num_train": inputs.num_train,
        "train_source": ray.put(inputs.train) if per_rank else None,
        "val_subset": inputs.val_subset,
    }
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=t.num_workers, use_gpu=t.use_gpu,
            placement_strategy=t.placement_strategy.value,
            resources_per_worker={"CPU": t.cpus_per_worker, **({"GPU": 1} if t.use_gpu else {})}),
        run_config=ray.train.RunConfig(
            name=ray_run_name(run_id), storage_path=storage_path(opts),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=t.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=t.max_failures),
            callbacks=_tune_callbacks(opts)),
        datasets={} if per_rank else {"train": _split_stream(cfg, inputs, opts, run_id, uri)},
    )
    t0 = time.perf_counter()
    with sigint_handler_kept():
        result = trainer.fit()
    print(f"[pix2seqd] training finished in {time.perf_counter() - t0:.0f} s")
    return result


def init_checkpoint(cfg: Config, ref: str) -> str:
    """--init-from resolved to a local directory; refused here, on the driver, when its
    output head does not fit cfg's model (the workers would fail before their first step)."""
    from pix2seqd.models.pix2seq_d import check_head
    from pix2seqd.platform.train import checkpoint as ckpt_io

    path = resolve_checkpoint(ref)
    check_head(ckpt_io.load(path, mmap=True).get("ema", {}), cfg.model, cfg.loss, f"--init-from {ref}")
    return path


def _tune_callbacks(opts: RunOptions) -> list:
    """In a sweep trial, every checkpoint report (step, train/loss, val/pq when evaluated)
    also reaches Ray Tune, so schedulers such as ASHA can stop the trial early."""
    if not opts.report_to_tune:
        return []
    from ray.tune.integration.ray_train import TuneReportCallback

    return [TuneReportCallback()]


def _split_stream(cfg: Config, inputs: FitInputs, opts: RunOptions, run_id: str, uri: str):
    """The driver's stream, from the latest checkpoint's position when resuming a run.

    Video clips go the same way as images: per-rank clip datasets run a Ray Data executor
    inside each training process, which on 2 cores cost the video run most of its speed."""
    from pix2seqd.platform.data.pipeline import build_rank_dataset
    from pix2seqd.platform.data.video_pipeline import build_video_train_dataset

    start = latest_step(tracking.client(uri), run_id) * cfg.train.batch_size if opts.resume else 0
    if inputs.train["kind"] == "video":
        return build_video_train_dataset(inputs.train["videos"], cfg, 0, 1, start,
                                         inputs.train.get("stills"))
    return build_rank_dataset(inputs.train["rows"], inputs.train["cmap"], cfg, 0, 1, start)


def chosen_checkpoint(mlc, run_id: str, result, opts: RunOptions) -> tuple[str, int]:
    """(CKPT reference, step) of the checkpoint the run stands for: the best by val/pq
    when the run evaluated periodically, else the last one. The workers recorded it in
    the run's tags; the result's last checkpoint is the fallback."""
    tags = mlc.get_run(run_id).data.tags
    ref = tags.get("best_checkpoint") or checkpoint_uri(result.checkpoint.path, storage_path(opts))
    step = int(tags.get("best_step") or (result.metrics or {}).get("step", 0))
    tracking.set_tags(mlc, run_id, {"best_checkpoint": ref})
    return ref, step


def log_final_model(mlc, run_id: str, checkpoint: str) -> None:
    """The EMA weights of `checkpoint` as an MLflow PyTorch model, artifact path `model`
    (load with mlflow.pytorch.load_model("runs:/<run id>/model") where pix2seqd is
    installed)."""
    import mlflow
    import mlflow.pytorch

    from pix2seqd.platform.evaluation.predict import load_for_inference

    import torch

    model, _ = load_for_inference(resolve_checkpoint(checkpoint))
    mlflow.set_tracking_uri(mlc.tracking_uri)
    # pickle: the default 'pt2' export traces forward(), which is the training loss here;
    # explicit requirements skip MLflow's requirement inference (a subprocess reload)
    reqs = [f"torch=={torch.__version__.split('+')[0]}", "pix2seqd"]
    with mlflow.start_run(run_id=run_id):
        mlflow.pytorch.log_model(model, name="model", serialization_format="pickle",
                                 pip_requirements=reqs)
