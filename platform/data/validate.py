"""Per-record validation of panoptic data (COCO / Cityscapes layouts) before training.

Every check names the file and the problem, so a bad record is never turned into a silently
wrong label: a missing file, an image that does not decode completely (truncated JPEG), a
corrupt PNG, PNG ids absent from `segments_info`, `segments_info` ids absent from the PNG,
an unknown category, and sizes that disagree (image, PNG, JSON width/height).

More than K-1 segments in one image is not a problem: training makes the smallest void
(transforms.void_smallest); the checks count segments so the report gives how many.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pix2seqd.platform.data.coco_panoptic import (
    CategoryMap,
    PanopticRecord,
    Segment,
    decode_label_map,
    parse_segments,
    read_id_png,
    record_item,
    require_present,
)


@dataclass(frozen=True)
class Check:
    """Outcome of one record: `problem` is '' when it is usable; `segments` = its non-void
    segments with pixels (more than K-1 of them: training makes the smallest void)."""

    image_id: str
    problem: str = ""
    segments: int = 0


def check_example(
    image: bytes,
    png: bytes,
    segments: Sequence[Segment],
    size: tuple[int, int],
    cmap: CategoryMap,
    crowd: str,
    names: tuple[str, str],
) -> tuple[str, int]:
    """(problem or '', number of segments) of one example given its encoded bytes.

    size: (height, width) from the JSON; names: (image file, PNG file) for messages.
    """
    try:
        hw_image = decoded_size(image, names[0])
        ids = read_id_png(png, names[1])
        if ids.shape != hw_image:
            return (
                f"{names[1]}: PNG size {ids.shape} differs from image {names[0]} size {hw_image}",
                0,
            )
        if hw_image != tuple(size):
            return (
                f"{names[0]}: image size {hw_image} differs from the JSON height/width {tuple(size)}",
                0,
            )
        label = decode_label_map(ids, segments, cmap, crowd=crowd, name=names[1])
        require_present(ids, segments, names[1])
    except ValueError as err:
        return str(err), 0
    return "", int(label[..., 1].max(initial=0))


def decoded_size(data: bytes, name: str) -> tuple[int, int]:
    """Decode the whole image (a truncated file fails only when the pixels are read)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.height, im.width
    except (OSError, SyntaxError) as err:  # PIL raises SyntaxError for some broken headers
        raise ValueError(f"{name}: cannot decode image ({err})") from None


def read_bytes(path: str | Path) -> bytes:
    """File contents; FileNotFoundError names the file."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None


def check_row(row: dict[str, Any], cmap: CategoryMap, crowd: str) -> Check:
    """Check one `coco_panoptic.record_item` row (files on disk)."""
    image_id = str(row["image_id"])
    try:
        image, png = read_bytes(row["image_path"]), read_bytes(row["png_path"])
        segments = parse_segments(json.loads(row["segments"]), str(row["png_path"]))
    except (OSError, ValueError) as err:
        return Check(image_id, str(err))
    problem, n = check_example(
        image,
        png,
        segments,
        (int(row["height"]), int(row["width"])),
        cmap,
        crowd,
        (str(row["image_path"]), str(row["png_path"])),
    )
    return Check(image_id, problem, n)


class RowChecker:
    """map_batches function: record rows -> {'image_id', 'problem', 'segments'} per row."""

    def __init__(self, cmap: CategoryMap, crowd: str):
        self.cmap, self.crowd = cmap, crowd

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys = list(batch)
        checks = [
            check_row({k: batch[k][i] for k in keys}, self.cmap, self.crowd)
            for i in range(len(batch[keys[0]]))
        ]
        return {
            "image_id": np.array([c.image_id for c in checks], dtype=object),
            "problem": np.array([c.problem for c in checks], dtype=object),
            "segments": np.array([c.segments for c in checks], dtype=np.int64),
        }


@dataclass(frozen=True)
class ValidationReport:
    """What validation found in one split; `bad` lists (image id, problem); the voided
    counts are for K = `max_instances` (segments beyond K-1 per image)."""

    split: str
    n_records: int
    bad: tuple[tuple[str, str], ...]
    max_instances: int
    voided_segments: int
    images_with_voided: int

    def to_json(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "n_records": self.n_records,
            "n_bad": len(self.bad),
            "bad": [{"image_id": i, "problem": p} for i, p in self.bad],
            "max_instances": self.max_instances,
            "voided_segments": self.voided_segments,
            "images_with_voided": self.images_with_voided,
        }

    def metrics(self, prefix: str = "data/", unit: str = "records") -> dict[str, float]:
        """Counts for MLflow (`data/bad_records`, `data/voided_segments`, ...); `unit`: what
        a record is, in the name of the bad count (`data/bad_frames` for DAVIS)."""
        return {
            f"{prefix}bad_{unit}": float(len(self.bad)),
            f"{prefix}voided_segments": float(self.voided_segments),
            f"{prefix}images_with_voided": float(self.images_with_voided),
        }

    def error(self, limit: int = 10) -> str:
        return (
            f"{len(self.bad)} of {self.n_records} records of split {self.split!r} are bad "
            f"(rerun with --skip-bad to leave them out):\n  {self.problems(limit)}"
        )

    def problems(self, limit: int = 10) -> str:
        """The first `limit` problems, one a line, and how many more there are."""
        head = "\n  ".join(p for _, p in self.bad[:limit])
        more = f"\n  ... and {len(self.bad) - limit} more" if len(self.bad) > limit else ""
        return head + more


def summarise(split: str, checks: Sequence[Check], max_instances: int) -> ValidationReport:
    bad = tuple((c.image_id, c.problem) for c in checks if c.problem)
    extra = [max(0, c.segments - (max_instances - 1)) for c in checks if not c.problem]
    return ValidationReport(
        split, len(checks), bad, max_instances, sum(extra), sum(1 for e in extra if e)
    )


def validate_records(
    records: Sequence[PanopticRecord],
    cmap: CategoryMap,
    crowd: str,
    max_instances: int,
    split: str,
    skip_bad: bool = False,
) -> tuple[list[PanopticRecord], ValidationReport]:
    """Check every record with Ray Data tasks; returns (usable records, report).

    Raises ValueError listing the bad records unless `skip_bad`, so a run stops before its
    first step instead of failing (or mislabelling) hours later.
    """
    # lazy: Ray Data loads in seconds; the rest of this module is used without Ray (unit tests)
    import ray.data

    rows = [record_item(r) for r in records]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(64, len(rows) // 64)))
    out = ds.map_batches(
        RowChecker(cmap, crowd), batch_size=64, batch_format="numpy", num_cpus=0.5
    ).take_all()
    by_id = {
        str(r["image_id"]): Check(str(r["image_id"]), str(r["problem"]), int(r["segments"]))
        for r in out
    }
    checks = [by_id[str(rec.image_id)] for rec in records]
    report = summarise(split, checks, max_instances)
    if report.bad and not skip_bad:
        raise ValueError(report.error())
    good = [rec for rec, c in zip(records, checks) if not c.problem]
    return good, report
