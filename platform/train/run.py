"""Driver of a COCO-layout training run: data, Ray Train fit, evaluation, MLflow, summary."""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from pix2seqd.platform import tracking
from pix2seqd.platform.config import Config, DatasetKind, override
from pix2seqd.platform.train.fit import (
    FitInputs, RunOptions, chosen_checkpoint, fit, log_final_model, open_run,
)

__all__ = ["RunOptions", "train_coco", "validate_common", "validate_training_config"]

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
    run_id = open_run(mlc, cfg, opts, tags)
    try:
        _log_data_report(mlc, run_id, inputs)
        result = fit(cfg, opts, _fit_inputs(cfg, inputs), run_id, mlc.tracking_uri)
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
    """Reject settings that would silently change an image run or crash mid-way."""
    validate_common(cfg)
    if cfg.data.dataset not in (DatasetKind.COCO, DatasetKind.CITYSCAPES):
        raise ValueError(f"data.dataset={cfg.data.dataset.value!r}: this job trains panoptic "
                         "image data sets (coco, cityscapes)")
    if cfg.data.image_width not in (0, cfg.data.image_size):
        raise ValueError(f"data.image_width={cfg.data.image_width}: the COCO-panoptic pipeline "
                         "trains on square canvases; leave it 0")


def validate_common(cfg: Config) -> None:
    """Checks every training job shares: batch split, positive counters, canvas sizes,
    evaluation cadence."""
    t = cfg.train
    per_step = t.num_workers * t.accum
    if t.batch_size % per_step or t.batch_size < per_step:
        raise ValueError(f"train.batch_size={t.batch_size} must be a positive multiple of "
                         f"train.num_workers * train.accum = {per_step}")
    for key in ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "num_workers"):
        if getattr(t, key) <= 0:
            raise ValueError(f"train.{key} must be > 0, got {getattr(t, key)}")
    # the encoder has stride 16; the decoder halves the mask len(ch_mult) - 1 times
    unit = math.lcm(16, cfg.model.mask_stride * 2 ** (len(cfg.model.decoder.ch_mult) - 1))
    for key, size in (("data.image_size", cfg.data.image_size), ("data.image_width", cfg.data.image_width)):
        if size % unit:
            raise ValueError(f"{key}={size} must be a multiple of {unit} (encoder stride 16, "
                             f"mask stride {cfg.model.mask_stride}, decoder levels)")
    e = cfg.eval
    if e.every_steps < 0 or (e.every_steps and e.every_steps % t.checkpoint_every):
        raise ValueError(f"eval.every_steps={e.every_steps} must be 0 or a multiple of "
                         f"train.checkpoint_every={t.checkpoint_every} (evaluations go with checkpoints)")


def _fit_inputs(cfg: Config, inputs) -> FitInputs:
    from pix2seqd.platform.train.periodic_eval import build_val_subset

    subset = None
    if cfg.eval.every_steps > 0:
        subset = build_val_subset(inputs.val_records, inputs.eval_gt[0], cfg.eval.periodic_images)
    return FitInputs({"kind": "image", "rows": inputs.train_rows, "cmap": inputs.cmap},
                     len(inputs.train_rows), inputs.cmap.to_coco(), subset)


def _evaluate_and_log(cfg, opts, result, inputs, mlc, run_id) -> dict[str, Any]:
    """Score the run's checkpoint (best by val/pq, or the last) on the val split, log the
    scores, tables, overlays and the EMA model."""
    from pix2seqd.platform.evaluation.coco_eval import evaluate_checkpoint
    from pix2seqd.platform.evaluation.tracked import log_pq_artifacts, pq_metrics, timing_metrics

    best_uri, step = chosen_checkpoint(mlc, run_id, result, opts)
    with tempfile.TemporaryDirectory() as tmp:
        gt_json, gt_dir = inputs.eval_gt
        pred_dir = Path(tmp) / "predictions"
        res = evaluate_checkpoint(best_uri, inputs.val_records, inputs.cmap, gt_json, gt_dir,
                                  pred_dir, cfg.sample, cfg.eval, cfg.train.use_gpu)
        final = {**pq_metrics(res, "final/"), **timing_metrics(res)}
        if cfg.eval.every_steps <= 0:  # no periodic val/pq: the final scores are the run's
            final.update(pq_metrics(res))
        tracking.log_metrics(mlc, run_id, final, step)
        log_pq_artifacts(mlc, run_id, res, inputs.val_records, pred_dir, cfg.eval.overlays)
    log_final_model(mlc, run_id, best_uri)
    return {"mlflow_run_id": run_id, "tracking_uri": mlc.tracking_uri, "checkpoint": best_uri,
            "metrics": {"pq": res["All"]["pq"], "pq_th": res["Things"]["pq"],
                        "pq_st": res["Stuff"]["pq"]}}
