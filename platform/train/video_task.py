"""The video task of the training driver: the streaming video model on DAVIS 2017 (or its
prepared shards), scored by J&F; its config checks, loading, the workers' inputs, and the
final evaluation with the summary's metrics (docs/cli.md)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from pix2seqd.platform import tracking
from pix2seqd.platform.config import Config, DatasetKind, override
from pix2seqd.platform.data.video_pipeline import clip_index
from pix2seqd.platform.evaluation.davis_job import evaluate_video_checkpoint
from pix2seqd.platform.evaluation.tracked import (
    davis_metrics,
    log_result_json,
    timing_metrics,
)
from pix2seqd.platform.train.driver import validate_common
from pix2seqd.platform.train.fit import FitInputs
from pix2seqd.platform.train.inputs import VideoInputs, load_video_inputs, log_data_checks
from pix2seqd.platform.train.streams import VideoStream


@dataclass(frozen=True)
class VideoTask:
    """Video panoptic segmentation with the streaming model, usually initialised from an
    image checkpoint; the final score is J&F of the val sequences with the streaming
    sampler."""

    inputs: VideoInputs

    @staticmethod
    def validate(cfg: Config) -> None:
        validate_video_config(cfg)

    @classmethod
    def load(cls, cfg: Config, tmp: Path) -> VideoTask:
        return cls(load_video_inputs(cfg, tmp))

    def resolved(self, cfg: Config) -> Config:
        return cfg if cfg.data.prepared else override(cfg, {"data.root": str(self.inputs.root)})

    def tags(self, cfg: Config) -> dict[str, str]:
        return {"dataset": "davis", "data_source": cfg.data.prepared or str(self.inputs.root)}

    def log_inputs(self, cfg: Config, mlc, run_id: str) -> None:
        """Videos left out as bad (--skip-bad) and objects made void (K-1 limit) as metrics,
        and the validation report."""
        log_data_checks(mlc, run_id, self.inputs, "videos")

    def fit_inputs(self, cfg: Config) -> FitInputs:
        clips = len(clip_index(self.inputs.train, cfg.model.decoder.cond_frames + 1))
        return FitInputs(
            VideoStream(self.inputs.train, self.inputs.stills), clips, val_metric="val/jf"
        )

    def evaluate(
        self, cfg: Config, checkpoint: str, step: int, mlc, run_id: str
    ) -> dict[str, float]:
        """J&F of `checkpoint` on the val sequences (the first eval.max_images of them when
        > 0), logged with J.json."""
        val = self.inputs.val
        videos = val[: cfg.eval.max_images] if cfg.eval.max_images > 0 else val
        with tempfile.TemporaryDirectory() as tmp:
            res = evaluate_video_checkpoint(
                checkpoint,
                videos,
                str(self.inputs.root),
                cfg.data.val_split,
                tmp,
                cfg,
                cfg.train.uses_gpu,
            )
        tracking.log_metrics(mlc, run_id, {**davis_metrics(res), **timing_metrics(res)}, step)
        log_result_json(mlc, run_id, res, "davis.json")
        return {k: res[k] for k in ("J&F-Mean", "J-Mean", "F-Mean")}


def validate_video_config(cfg: Config) -> None:
    """Reject settings the video model or its clip pipeline cannot train with."""
    validate_common(cfg)
    if cfg.data.dataset is not DatasetKind.DAVIS:
        raise ValueError(f"data.dataset={cfg.data.dataset.value!r}: train_davis trains on DAVIS")
    if cfg.model.decoder.cond_frames < 1:
        raise ValueError("model.decoder.cond_frames must be >= 1 for the video model")
    d = cfg.data
    if not 0.0 <= d.still_fraction <= 1.0:
        raise ValueError(f"data.still_fraction={d.still_fraction} must be in [0, 1]")
    if d.still_fraction > 0 and not d.stills:
        raise ValueError(
            f"data.still_fraction={d.still_fraction} needs data.stills "
            "(a COCO-panoptic root, or 'generated')"
        )
    if d.still_shift < 0:
        raise ValueError(f"data.still_shift={d.still_shift} must be >= 0")
    for name in ("history_drop", "history_add"):
        if not 0.0 <= getattr(d, name) <= 1.0:
            raise ValueError(f"data.{name}={getattr(d, name)} must be in [0, 1]")
