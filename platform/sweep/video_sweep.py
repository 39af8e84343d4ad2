"""Inference sweeps of a video checkpoint (paper §3.4, Fig. 7): a grid of the streaming
sampler's settings (later frames' steps, τ_d, the adaptive rule of `sample.adaptive`), each
grid point segmenting the DAVIS split as `eval_davis --checkpoint` does (same actors, seeds
and scoring) and scored with J&F, the mean steps per later frame and the time per frame."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pix2seqd.platform.config import Config, override
from pix2seqd.platform.data.davis import VideoRecord
from pix2seqd.platform.evaluation.davis_job import evaluate_video_checkpoint
from pix2seqd.platform.evaluation.tracked import davis_metrics


def evaluate_video_grid(
    checkpoint: str,
    cfg: Config,
    grid: Sequence[dict[str, Any]],
    videos: Sequence[VideoRecord],
    davis: tuple[str, str],
    work_dir: Path,
    use_gpu: bool,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """J.json results, one per grid point (dotted sample.* overrides of `cfg`) in order, and
    {'predict_s', 'score_s'} over the grid. davis: (DAVIS root, split); result PNGs go to
    `work_dir/gNNN/<sequence>/`."""
    results = [
        evaluate_video_checkpoint(
            checkpoint,
            videos,
            davis[0],
            davis[1],
            str(work_dir / f"g{k:03d}"),
            override(cfg, point),
            use_gpu,
        )
        for k, point in enumerate(grid)
    ]
    timing = {key: sum(r["timing"][key] for r in results) for key in ("predict_s", "score_s")}
    return results, timing


def video_scores(result: dict[str, Any]) -> dict[str, float]:
    """A trial's row of the sweep table (`spec.VIDEO_SCORES`) from its J.json."""
    return {
        "j_and_f": float(result["J&F-Mean"]),
        "j": float(result["J-Mean"]),
        "f": float(result["F-Mean"]),
        "mean_later_steps": float(result["mean_later_steps"]),
        "predict_ms_per_frame": float(result["timing"]["predict_ms_per_frame"]),
    }


def video_metrics(result: dict[str, Any]) -> dict[str, float]:
    """A trial's MLflow metrics: eval_davis's J&F metrics, eval/mean_later_steps and
    eval/predict_ms_per_frame."""
    return {
        **davis_metrics(result),
        "eval/mean_later_steps": float(result["mean_later_steps"]),
        "eval/predict_ms_per_frame": float(result["timing"]["predict_ms_per_frame"]),
    }
