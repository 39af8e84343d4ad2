"""What `jobs/eval_coco.py` runs: score prediction files, or predict a split from a
checkpoint and score it, through the same code as the training job's evaluation.

Both write R.json (docs/cli.md) and record an MLflow run: scoring files is a top-level
`eval_coco` run; a checkpoint's evaluation nests under the checkpoint's training run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pix2seqd.platform import tracking
from pix2seqd.platform.config import Config, flatten, override
from pix2seqd.platform.data.coco_panoptic import CategoryMap
from pix2seqd.platform.data.default_data import resolve_data_root
from pix2seqd.platform.data.sources import gt_location, load_panoptic_split
from pix2seqd.platform.evaluation import tracked
from pix2seqd.platform.evaluation.beside_pq import beside_pq
from pix2seqd.platform.evaluation.coco_eval import evaluate_checkpoint
from pix2seqd.platform.evaluation.pq import pq_compute
from pix2seqd.platform.evaluation.predict import checkpoint_info
from pix2seqd.platform.ray_env import cluster_gpus, ray_session
from pix2seqd.platform.train.checkpoints import checkpoint_location


def score_files(
    gt_json: str, gt_dir: str, pred_json: str, pred_dir: str, out: str
) -> dict[str, Any]:
    """PQ, mIoU and AP^Th_pan of existing COCO-panoptic result files -> R.json (prediction
    time 0); `ap_th_pan` is null unless every thing segment of `pred_json` has a `score`."""
    t0 = time.perf_counter()
    result = pq_compute(gt_json, pred_json, gt_dir, pred_dir)
    result.update(beside_pq(gt_json, pred_json, gt_dir, pred_dir))
    result["timing"] = {"predict_s": 0.0, "score_s": time.perf_counter() - t0}
    tracked.write_result(out, result)
    mlc = tracking.client()
    params = {"gt_json": gt_json, "gt_dir": gt_dir, "pred_json": pred_json, "pred_dir": pred_dir}
    run_id = tracked.start_eval_run(mlc, "eval_coco", params, {})
    with tracked.run_status(mlc, run_id):
        _log(mlc, run_id, result)
    return result


@dataclass(frozen=True)
class CheckpointEval:
    """eval_coco from a checkpoint: CKPT reference, data set folder (empty: the generated
    set), split, where predictions and R.json go, and config overrides (dotted paths, laid
    over the checkpoint's own config: sample.steps, eval.max_images, ...)."""

    checkpoint: str
    data_root: str
    split: str
    pred_dir: str
    out: str
    overrides: Mapping[str, Any]


def eval_checkpoint(req: CheckpointEval) -> dict[str, Any]:
    """Predict the split with Ray Data actors, score it, log it; returns R.json."""

    location, cfg, meta = load_checkpoint_config(req.checkpoint, req.overrides)
    root = resolve_data_root(req.data_root)
    records, cmap = load_panoptic_split(cfg.data.dataset, root, req.split)
    check_categories(cmap, cfg, meta, req.checkpoint)
    gt_json, gt_dir = gt_location(cfg.data.dataset, root, req.split)
    mlc = tracking.client()
    tags = {"checkpoint": req.checkpoint, "dataset": cfg.data.dataset.value, "split": req.split}
    run_id = tracked.start_eval_run(
        mlc, "eval_coco", flatten(cfg), tags, tracked.parent_run(req.checkpoint, meta)
    )
    with tracked.run_status(mlc, run_id), ray_session(executor_nap=cfg.data.executor_nap):
        result = evaluate_checkpoint(
            location,
            records,
            cmap,
            gt_json,
            gt_dir,
            Path(req.pred_dir),
            cfg.sample,
            cfg.eval,
            cluster_gpus() > 0,
        )
        tracked.write_result(req.out, result)
        _log(mlc, run_id, result, records, Path(req.pred_dir), cfg.eval.overlays)
    return result


def load_checkpoint_config(
    ref: str, overrides: Mapping[str, Any]
) -> tuple[str, Config, dict[str, Any]]:
    """(location every actor can read, the checkpoint's config with `overrides`, its meta)."""

    location = checkpoint_location(ref)
    cfg, meta = checkpoint_info(location)
    return location, override(cfg, dict(overrides)), meta


def check_categories(cmap: CategoryMap, cfg: Config, meta: Mapping[str, Any], ref: str) -> None:
    """The data set's categories must be the ones the checkpoint was trained on."""
    if cmap.num_classes != cfg.model.num_classes:
        raise ValueError(
            f"checkpoint {ref} predicts {cfg.model.num_classes - 1} categories, the "
            f"data set lists {cmap.num_classes - 1}"
        )
    known = meta.get("categories") or []
    if known and [c["id"] for c in known] != [c["id"] for c in cmap.to_coco()]:
        raise ValueError(
            f"checkpoint {ref} was trained on category ids "
            f"{[c['id'] for c in known]}, the data set lists "
            f"{[c['id'] for c in cmap.to_coco()]}"
        )


def _log(
    mlc,
    run_id: str,
    result: dict[str, Any],
    records=(),
    pred_dir: Path | None = None,
    n_overlays: int = 0,
) -> None:
    """Metrics, eval/pq.json, the per-class table and overlays of a finished evaluation."""
    tracking.log_metrics(
        mlc, run_id, {**tracked.pq_metrics(result), **tracked.timing_metrics(result)}, 0
    )
    tracked.log_pq_artifacts(mlc, run_id, result, records, pred_dir, n_overlays)
