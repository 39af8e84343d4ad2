"""Prepared data: a panoptic split as Parquet shards (local folder or s3://).

Layout written by `prepare_split` (jobs/prepare_data.py)::

    <out>/validation_report.json              every split's report (written even on failure)
    <out>/<split>/shard-00000.parquet ...     rows: index, image_id, file_name, png_name,
                                              height, width, segments (JSON), image, png (bytes)
    <out>/<split>/_index.json                 categories + one entry per record (written last:
                                              a split without it is incomplete)

Shards hold `rows_per_shard` consecutive records (500 COCO images = about 90 MB, a size
object stores and Ray tasks handle well). Each row is its own Parquet row group, so training
reads exactly one example per request and keeps the seeded, index-based order of the raw
layout: `index` is the record's position in the annotation file, so a prepared split and
its raw layout give the same training stream.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pix2seqd.platform.data.coco_panoptic import CategoryMap, PanopticRecord, parse_segments
from pix2seqd.platform.data.validate import Check, check_example, read_bytes

INDEX = "_index.json"
REPORT = "validation_report.json"
FORMAT = 1
SCHEMA = pa.schema(
    [
        ("index", pa.int64()),
        ("image_id", pa.string()),
        ("file_name", pa.string()),
        ("png_name", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("segments", pa.string()),
        ("image", pa.binary()),
        ("png", pa.binary()),
    ]
)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path) for a local path or a URI such as s3://bucket/key.

    S3 settings come from the usual AWS variables (AWS_ENDPOINT_URL for S3-compatible
    servers, AWS_ACCESS_KEY_ID, AWS_DEFAULT_REGION, ...)."""
    if "://" not in uri:
        uri = str(Path(uri).expanduser().resolve())
    return pafs.FileSystem.from_uri(uri)


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts])


def write_text(uri: str, text: str) -> None:
    fs, path = filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def read_text(uri: str) -> str:
    fs, path = filesystem(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read().decode()
    except FileNotFoundError:
        raise FileNotFoundError(f"{uri}: not found") from None


# ---------------------------------------------------------------- writing


def shard_items(records: Sequence[PanopticRecord], rows_per_shard: int) -> list[dict[str, Any]]:
    """One work item per shard: its number and its records (as JSON text, with `index`)."""
    items = []
    for k, start in enumerate(range(0, len(records), rows_per_shard)):
        chunk = [
            _record_json(i, records[i])
            for i in range(start, min(start + rows_per_shard, len(records)))
        ]
        items.append({"shard": k, "records": json.dumps(chunk)})
    return items


def _record_json(index: int, rec: PanopticRecord) -> dict[str, Any]:
    return {
        "index": index,
        "image_id": rec.image_id,
        "image_path": str(rec.image_path),
        "png_path": str(rec.png_path),
        "height": rec.height,
        "width": rec.width,
        "segments": [
            {
                "id": s.id,
                "category_id": s.category_id,
                "iscrowd": int(s.iscrowd),
                "area": s.area,
                "bbox": list(s.bbox),
            }
            for s in rec.segments
        ],
    }


def write_items(batch: dict[str, np.ndarray], write_shard) -> dict[str, np.ndarray]:
    """Run `write_shard(shard, records)` for each shard item of a batch; the outcome rows
    of all its records as one column batch."""
    outcomes: list[dict[str, Any]] = []
    for shard, text in zip(batch["shard"], batch["records"]):
        outcomes += write_shard(int(shard), json.loads(text))
    return {k: np.array([o[k] for o in outcomes], dtype=object) for k in outcomes[0]}


class ShardWriter:
    """map_batches function (batch_size=1): a shard item -> validated rows written to
    `<split_uri>/shard-NNNNN.parquet`; returns one outcome row per record."""

    def __init__(self, split_uri: str, cmap: CategoryMap, crowd: str):
        self.split_uri, self.cmap, self.crowd = split_uri, cmap, crowd

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return write_items(batch, self.write_shard)

    def write_shard(self, shard: int, recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows, outcomes = [], []
        name = f"shard-{shard:05d}.parquet"
        for rec in recs:
            row, check = self.read_and_check(rec)
            if row is not None:
                rows.append(row)
            outcomes.append(
                {
                    "index": rec["index"],
                    "image_id": json.dumps(rec["image_id"]),
                    "problem": check.problem,
                    "segments": check.segments,
                    "shard": name if row is not None else "",
                    "row": len(rows) - 1 if row is not None else -1,
                }
            )
        if rows:
            fs, path = filesystem(join(self.split_uri, name))
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            table = pa.Table.from_pylist(rows, schema=SCHEMA)
            pq.write_table(table, path, filesystem=fs, row_group_size=1)
        return outcomes

    def read_and_check(self, rec: dict[str, Any]) -> tuple[dict[str, Any] | None, Check]:
        image_id = str(rec["image_id"])
        try:
            image, png = read_bytes(rec["image_path"]), read_bytes(rec["png_path"])
            segments = parse_segments(rec["segments"], rec["png_path"])
        except (OSError, ValueError) as err:
            return None, Check(image_id, str(err))
        problem, n = check_example(
            image,
            png,
            segments,
            (rec["height"], rec["width"]),
            self.cmap,
            self.crowd,
            (rec["image_path"], rec["png_path"]),
        )
        if problem:
            return None, Check(image_id, problem)
        row = {
            "index": rec["index"],
            "image_id": image_id,
            "file_name": Path(rec["image_path"]).name,
            "png_name": Path(rec["png_path"]).name,
            "height": rec["height"],
            "width": rec["width"],
            "segments": json.dumps(rec["segments"]),
            "image": image,
            "png": png,
        }
        return row, Check(image_id, "", n)


# ---------------------------------------------------------------- reading


def load_prepared(uri: str, split: str) -> tuple[list[dict[str, Any]], CategoryMap, dict[str, Any]]:
    """(record rows for the training pipeline, categories, index) of a prepared split.

    Rows: {'image_id', 'shard' (URI), 'row', 'height', 'width'}, in annotation order.
    """
    split_uri = join(uri, split)
    try:
        index = json.loads(read_text(join(split_uri, INDEX)))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{split_uri}: no {INDEX}; not a prepared split, or jobs/prepare_data.py did not finish"
        ) from None
    if index.get("format") != FORMAT:
        raise ValueError(
            f"{join(split_uri, INDEX)}: format {index.get('format')}, expected {FORMAT}"
        )
    cmap = CategoryMap.from_coco(index["categories"], join(split_uri, INDEX))
    rows = [
        {
            "image_id": r["image_id"],
            "shard": join(split_uri, r["shard"]),
            "row": r["row"],
            "height": r["height"],
            "width": r["width"],
        }
        for r in index["records"]
    ]
    return rows, cmap, index


@functools.lru_cache(maxsize=8)
def _parquet_file(shard_uri: str) -> pq.ParquetFile:
    """Open shards stay open per process: their footers are read once, not per example."""
    fs, path = filesystem(shard_uri)
    return pq.ParquetFile(fs.open_input_file(path))


def read_row(shard_uri: str, row: int, columns: Sequence[str] | None = None) -> dict[str, Any]:
    """One record of a shard (its own row group), all columns or only `columns`."""
    try:
        table = _parquet_file(shard_uri).read_row_group(int(row), columns=columns)
    except (OSError, IndexError, pa.ArrowException) as err:
        raise ValueError(f"{shard_uri}: cannot read row {row} ({err})") from None
    return table.to_pylist()[0]


@dataclass(frozen=True)
class RowRef:
    """One encoded file inside a shard: usable wherever a file path is opened
    (`open_bytes`), and printed like a path in error messages."""

    shard: str
    row: int
    column: str
    name: str

    def open_bytes(self) -> io.BytesIO:
        return io.BytesIO(read_row(self.shard, self.row, [self.column])[self.column])

    def __str__(self) -> str:
        return f"{self.shard} row {self.row} ({self.name})"


def materialize(uri: str, split: str, out: Path) -> Path:
    """Write a prepared split back as a COCO-panoptic layout under `out` (for PQ scoring
    and the eval pipeline, which read files). Returns `out`."""
    _, cmap, index = load_prepared(uri, split)
    images, anns = [], []
    (out / split).mkdir(parents=True, exist_ok=True)
    png_dir = out / "annotations" / f"panoptic_{split}"
    png_dir.mkdir(parents=True, exist_ok=True)
    for entry in index["records"]:
        row = read_row(join(uri, split, entry["shard"]), entry["row"])
        (out / split / row["file_name"]).write_bytes(row["image"])
        (png_dir / row["png_name"]).write_bytes(row["png"])
        images.append(
            {
                "id": entry["image_id"],
                "file_name": row["file_name"],
                "height": row["height"],
                "width": row["width"],
            }
        )
        anns.append(
            {
                "image_id": entry["image_id"],
                "file_name": row["png_name"],
                "segments_info": json.loads(row["segments"]),
            }
        )
    data = {"images": images, "annotations": anns, "categories": cmap.to_coco()}
    (out / "annotations" / f"panoptic_{split}.json").write_text(json.dumps(data))
    return out
