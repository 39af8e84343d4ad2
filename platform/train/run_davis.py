"""Driver of a video (DAVIS 2017) training run: clips on Ray Data, the streaming model on
Ray Train (usually initialised from an image checkpoint), J&F of the val sequences with the
streaming sampler, MLflow, summary."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pix2seqd.platform import tracking
from pix2seqd.platform.config import Config, DatasetKind, override
from pix2seqd.platform.data.davis import VideoRecord
from pix2seqd.platform.train.fit import (
    FitInputs, RunOptions, chosen_checkpoint, fit, log_final_model, open_run,
)
from pix2seqd.platform.train.run import validate_common

__all__ = ["train_davis", "validate_video_config"]


def train_davis(cfg: Config, opts: RunOptions) -> dict[str, Any]:
    """Train the video model on a DAVIS layout (or its prepared shards), score J&F."""
    from pix2seqd.platform.ray_env import check_cpus_for_training, ray_session

    validate_video_config(cfg)
    train_cpus = cfg.train.num_workers * cfg.train.cpus_per_worker
    with ray_session(train_cpus), tempfile.TemporaryDirectory() as tmp:
        check_cpus_for_training(train_cpus)
        train, val, root = load_video_splits(cfg, Path(tmp))
        if not cfg.data.prepared:
            cfg = override(cfg, {"data.root": str(root)})
        summary = _tracked_run(cfg, opts, train, val, root)
    if opts.summary_json:
        Path(opts.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.summary_json).write_text(json.dumps(summary, indent=2))
    return summary


def validate_video_config(cfg: Config) -> None:
    validate_common(cfg)
    if cfg.data.dataset is not DatasetKind.DAVIS:
        raise ValueError(f"data.dataset={cfg.data.dataset.value!r}: train_davis trains on DAVIS")
    if cfg.model.decoder.cond_frames < 1:
        raise ValueError("model.decoder.cond_frames must be >= 1 for the video model")
    d = cfg.data
    if not 0.0 <= d.still_fraction <= 1.0:
        raise ValueError(f"data.still_fraction={d.still_fraction} must be in [0, 1]")
    if d.still_fraction > 0 and not d.stills:
        raise ValueError(f"data.still_fraction={d.still_fraction} needs data.stills "
                         "(a COCO-panoptic root, or 'generated')")
    if d.still_shift < 0:
        raise ValueError(f"data.still_shift={d.still_shift} must be >= 0")
    for name in ("history_drop", "history_add"):
        if not 0.0 <= getattr(d, name) <= 1.0:
            raise ValueError(f"data.{name}={getattr(d, name)} must be in [0, 1]")


def load_video_splits(cfg: Config, tmp: Path) -> tuple[list[VideoRecord], list[VideoRecord], Path]:
    """Train and val videos, and the DAVIS root the val split is scored against (prepared
    shards: their val split written back to a DAVIS layout under `tmp`)."""
    from pix2seqd.platform.data.davis import load_davis
    from pix2seqd.platform.data.default_data import resolve_data_root

    d = cfg.data
    if d.prepared:
        from pix2seqd.platform.data.prepare_davis import load_prepared_davis

        root = materialize_davis(load_prepared_davis(d.prepared, d.val_split), d.val_split, tmp)
        train = load_prepared_davis(d.prepared, d.train_split)
    else:
        root = resolve_data_root(d.root, video=True)
        train = load_davis(root, d.train_split)
    val = load_davis(root, d.val_split)
    if not train or not val:
        raise ValueError(f"{d.prepared or root}: split {d.train_split if not train else d.val_split} "
                         "lists no sequence")
    return train, val, root


def materialize_davis(videos: list[VideoRecord], split: str, out: Path, res: str = "480p") -> Path:
    """Write videos (frames and masks as files or shard references) as a DAVIS layout."""
    for v in videos:
        for sub, paths in (("JPEGImages", v.frames), ("Annotations_unsupervised", v.masks)):
            folder = out / sub / res / v.name
            folder.mkdir(parents=True, exist_ok=True)
            for path in paths:
                name = Path(str(getattr(path, "name", path))).name
                if hasattr(path, "open_bytes"):
                    (folder / name).write_bytes(path.open_bytes().read())
                else:
                    shutil.copyfile(path, folder / name)
    (out / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    (out / "ImageSets" / "2017" / f"{split}.txt").write_text("".join(f"{v.name}\n" for v in videos))
    return out


def _tracked_run(cfg: Config, opts: RunOptions, train, val, root: Path) -> dict[str, Any]:
    from pix2seqd.platform.data.still_clips import load_stills
    from pix2seqd.platform.data.video_pipeline import clip_index

    mlc = tracking.client()
    tags = {"preset": opts.preset, "dataset": "davis", "data_source": cfg.data.prepared or str(root)}
    stills = load_stills(cfg)  # bad still images stop the job before it opens a run
    run_id = open_run(mlc, cfg, opts, tags)
    try:
        clips = len(clip_index(train, cfg.model.decoder.cond_frames + 1))
        source = {"kind": "video", "videos": train, "stills": stills}
        result = fit(cfg, opts, FitInputs(source, clips), run_id, mlc.tracking_uri)
        summary = _evaluate_and_log(cfg, opts, result, val, root, mlc, run_id)
        mlc.set_terminated(run_id, "FINISHED")
    except BaseException:
        mlc.set_terminated(run_id, "FAILED")
        raise
    return summary


def _evaluate_and_log(cfg, opts, result, val, root: Path, mlc, run_id) -> dict[str, Any]:
    """J&F of the run's checkpoint on the val sequences (the first eval.max_images of them
    when > 0), logged with J.json; the EMA model goes to MLflow."""
    from pix2seqd.platform.evaluation.davis_job import evaluate_video_checkpoint
    from pix2seqd.platform.evaluation.tracked import (
        davis_metrics, log_result_json, timing_metrics,
    )

    best_uri, step = chosen_checkpoint(mlc, run_id, result, opts)
    videos = val[: cfg.eval.max_images] if cfg.eval.max_images > 0 else val
    with tempfile.TemporaryDirectory() as tmp:
        res = evaluate_video_checkpoint(best_uri, videos, str(root), cfg.data.val_split, tmp, cfg,
                                        cfg.train.use_gpu)
    tracking.log_metrics(mlc, run_id, {**davis_metrics(res), **timing_metrics(res)}, step)
    log_result_json(mlc, run_id, res, "davis.json")
    log_final_model(mlc, run_id, best_uri)
    return {"mlflow_run_id": run_id, "tracking_uri": mlc.tracking_uri, "checkpoint": best_uri,
            "metrics": {k: res[k] for k in ("J&F-Mean", "J-Mean", "F-Mean")}}
