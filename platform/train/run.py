"""Driver of a COCO-layout training run: data, Ray Train fit, evaluation, MLflow, summary."""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pix2seqd.platform import tracking
from pix2seqd.platform.config import Config, DatasetKind, flatten, override
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


def train_coco(cfg: Config, opts: RunOptions) -> dict[str, Any]:
    """Train on a COCO or Cityscapes panoptic layout (or its prepared shards), evaluate the
    final EMA weights, log everything."""
    from pix2seqd.platform.ray_env import check_cpus_for_training, init_ray
    from pix2seqd.platform.train.inputs import load_train_inputs

    validate_training_config(cfg)
    train_cpus = cfg.train.num_workers * cfg.train.cpus_per_worker
    started = init_ray(train_cpus)
    inputs = None
    try:
        check_cpus_for_training(train_cpus)
        inputs = load_train_inputs(cfg)
        if not cfg.data.prepared:
            cfg = override(cfg, {"data.root": inputs.source})
        cfg = override(cfg, {"model.num_classes": inputs.cmap.num_classes})
        summary = _tracked_run(cfg, opts, inputs)
    finally:
        if inputs is not None:
            inputs.close()
        if started:
            import ray

            ray.shutdown()
    if opts.summary_json:
        Path(opts.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.summary_json).write_text(json.dumps(summary, indent=2))
    return summary


def _tracked_run(cfg: Config, opts: RunOptions, inputs) -> dict[str, Any]:
    """The MLflow run around fit + evaluation; marked FAILED if anything raises."""
    mlc = tracking.client()
    tags = {"preset": opts.preset, "dataset": cfg.data.dataset.value, "data_source": inputs.source}
    run_id = tracking.start_run(mlc, flatten(cfg), tags, run_name=opts.run_name or None,
                                experiment=opts.experiment)
    print(f"[pix2seqd] MLflow run {run_id} in {mlc.tracking_uri}")
    try:
        _log_data_report(mlc, run_id, inputs)
        result = _fit(cfg, opts, inputs.train_rows, inputs.cmap, run_id, mlc.tracking_uri)
        summary = _evaluate_and_log(cfg, opts, result, inputs, mlc, run_id)
        mlc.set_terminated(run_id, "FINISHED")
    except BaseException:
        mlc.set_terminated(run_id, "FAILED")
        raise
    return summary


def _log_data_report(mlc, run_id: str, inputs) -> None:
    """Skipped bad records and segments made void (K-1 limit) as metrics, and the report."""
    tracking.log_metrics(mlc, run_id, inputs.metrics, 0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "validation_report.json"
        path.write_text(json.dumps(inputs.report, indent=2))
        mlc.log_artifact(run_id, str(path), "data")
    if inputs.metrics.get("data/bad_records"):
        print(f"[pix2seqd] skipped {inputs.metrics['data/bad_records']:g} bad training records "
              "(--skip-bad); see the run's data/validation_report.json")


def validate_training_config(cfg: Config) -> None:
    """Reject settings that would silently change the run or crash mid-way."""
    t = cfg.train
    per_step = t.num_workers * t.accum
    if t.batch_size % per_step or t.batch_size < per_step:
        raise ValueError(f"train.batch_size={t.batch_size} must be a positive multiple of "
                         f"train.num_workers * train.accum = {per_step}")
    for key in ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "num_workers"):
        if getattr(t, key) <= 0:
            raise ValueError(f"train.{key} must be > 0, got {getattr(t, key)}")
    if cfg.data.dataset not in (DatasetKind.COCO, DatasetKind.CITYSCAPES):
        raise ValueError(f"data.dataset={cfg.data.dataset.value!r}: this job trains panoptic "
                         "image data sets (coco, cityscapes)")
    if cfg.data.image_size % 16:
        raise ValueError(f"data.image_size={cfg.data.image_size} must be a multiple of 16")
    if cfg.data.image_width not in (0, cfg.data.image_size):
        raise ValueError(f"data.image_width={cfg.data.image_width}: the COCO-panoptic pipeline "
                         "trains on square canvases; leave it 0")


def _fit(cfg: Config, opts: RunOptions, records, cmap, run_id: str, uri: str):
    import ray.train
    from ray.train.torch import TorchTrainer

    from pix2seqd.platform.data.pipeline import build_train_datasets
    from pix2seqd.platform.train.loop import train_loop_per_worker

    t = cfg.train
    init_from = resolve_checkpoint(opts.init_from) if opts.init_from else ""
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": flatten(cfg), "run_id": run_id, "tracking_uri": uri,
                           "init_from": init_from, "categories": cmap.to_coco()},
        scaling_config=ray.train.ScalingConfig(
            num_workers=t.num_workers, use_gpu=t.use_gpu,
            resources_per_worker={"CPU": t.cpus_per_worker, **({"GPU": 1} if t.use_gpu else {})}),
        run_config=ray.train.RunConfig(
            name=f"pix2seqd-{run_id[:12]}", storage_path=storage_path(opts),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=t.keep_checkpoints)),
        datasets=build_train_datasets(records, cmap, cfg),
        # data.exact_order: each worker reads its own ordered dataset (train_<rank>)
        dataset_config=ray.train.DataConfig(datasets_to_split=[] if cfg.data.exact_order else "all"),
    )
    t0 = time.perf_counter()
    result = trainer.fit()
    print(f"[pix2seqd] training finished in {time.perf_counter() - t0:.0f} s")
    return result


def storage_path(opts: RunOptions) -> str:
    """The Ray Train storage path: a URI as given, a local path made absolute."""
    path = opts.storage_path or str(STORAGE_DEFAULT)
    if "://" in path:
        return path
    return str(Path(path).expanduser().resolve())


def _evaluate_and_log(cfg, opts, result, inputs, mlc, run_id) -> dict[str, Any]:
    from pix2seqd.platform.evaluation.coco_eval import evaluate_checkpoint
    from pix2seqd.platform.evaluation.tracked import log_pq_artifacts, pq_metrics, timing_metrics

    storage = storage_path(opts)
    tags = {f"checkpoint/{m.get('step', i)}": checkpoint_uri(c.path, storage)
            for i, (c, m) in enumerate(result.best_checkpoints)}
    final = result.checkpoint
    step = int(result.metrics.get("step", 0)) if result.metrics else 0
    best_uri = checkpoint_uri(final.path, storage)
    # Recorded before evaluating, so a failed evaluation still leaves resolvable checkpoints.
    tracking.set_tags(mlc, run_id, {**tags, "best_checkpoint": best_uri})
    with tempfile.TemporaryDirectory() as tmp:
        gt_json, gt_dir = inputs.eval_gt
        pred_dir = Path(tmp) / "predictions"
        res = evaluate_checkpoint(best_uri, inputs.val_records, inputs.cmap, gt_json, gt_dir,
                                  pred_dir, cfg.sample, cfg.eval, cfg.train.use_gpu)
        tracking.log_metrics(mlc, run_id, {**pq_metrics(res), **timing_metrics(res)}, step)
        log_pq_artifacts(mlc, run_id, res, inputs.val_records, pred_dir, cfg.eval.overlays)
    return {"mlflow_run_id": run_id, "tracking_uri": mlc.tracking_uri, "checkpoint": best_uri,
            "metrics": {"pq": res["All"]["pq"], "pq_th": res["Things"]["pq"],
                        "pq_st": res["Stuff"]["pq"]}}
