"""Evaluation during training: PQ of the EMA weights on a fixed val subset, on rank 0.

The subset travels with the loop config as bytes (images, GT PNGs, GT annotations), so a
worker on any node can score it without the data set's files. Scoring is in-process
(the workers hold the CPUs/GPUs; inference actors could not be scheduled next to them)
and uses the same prediction and PQ code as the final evaluation.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pix2seqd.platform import tracking
from pix2seqd.platform.config import Config
from pix2seqd.platform.data.coco_panoptic import CategoryMap, PanopticRecord
from pix2seqd.platform.data.pipeline import read_rgb
from pix2seqd.platform.evaluation.beside_pq import beside_pq
from pix2seqd.platform.evaluation.panoptic_io import (
    write_prediction,
    write_predictions_json,
)
from pix2seqd.platform.evaluation.pq import pq_compute
from pix2seqd.platform.evaluation.predict import batch_seed, predict_scored_label_maps
from pix2seqd.platform.evaluation.tracked import pq_metrics


@dataclass(frozen=True)
class ValSubset:
    """The first val images: encoded image and GT PNG bytes, their GT annotations (image
    ids replaced by positions 0..n-1, as hotcoco reads integer ids) and the categories."""

    images: tuple[bytes, ...]
    gt_pngs: tuple[bytes, ...]
    annotations: tuple[dict[str, Any], ...]
    categories: tuple[dict[str, Any], ...]


def build_val_subset(records: Sequence[PanopticRecord], gt_json: Path, n: int) -> ValSubset:
    chosen = list(records[:n])
    gt = json.loads(Path(gt_json).read_text())
    by_id = {a["image_id"]: a for a in gt["annotations"]}
    anns = tuple(
        {**by_id[r.image_id], "image_id": k, "file_name": f"{k:06d}.png"}
        for k, r in enumerate(chosen)
    )
    categories = tuple(gt["categories"])
    return ValSubset(
        tuple(Path(r.image_path).read_bytes() for r in chosen),
        tuple(Path(r.png_path).read_bytes() for r in chosen),
        anns,
        categories,
    )


@torch.no_grad()
def score_subset(
    model: torch.nn.Module, cfg: Config, subset: ValSubset, cmap: CategoryMap, seed: int = 0
) -> dict[str, float]:
    """val/pq, val/pq_th, val/pq_st (+ sq, rq, per class), val/miou and val/ap_th_pan
    (when defined) of `model` on the subset."""

    was_training = model.training
    model.eval()
    s, bs = cfg.sample, max(1, cfg.eval.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        gt_dir, pred_dir = Path(tmp) / "gt", Path(tmp) / "pred"
        gt_dir.mkdir()
        for ann, png in zip(subset.annotations, subset.gt_pngs):
            (gt_dir / ann["file_name"]).write_bytes(png)
        gt_json = Path(tmp) / "gt.json"
        gt_json.write_text(
            json.dumps(
                {"annotations": list(subset.annotations), "categories": list(subset.categories)}
            )
        )
        preds = []
        for i in range(0, len(subset.images), bs):
            images = [read_rgb(io.BytesIO(b)) for b in subset.images[i : i + bs]]
            scored = predict_scored_label_maps(
                model, cfg, images, s.steps, s.td, s.min_pixels, batch_seed(seed, i)
            )
            preds += [
                write_prediction(
                    label, cmap, i + k, pred_dir, f"{i + k:06d}", layout="2hw", score_map=score
                )
                for k, (label, score) in enumerate(scored)
            ]
        write_predictions_json(Path(tmp) / "pred.json", preds, cmap)
        result = pq_compute(gt_json, Path(tmp) / "pred.json", gt_dir, pred_dir)
        result.update(beside_pq(gt_json, Path(tmp) / "pred.json", gt_dir, pred_dir))
    model.train(was_training)
    return pq_metrics(result)


class PeriodicEval:
    """Rank 0 scores the EMA weights on the val subset every eval.every_steps and at the
    end, and logs the scores to the MLflow run `run_id` (through `mlc`); a call returns the
    metrics for the checkpoint's report ({} when not due, and on other ranks)."""

    def __init__(
        self,
        cfg: Config,
        subset: ValSubset | None,
        categories: list[dict[str, Any]],
        run_id: str,
        rank: int,
    ):
        self.cfg, self.subset, self.run_id = cfg, subset, run_id
        self.enabled = rank == 0 and cfg.eval.every_steps > 0 and subset is not None
        self.cmap = CategoryMap.from_coco(categories, "loop config") if self.enabled else None

    def __call__(
        self, ema: torch.nn.Module, step: int, mlc, final: bool = False
    ) -> dict[str, float]:
        if not self.enabled or not (final or step % self.cfg.eval.every_steps == 0):
            return {}
        metrics = score_subset(ema, self.cfg, self.subset, self.cmap, self.cfg.train.seed)
        if mlc:
            tracking.log_metrics(mlc, self.run_id, metrics, step)
        return {k: v for k, v in metrics.items() if not k.startswith("eval/pq_class/")}
