"""What `jobs/eval_davis.py` runs: score DAVIS palette PNGs, or segment the split's videos
with a checkpoint's streaming model (`video_predict`) and score them.

Both write J.json (docs/cli.md) and record an MLflow run, nested under the checkpoint's
training run in checkpoint mode. `evaluate_video_checkpoint` is the code path the video
training job's evaluation uses too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pix2seqd.platform import tracking
from pix2seqd.platform.config import Config, flatten
from pix2seqd.platform.data.davis import VideoRecord, load_davis
from pix2seqd.platform.evaluation import tracked
from pix2seqd.platform.evaluation.coco_job import load_checkpoint_config
from pix2seqd.platform.evaluation.davis_eval import evaluate_davis
from pix2seqd.platform.evaluation.video_predict import predict_videos
from pix2seqd.platform.ray_env import cluster_gpus, ray_session

log = logging.getLogger(__name__)


def score_results(
    davis_root: str, results_dir: str, split: str, out: str, resolution: str = "480p"
) -> dict[str, Any]:
    """J&F of existing palette PNGs `results_dir/<seq>/<frame>.png` -> J.json."""
    t0 = time.perf_counter()
    result = evaluate_davis(davis_root, results_dir, split, resolution)
    result["timing"] = {"predict_s": 0.0, "score_s": time.perf_counter() - t0}
    tracked.write_result(out, result)
    mlc = tracking.client()
    params = {
        "davis_root": davis_root,
        "results_dir": results_dir,
        "split": split,
        "resolution": resolution,
    }
    run_id = tracked.start_eval_run(mlc, "eval_davis", params, {})
    with tracked.run_status(mlc, run_id):
        _log(mlc, run_id, result)
    return result


def evaluate_video_checkpoint(
    checkpoint: str,
    videos: Sequence[VideoRecord],
    davis_root: str,
    split: str,
    results_dir: str,
    cfg: Config,
    use_gpu: bool,
    resolution: str = "480p",
) -> dict[str, Any]:
    """Segment `videos` (the split's, or some of them) and score them -> J.json dict, with
    `proposals_dropped` (ids beyond the evaluator's 20 per sequence; 0 for K <= 21)."""

    s, ev = cfg.sample, cfg.eval
    t0 = time.perf_counter()
    rows = predict_videos(
        videos,
        checkpoint,
        results_dir,
        s.steps,
        s.later_steps,
        s.td,
        s.min_pixels,
        ev.batch_size,
        ev.num_actors,
        use_gpu,
        sampler=s,
    )
    t1 = time.perf_counter()
    result = evaluate_davis(
        davis_root, results_dir, split, resolution, sequences=[v.name for v in videos]
    )
    frames = sum(r["frames"] for r in rows)
    result["timing"] = {
        "predict_s": t1 - t0,
        "score_s": time.perf_counter() - t1,
        "predict_ms_per_frame": 1000 * (t1 - t0) / max(1, frames),
    }
    later = sum(r["later_frames"] for r in rows)
    result["mean_later_steps"] = sum(r["later_steps"] for r in rows) / max(1, later)
    result["proposals_dropped"] = sum(r["dropped"] for r in rows)
    for r in rows:
        if r["dropped"]:
            log.warning(
                "%s: kept the 20 largest of %d ids (the DAVIS evaluator allows 20 "
                "proposals per sequence)",
                r["name"],
                r["dropped"] + 20,
            )
    return result


@dataclass(frozen=True)
class VideoCheckpointEval:
    """eval_davis from a checkpoint: CKPT, DAVIS root, split, results folder, J.json path,
    frame resolution folder and config overrides laid over the checkpoint's config."""

    checkpoint: str
    davis_root: str
    split: str
    results_dir: str
    out: str
    overrides: Mapping[str, Any]
    resolution: str = "480p"


def eval_checkpoint(req: VideoCheckpointEval) -> dict[str, Any]:
    """Segment the split with Ray Data actors, score, log; returns J.json."""

    location, cfg, meta = load_checkpoint_config(req.checkpoint, req.overrides)
    if cfg.model.decoder.cond_frames < 1:
        raise ValueError(
            f"checkpoint {req.checkpoint} is an image model "
            "(model.decoder.cond_frames = 0); eval_davis needs a video model"
        )
    videos = load_davis(req.davis_root, req.split, req.resolution)
    mlc = tracking.client()
    tags = {"checkpoint": req.checkpoint, "dataset": "davis", "split": req.split}
    run_id = tracked.start_eval_run(
        mlc, "eval_davis", flatten(cfg), tags, tracked.parent_run(req.checkpoint, meta)
    )
    with tracked.run_status(mlc, run_id), ray_session(executor_nap=cfg.data.executor_nap):
        result = evaluate_video_checkpoint(
            location,
            videos,
            req.davis_root,
            req.split,
            req.results_dir,
            cfg,
            cluster_gpus() > 0,
            req.resolution,
        )
        tracked.write_result(req.out, result)
        _log(mlc, run_id, result)
    return result


def _log(mlc, run_id: str, result: dict[str, Any]) -> None:
    metrics = {**tracked.davis_metrics(result), **tracked.timing_metrics(result)}
    for key in ("proposals_dropped", "mean_later_steps"):
        if key in result:
            metrics[f"eval/{key}"] = result[key]
    tracking.log_metrics(mlc, run_id, metrics, 0)
    tracked.log_result_json(mlc, run_id, result, "davis.json")
