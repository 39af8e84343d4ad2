"""Driver of jobs/prepare_data.py: raw panoptic layout -> validated Parquet shards."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pix2seqd.platform.config import DatasetKind
from pix2seqd.platform.data import prepared
from pix2seqd.platform.data.prepare_davis import prepare_davis_split
from pix2seqd.platform.data.size_report import (
    Geometry,
    SegmentSizes,
    segment_sizes,
    split_reports,
)
from pix2seqd.platform.data.sources import load_panoptic_split
from pix2seqd.platform.data.validate import Check, ValidationReport, summarise

log = logging.getLogger(__name__)

DEFAULT_SPLITS = {
    DatasetKind.COCO: ("train2017", "val2017"),
    DatasetKind.CITYSCAPES: ("train", "val"),
    DatasetKind.DAVIS: ("train", "val"),
}


def prepare_dataset(
    kind: DatasetKind | str,
    root: str | Path,
    out: str,
    splits: Sequence[str] = (),
    *,
    crowd: str = "segment",
    max_instances: int = 256,
    rows_per_shard: int = 500,
    skip_bad: bool = False,
    resolution: str = "480p",
    geometry: Geometry | None = None,
) -> dict[str, Any]:
    """Convert every split, then write `<out>/validation_report.json` (also when a split
    has bad records and `skip_bad` is off; that raises ValueError after the report is
    written, and the bad split gets no `_index.json`). Returns the report dict. With
    `geometry`, a panoptic image set's report has the splits' size reports (`sizes`, at
    the geometry's canvas; an auto canvas chosen from the first split)."""

    kind = DatasetKind(kind)
    reports, sizes = [], {}
    for split in splits or DEFAULT_SPLITS[kind]:
        _remove_stale_index(prepared.join(out, split))
        if kind is DatasetKind.DAVIS:
            reports.append(
                prepare_davis_split(
                    root, split, out, max_instances, rows_per_shard, skip_bad, resolution
                )
            )
        else:
            report, sizes[split] = prepare_split(
                kind, root, split, out, crowd, max_instances, rows_per_shard, skip_bad
            )
            reports.append(report)
    result = {
        "dataset": kind.value,
        "root": str(root),
        "out": out,
        "skip_bad": skip_bad,
        "splits": {r.split: r.to_json() for r in reports},
    }
    if geometry is not None and sizes:
        result["sizes"] = split_reports(sizes, geometry, next(iter(sizes)))
    prepared.write_text(prepared.join(out, prepared.REPORT), json.dumps(result, indent=2) + "\n")
    failed = [r for r in reports if r.bad and not skip_bad]
    if failed:
        raise ValueError(
            "\n".join(r.error() for r in failed)
            + f"\n(report: {prepared.join(out, prepared.REPORT)})"
        )
    return result


def prepare_split(
    kind: DatasetKind,
    root,
    split: str,
    out: str,
    crowd: str,
    max_instances: int,
    rows_per_shard: int,
    skip_bad: bool,
) -> tuple[ValidationReport, SegmentSizes]:
    """Write one split's shards with Ray Data tasks (one per shard) and, if usable, its
    index; returns the validation report and the sizes the annotation file lists."""
    # lazy: Ray Data loads in seconds; the rest of this module is used without Ray (unit tests)
    import ray.data

    records, cmap = load_panoptic_split(kind, root, split)
    split_uri = prepared.join(out, split)
    items = prepared.shard_items(records, rows_per_shard)
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    writer = prepared.ShardWriter(split_uri, cmap, crowd)
    outcomes = sorted(
        ds.map_batches(writer, batch_size=1, batch_format="numpy").take_all(),
        key=lambda o: int(o["index"]),
    )
    checks = [
        Check(str(json.loads(o["image_id"])), str(o["problem"]), int(o["segments"]))
        for o in outcomes
    ]
    report = summarise(split, checks, max_instances)
    if not report.bad or skip_bad:
        index = {
            "format": prepared.FORMAT,
            "dataset": kind.value,
            "split": split,
            "categories": cmap.to_coco(),
            "records": [
                {
                    "index": int(o["index"]),
                    "image_id": json.loads(o["image_id"]),
                    "shard": o["shard"],
                    "row": int(o["row"]),
                    "segments": int(o["segments"]),
                    "height": records[int(o["index"])].height,
                    "width": records[int(o["index"])].width,
                }
                for o in outcomes
                if not o["problem"]
            ],
        }
        prepared.write_text(prepared.join(split_uri, prepared.INDEX), json.dumps(index))
    log.info(
        "%s: %d records, %d bad, %d shards -> %s",
        split,
        report.n_records,
        len(report.bad),
        len(items),
        split_uri,
    )
    return report, segment_sizes(records, cmap)


def _remove_stale_index(split_uri: str) -> None:
    fs, path = prepared.filesystem(prepared.join(split_uri, prepared.INDEX))
    try:
        fs.delete_file(path)
    except (FileNotFoundError, OSError):
        pass
