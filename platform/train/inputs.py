"""What a training run reads: train rows, val records, categories and validation of a
panoptic image data set, or the train and val videos of a DAVIS one.

Raw layouts (`data.root`: COCO or Cityscapes record by record, DAVIS frame by frame) are
validated before the first step; prepared shards (`data.prepared`) were validated by
jobs/prepare_data.py.
The val split of prepared shards is written back to the official layout in a folder the
caller gives (and removes), for scoring. What validation found goes to the run's MLflow
record at step 0 (`log_data_checks`).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pix2seqd.platform import tracking
from pix2seqd.platform.config import Config, DatasetKind
from pix2seqd.platform.data import prepared
from pix2seqd.platform.data.coco_panoptic import CategoryMap, PanopticRecord, record_item
from pix2seqd.platform.data.davis import VideoRecord, load_davis
from pix2seqd.platform.data.default_data import resolve_data_root
from pix2seqd.platform.data.prepare_davis import load_prepared_davis, load_prepared_davis_train
from pix2seqd.platform.data.size_report import (
    Geometry,
    SegmentSizes,
    checked_report,
    report_metrics,
    segment_sizes,
)
from pix2seqd.platform.data.sources import gt_location, load_panoptic_split
from pix2seqd.platform.data.still_clips import StillSource, load_stills
from pix2seqd.platform.data.validate import Check, summarise, validate_records
from pix2seqd.platform.data.validate_davis import validate_videos

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainInputs:
    """train_rows: rows for `streams.ImageStream`; val_records/eval_gt: what the final
    evaluation predicts and scores against; source: the data root or prepared URI;
    report: validation reports per split (logged as an artifact); metrics: their counts;
    sizes: image and segment sizes from the annotations (`size_report`): the train split's,
    or for prepared shards the val split's (the train annotations are inside the shards)."""

    train_rows: list[dict[str, Any]]
    val_records: list[PanopticRecord]
    cmap: CategoryMap
    eval_gt: tuple[Path, Path]
    source: str
    report: dict[str, Any]
    metrics: dict[str, float]
    sizes: SegmentSizes


@dataclass(frozen=True)
class VideoInputs:
    """train / val videos (train with the objects each keeps, `davis.kept_objects`), the
    DAVIS root the val split is scored against, the still images of `data.stills` (None
    without), the validation reports (logged as an artifact) and their counts."""

    train: list[VideoRecord]
    val: list[VideoRecord]
    root: Path
    stills: StillSource | None
    report: dict[str, Any]
    metrics: dict[str, float]


def log_data_checks(mlc, run_id: str, inputs: TrainInputs | VideoInputs, unit: str) -> None:
    """Log the inputs' validation to the MLflow run `run_id`: their counts as metrics at
    step 0 and their reports as the artifact data/validation_report.json; a warning when
    --skip-bad left training data out (the metric `data/bad_<unit>`: `data/bad_records`,
    `data/bad_videos`)."""
    tracking.log_metrics(mlc, run_id, inputs.metrics, 0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "validation_report.json"
        path.write_text(json.dumps(inputs.report, indent=2))
        mlc.log_artifact(run_id, str(path), "data")
    left_out = inputs.metrics.get(f"data/bad_{unit}")
    if left_out:
        log.warning(
            "left out %g bad training %s (--skip-bad); see the run's data/validation_report.json",
            left_out,
            unit,
        )


def log_size_report(mlc, run_id: str, cfg: Config, sizes: SegmentSizes) -> dict[str, Any]:
    """The size report at the run's canvas and mask stride (`size_report`): printed to the
    job's log, its metrics (data/thing_mask_px_p25, ..._p50, data/things_under_4px, ...) at
    step 0, the artifact data/size_report.json, and the warning when many things are too
    small to draw (also as the tag `data_warning`). Returns the report."""
    report = checked_report(sizes, cfg.data.image_hw, Geometry.of(cfg), "training data")
    tracking.log_metrics(mlc, run_id, report_metrics(report), 0)
    if report["warning"]:
        tracking.set_tags(mlc, run_id, {"data_warning": report["warning"]})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "size_report.json"
        path.write_text(json.dumps(report, indent=2))
        mlc.log_artifact(run_id, str(path), "data")
    return report


def load_train_inputs(cfg: Config, tmp: Path) -> TrainInputs:
    """Needs Ray (validation runs as Ray Data tasks). Raises ValueError listing bad records
    unless data.skip_bad, before any training step. `tmp`: where a prepared val split is
    written back."""
    if cfg.data.prepared:
        return _prepared_inputs(cfg, tmp)
    root = resolve_data_root(cfg.data.root)
    train, val, cmap = load_splits(root, cfg)
    d, k = cfg.data, cfg.model.max_instances
    train, train_rep = validate_records(train, cmap, d.crowd, k, d.train_split, d.skip_bad)
    val, val_rep = validate_records(val, cmap, d.crowd, k, d.val_split, d.skip_bad)
    if not train or not val:
        raise ValueError(
            f"{root}: no usable record left in "
            f"{d.train_split if not train else d.val_split} after validation"
        )
    report = {"source": str(root), "splits": {r.split: r.to_json() for r in (train_rep, val_rep)}}
    metrics = {**train_rep.metrics(), "data/val_bad_records": float(len(val_rep.bad))}
    return TrainInputs(
        [record_item(r) for r in train],
        val,
        cmap,
        gt_location(d.dataset, root, d.val_split),
        str(root),
        report,
        metrics,
        segment_sizes(train, cmap),
    )


def load_splits(root: Path, cfg: Config):
    """Train and val records; both splits must exist, be non-empty and share categories."""
    d = cfg.data
    train_recs, cmap = load_panoptic_split(d.dataset, root, d.train_split)
    val_recs, val_cmap = load_panoptic_split(d.dataset, root, d.val_split)
    for split, recs in ((d.train_split, train_recs), (d.val_split, val_recs)):
        if not recs:
            raise ValueError(f"{gt_location(d.dataset, root, split)[0]} lists no annotated image")
    if cmap.to_coco() != val_cmap.to_coco():
        raise ValueError(
            f"{root}: the annotation files of {d.train_split} and {d.val_split} "
            "list different categories"
        )
    return train_recs, val_recs, cmap


def _prepared_inputs(cfg: Config, tmp: Path) -> TrainInputs:
    d, uri = cfg.data, cfg.data.prepared
    rows, cmap, index = prepared.load_prepared(uri, d.train_split)
    _, val_cmap, _ = prepared.load_prepared(uri, d.val_split)
    if cmap.to_coco() != val_cmap.to_coco():
        raise ValueError(
            f"{uri}: splits {d.train_split} and {d.val_split} list different categories"
        )
    checks = [Check(str(r["image_id"]), "", int(r.get("segments", 0))) for r in index["records"]]
    train_rep = summarise(d.train_split, checks, cfg.model.max_instances)
    report = json.loads(prepared.read_text(prepared.join(uri, prepared.REPORT)))
    skipped = report["splits"].get(d.train_split, {}).get("n_bad", 0)
    root = prepared.materialize(uri, d.val_split, tmp)
    val, _ = load_panoptic_split(DatasetKind.COCO, root, d.val_split)
    metrics = {**train_rep.metrics(), "data/bad_records": float(skipped)}
    return TrainInputs(
        rows,
        val,
        cmap,
        gt_location(DatasetKind.COCO, root, d.val_split),
        uri,
        {"source": uri, "prepared_report": report},
        metrics,
        segment_sizes(val, cmap),
    )


def load_video_inputs(cfg: Config, tmp: Path) -> VideoInputs:
    """Train and val videos, and the DAVIS root the val split is scored against (prepared
    shards: their val split written back to a DAVIS layout under `tmp`). Raw videos are
    validated here (Ray Data tasks) and the still images too, so bad ones stop the job
    before it opens a run, unless data.skip_bad leaves them out."""
    d, k = cfg.data, cfg.model.max_instances
    if d.prepared:
        root = materialize_davis(load_prepared_davis(d.prepared, d.val_split), d.val_split, tmp)
        train, train_rep = load_prepared_davis_train(d.prepared, d.train_split, k)
        val = load_davis(root, d.val_split)
        report = json.loads(prepared.read_text(prepared.join(d.prepared, prepared.REPORT)))
        bad_frames = report["splits"].get(d.train_split, {}).get("n_bad", 0)
        report = {"source": d.prepared, "prepared_report": report, "train": train_rep.to_json()}
        metrics = {**train_rep.metrics(), "data/bad_frames": float(bad_frames)}
    else:
        root = resolve_data_root(d.root, video=True)
        train, train_rep = validate_videos(
            load_davis(root, d.train_split), d.train_split, k, d.skip_bad
        )
        val, val_rep = validate_videos(load_davis(root, d.val_split), d.val_split, k, d.skip_bad)
        report = {
            "source": str(root),
            "splits": {r.split: r.to_json() for r in (train_rep, val_rep)},
        }
        metrics = {**train_rep.metrics(), "data/val_bad_videos": float(len(val_rep.bad_videos))}
    if not train or not val:
        raise ValueError(
            f"{d.prepared or root}: split {d.train_split if not train else d.val_split} "
            "lists no usable sequence"
        )
    return VideoInputs(train, val, root, load_stills(cfg), report, metrics)


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
