"""The image task of the training driver: panoptic segmentation of COCO or Cityscapes
images (or their prepared shards), scored by PQ; its config checks, loading, the workers'
inputs, and the final evaluation with the summary's metrics (docs/cli.md)."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pix2seqd.platform import tracking
from pix2seqd.platform.config import AutoSize, Config, DatasetKind, override
from pix2seqd.platform.data.size_report import AUTO_RULE, Geometry
from pix2seqd.platform.evaluation.coco_eval import evaluate_checkpoint
from pix2seqd.platform.evaluation.tracked import (
    log_pq_artifacts,
    pq_metrics,
    timing_metrics,
)
from pix2seqd.platform.train.driver import validate_common
from pix2seqd.platform.train.fit import FitInputs
from pix2seqd.platform.train.inputs import (
    TrainInputs,
    load_train_inputs,
    log_data_checks,
    log_size_report,
)
from pix2seqd.platform.train.periodic_eval import build_val_subset
from pix2seqd.platform.train.streams import ImageStream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageTask:
    """Panoptic segmentation of images; the final score is PQ on the val split. auto_size:
    the run was given data.image_size=auto (decided in `resolved` from the data's sizes)."""

    inputs: TrainInputs
    auto_size: bool = False

    @staticmethod
    def validate(cfg: Config) -> None:
        validate_training_config(cfg)

    @classmethod
    def load(cls, cfg: Config, tmp: Path) -> ImageTask:
        return cls(load_train_inputs(cfg, tmp), isinstance(cfg.data.image_size, AutoSize))

    def resolved(self, cfg: Config) -> Config:
        found = {} if cfg.data.prepared else {"data.root": self.inputs.source}
        if self.auto_size:
            size, _ = Geometry.of(cfg).canvas_for(self.inputs.sizes)
            log.info("data.image_size=auto: canvas %d (%s)", size, AUTO_RULE)
            found["data.image_size"] = size
        return override(cfg, {**found, "model.num_classes": self.inputs.cmap.num_classes})

    def tags(self, cfg: Config) -> dict[str, str]:
        return {"dataset": cfg.data.dataset.value, "data_source": self.inputs.source}

    def log_inputs(self, cfg: Config, mlc, run_id: str) -> None:
        """Skipped bad records and segments made void (K-1 limit) as metrics, the validation
        report, the size report (`log_size_report`) and, for an auto canvas, the rule that
        chose it (tag `image_size_rule`: a tag, since `--resume` rebuilds the config from the
        run's params)."""
        log_data_checks(mlc, run_id, self.inputs, "records")
        log_size_report(mlc, run_id, cfg, self.inputs.sizes)
        if self.auto_size:
            tracking.set_tags(mlc, run_id, {"image_size_rule": f"auto: {AUTO_RULE}"})

    def fit_inputs(self, cfg: Config) -> FitInputs:
        subset = None
        if cfg.eval.every_steps > 0:
            subset = build_val_subset(
                self.inputs.val_records, self.inputs.eval_gt[0], cfg.eval.periodic_images
            )
        rows = self.inputs.train_rows
        return FitInputs(
            ImageStream(rows, self.inputs.cmap),
            len(rows),
            self.inputs.cmap.to_coco(),
            subset,
            "val/pq",
        )

    def evaluate(
        self, cfg: Config, checkpoint: str, step: int, mlc, run_id: str
    ) -> dict[str, float]:
        """PQ of `checkpoint` on the val split; logs the scores, tables and overlays."""
        gt_json, gt_dir = self.inputs.eval_gt
        with tempfile.TemporaryDirectory() as tmp:
            pred_dir = Path(tmp) / "predictions"
            res = evaluate_checkpoint(
                checkpoint,
                self.inputs.val_records,
                self.inputs.cmap,
                gt_json,
                gt_dir,
                pred_dir,
                cfg.sample,
                cfg.eval,
                cfg.train.uses_gpu,
            )
            final = {**pq_metrics(res, "final/"), **timing_metrics(res)}
            if cfg.eval.every_steps <= 0:  # no periodic val/pq: the final scores are the run's
                final.update(pq_metrics(res))
            tracking.log_metrics(mlc, run_id, final, step)
            log_pq_artifacts(mlc, run_id, res, self.inputs.val_records, pred_dir, cfg.eval.overlays)
        return {"pq": res["All"]["pq"], "pq_th": res["Things"]["pq"], "pq_st": res["Stuff"]["pq"]}


def validate_training_config(cfg: Config) -> None:
    """Reject settings that would silently change an image run or crash mid-way."""
    validate_common(cfg)
    if cfg.data.dataset not in (DatasetKind.COCO, DatasetKind.CITYSCAPES):
        raise ValueError(
            f"data.dataset={cfg.data.dataset.value!r}: this job trains panoptic "
            "image data sets (coco, cityscapes)"
        )
