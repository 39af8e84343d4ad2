"""What `jobs/predict.py` runs: a checkpoint applied to an image, a folder of images, or a
folder of video frames, with results people can look at.

Image model (model.decoder.cond_frames = 0), input an image or a folder of images:
`OUT/<stem>.png` (COCO-panoptic result PNG, id = R + 256 G + 256² B), `OUT/predictions.json`
(annotations with `segments_info`, each segment with its `score`, and the checkpoint's
categories) and `OUT/overlays/<stem>.png` (image | prediction).
Video model, input a folder of frames (one video, frames in name order): streaming inference,
`OUT/<folder name>/<frame>.png` (DAVIS palette PNGs), `OUT/predictions.json` (ids per frame)
and `OUT/overlays/<frame>.png`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pix2seqd.platform.config import Config
from pix2seqd.platform.data.coco_panoptic import Category, CategoryMap, read_id_png
from pix2seqd.platform.data.davis import VideoRecord, read_davis_mask
from pix2seqd.platform.data.pipeline import read_rgb
from pix2seqd.platform.evaluation.coco_job import load_checkpoint_config
from pix2seqd.platform.evaluation.overlays import overlay_panels
from pix2seqd.platform.evaluation.panoptic_io import write_predictions_json
from pix2seqd.platform.evaluation.predict import predict_dataset
from pix2seqd.platform.evaluation.video_predict import predict_videos
from pix2seqd.platform.ray_env import cluster_gpus, ray_session

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def list_images(path: str | Path) -> list[Path]:
    """An image file, or the image files of a folder in name order; errors name the path."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"{path}: not an image ({', '.join(IMAGE_SUFFIXES)})")
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"--input {path}: no such file or folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"--input {path}: the folder holds no {'/'.join(IMAGE_SUFFIXES)} file")
    return files


def checkpoint_categories(cfg: Config, meta: Mapping[str, Any]) -> CategoryMap:
    """The categories the checkpoint was trained on; a checkpoint that did not record them
    gets numbered placeholders (category id = class), with a warning."""
    if meta.get("categories"):
        return CategoryMap.from_coco(meta["categories"], "checkpoint")
    log.warning(
        "the checkpoint records no categories (written before they were stored); "
        "category ids in predictions.json are the model's class numbers, all as things"
    )
    return CategoryMap([Category(k, f"class_{k}", True) for k in range(1, cfg.model.num_classes)])


def predict_path(
    checkpoint: str, input_path: str, out: str, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """Run the checkpoint on `input_path`; returns {'mode', 'outputs', 'out'}."""

    location, cfg, meta = load_checkpoint_config(checkpoint, overrides)
    files = list_images(input_path)
    out_dir = Path(out)
    with ray_session(executor_nap=cfg.data.executor_nap):
        use_gpu = cluster_gpus() > 0
        if cfg.model.decoder.cond_frames >= 1:
            return _predict_video(location, cfg, Path(input_path), files, out_dir, use_gpu)
        return _predict_images(
            location, cfg, checkpoint_categories(cfg, meta), files, out_dir, use_gpu
        )


def _predict_images(
    location: str, cfg: Config, cmap: CategoryMap, files: list[Path], out_dir: Path, use_gpu: bool
) -> dict[str, Any]:
    names = _unique_stems(files)
    items = [
        {"image_id": k, "image_path": str(f), "name": n}
        for k, (f, n) in enumerate(zip(files, names))
    ]
    s = cfg.sample
    anns = predict_dataset(
        items,
        location,
        str(out_dir),
        cmap,
        s.steps,
        s.td,
        s.min_pixels,
        cfg.eval.batch_size,
        cfg.eval.num_actors,
        use_gpu,
        sampler=s,
    )
    anns.sort(key=lambda a: a["image_id"])
    images = [{"id": k, "file_name": f.name} for k, f in enumerate(files)]
    write_predictions_json(out_dir / "predictions.json", anns, cmap, images)
    for f, n in zip(files, names):
        overlay_panels(
            read_rgb(f), [read_id_png(out_dir / f"{n}.png")], out_dir / "overlays" / f"{n}.png"
        )
    return {"mode": "images", "outputs": len(anns), "out": str(out_dir)}


def _predict_video(
    location: str, cfg: Config, folder: Path, files: list[Path], out_dir: Path, use_gpu: bool
) -> dict[str, Any]:
    if not folder.is_dir():
        raise ValueError(f"--input {folder}: a video model needs a folder of frames")
    video = VideoRecord(folder.name, tuple(files), tuple(files))
    s = cfg.sample
    rows = predict_videos(
        [video],
        location,
        str(out_dir),
        s.steps,
        s.later_steps,
        s.td,
        s.min_pixels,
        1,
        1,
        use_gpu,
        sampler=s,
    )
    frames = []
    for f in files:
        ids = read_davis_mask(out_dir / folder.name / f"{f.stem}.png")
        overlay_panels(read_rgb(f), [ids], out_dir / "overlays" / f"{f.stem}.png")
        frames.append(
            {"file_name": f"{folder.name}/{f.stem}.png", "ids": np.unique(ids[ids > 0]).tolist()}
        )
    (out_dir / "predictions.json").write_text(
        json.dumps(
            {"sequence": folder.name, "frames": frames, "proposals_dropped": rows[0]["dropped"]},
            indent=2,
        )
    )
    return {"mode": "video", "outputs": len(frames), "out": str(out_dir)}


def _unique_stems(files: list[Path]) -> list[str]:
    """Output names: file stems, made unique when two inputs share one (a.jpg, a.png)."""
    seen: dict[str, int] = {}
    names = []
    for f in files:
        k = seen.get(f.stem, 0)
        seen[f.stem] = k + 1
        names.append(f.stem if k == 0 else f"{f.stem}_{k}")
    return names
