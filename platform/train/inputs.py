"""What a panoptic training run reads: train rows, val records, categories, validation.

Raw layouts (`data.root`, COCO or Cityscapes) are validated record by record before the
first step; prepared shards (`data.prepared`) were validated by jobs/prepare_data.py and
their val split is written back to a temporary COCO layout for scoring.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pix2seqd.platform.config import Config, DatasetKind
from pix2seqd.platform.data.coco_panoptic import CategoryMap, PanopticRecord
from pix2seqd.platform.data.pipeline import record_item
from pix2seqd.platform.data.sources import gt_location, load_panoptic_split
from pix2seqd.platform.data.validate import Check, summarise, validate_records


@dataclass
class TrainInputs:
    """train_rows: rows for pipeline.build_train_datasets; val_records/eval_gt: what the
    final evaluation predicts and scores against; report: validation reports per split
    (logged as an artifact); cleanup: temporary folders to delete at the end."""

    train_rows: list[dict[str, Any]]
    val_records: list[PanopticRecord]
    cmap: CategoryMap
    eval_gt: tuple[Path, Path]
    source: str
    report: dict[str, Any]
    metrics: dict[str, float]
    cleanup: list[Path] = field(default_factory=list)

    def close(self) -> None:
        for path in self.cleanup:
            shutil.rmtree(path, ignore_errors=True)


def load_train_inputs(cfg: Config) -> TrainInputs:
    """Needs Ray (validation runs as Ray Data tasks). Raises ValueError listing bad records
    unless data.skip_bad, before any training step."""
    if cfg.data.prepared:
        return _prepared_inputs(cfg)
    from pix2seqd.platform.data.default_data import resolve_data_root

    root = resolve_data_root(cfg.data.root)
    train, val, cmap = load_splits(root, cfg)
    d, k = cfg.data, cfg.model.max_instances
    train, train_rep = validate_records(train, cmap, d.crowd, k, d.train_split, d.skip_bad)
    val, val_rep = validate_records(val, cmap, d.crowd, k, d.val_split, d.skip_bad)
    if not train or not val:
        raise ValueError(f"{root}: no usable record left in "
                         f"{d.train_split if not train else d.val_split} after validation")
    report = {"source": str(root), "splits": {r.split: r.to_json() for r in (train_rep, val_rep)}}
    metrics = {**train_rep.metrics(), "data/val_bad_records": float(len(val_rep.bad))}
    return TrainInputs([record_item(r) for r in train], val, cmap,
                       gt_location(d.dataset, root, d.val_split), str(root), report, metrics)


def load_splits(root: Path, cfg: Config):
    """Train and val records; both splits must exist, be non-empty and share categories."""
    d = cfg.data
    train_recs, cmap = load_panoptic_split(d.dataset, root, d.train_split)
    val_recs, val_cmap = load_panoptic_split(d.dataset, root, d.val_split)
    for split, recs in ((d.train_split, train_recs), (d.val_split, val_recs)):
        if not recs:
            raise ValueError(f"{gt_location(d.dataset, root, split)[0]} lists no annotated image")
    if cmap.to_coco() != val_cmap.to_coco():
        raise ValueError(f"{root}: the annotation files of {d.train_split} and {d.val_split} "
                         "list different categories")
    return train_recs, val_recs, cmap


def _prepared_inputs(cfg: Config) -> TrainInputs:
    from pix2seqd.platform.data import prepared

    d, uri = cfg.data, cfg.data.prepared
    rows, cmap, index = prepared.load_prepared(uri, d.train_split)
    _, val_cmap, _ = prepared.load_prepared(uri, d.val_split)
    if cmap.to_coco() != val_cmap.to_coco():
        raise ValueError(f"{uri}: splits {d.train_split} and {d.val_split} list different categories")
    checks = [Check(str(r["image_id"]), "", int(r.get("segments", 0))) for r in index["records"]]
    train_rep = summarise(d.train_split, checks, cfg.model.max_instances)
    report = json.loads(prepared.read_text(prepared.join(uri, prepared.REPORT)))
    skipped = report["splits"].get(d.train_split, {}).get("n_bad", 0)
    tmp = Path(tempfile.mkdtemp(prefix="pix2seqd-val-"))
    root = prepared.materialize(uri, d.val_split, tmp)
    val, _ = load_panoptic_split(DatasetKind.COCO, root, d.val_split)
    metrics = {**train_rep.metrics(), "data/bad_records": float(skipped)}
    return TrainInputs(rows, val, cmap, gt_location(DatasetKind.COCO, root, d.val_split), uri,
                       {"source": uri, "prepared_report": report}, metrics, [tmp])
