"""DAVIS 2017 as Parquet shards: one row per frame (JPEG and palette PNG bytes), validated.

Layout (same conventions as prepared.py)::

    <out>/<split>/shard-00000.parquet ...   rows: video, frame, file_name, mask_name,
                                            height, width, image, mask (bytes)
    <out>/<split>/_index.json               {"dataset": "davis", "videos": [{"name",
                                            "frames": [{"shard", "row", "file_name"}]}]}

Frames are written in video order, each row its own row group (random access for clips).
Frames are checked as training checks raw DAVIS (`validate_davis`): a bad frame makes its
whole video unusable (training clips are consecutive frames), so `--skip-bad` leaves such
videos out and the report names the frame and the video. The index keeps each frame's
pixels per object id, from which training chooses the objects a video keeps for its
`model.max_instances` (`davis.kept_objects`), as the report's voided counts do for the
`--max-instances` of prepare_data.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pix2seqd.platform.data import prepared
from pix2seqd.platform.data.davis import VideoRecord, load_davis
from pix2seqd.platform.data.validate import read_bytes
from pix2seqd.platform.data.validate_davis import DavisReport, FrameCheck, check_frame, review

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        ("video", pa.string()),
        ("frame", pa.int32()),
        ("file_name", pa.string()),
        ("mask_name", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("image", pa.binary()),
        ("mask", pa.binary()),
    ]
)


def frame_items(videos: Sequence[VideoRecord], rows_per_shard: int) -> list[dict[str, Any]]:
    """Work items of `rows_per_shard` consecutive frames (videos in split order)."""
    frames = [
        {"video": v.name, "frame": i, "image_path": str(f), "mask_path": str(m)}
        for v in videos
        for i, (f, m) in enumerate(zip(v.frames, v.masks))
    ]
    return [
        {"shard": k, "records": json.dumps(frames[s : s + rows_per_shard])}
        for k, s in enumerate(range(0, len(frames), rows_per_shard))
    ]


class FrameShardWriter:
    """map_batches function (batch_size=1): a shard item -> validated frames written to
    `<split_uri>/shard-NNNNN.parquet`; one outcome row per frame."""

    def __init__(self, split_uri: str):
        self.split_uri = split_uri

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return prepared.write_items(batch, self.write_shard)

    def write_shard(self, shard: int, frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows, outcomes, name = [], [], f"shard-{shard:05d}.parquet"
        for fr in frames:
            row, check = self.read_and_check(fr)
            if row is not None:
                rows.append(row)
            outcomes.append(
                {
                    **check.row(),
                    "frame": fr["frame"],
                    "shard": name if row is not None else "",
                    "row": len(rows) - 1 if row is not None else -1,
                    "file_name": fr["image_path"].rsplit("/", 1)[-1],
                    "mask_name": fr["mask_path"].rsplit("/", 1)[-1],
                }
            )
        if rows:
            fs, path = prepared.filesystem(prepared.join(self.split_uri, name))
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            pq.write_table(
                pa.Table.from_pylist(rows, schema=SCHEMA), path, filesystem=fs, row_group_size=1
            )
        return outcomes

    @staticmethod
    def read_and_check(fr: dict[str, Any]) -> tuple[dict[str, Any] | None, FrameCheck]:
        try:
            image, mask = read_bytes(fr["image_path"]), read_bytes(fr["mask_path"])
        except OSError as err:
            return None, FrameCheck(fr["video"], fr["image_path"], str(err))
        names = (fr["image_path"], fr["mask_path"])
        problem, hw, areas = check_frame(image, mask, names)
        check = FrameCheck(fr["video"], fr["image_path"], problem, hw, areas)
        if problem:
            return None, check
        row = {
            "video": fr["video"],
            "frame": fr["frame"],
            "file_name": fr["image_path"].rsplit("/", 1)[-1],
            "mask_name": fr["mask_path"].rsplit("/", 1)[-1],
            "height": hw[0],
            "width": hw[1],
            "image": image,
            "mask": mask,
        }
        return row, check


def prepare_davis_split(
    root,
    split: str,
    out: str,
    max_instances: int,
    rows_per_shard: int,
    skip_bad: bool,
    resolution: str = "480p",
) -> DavisReport:
    """Write one DAVIS split's frame shards and, if usable, its index (videos with a bad
    frame are left out when `skip_bad`)."""
    # lazy: Ray Data loads in seconds; the rest of this module is used without Ray (unit tests)
    import ray.data

    videos = load_davis(root, split, resolution)
    split_uri = prepared.join(out, split)
    items = frame_items(videos, rows_per_shard)
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    outcomes = ds.map_batches(
        FrameShardWriter(split_uri), batch_size=1, batch_format="numpy"
    ).take_all()
    order = {v.name: k for k, v in enumerate(videos)}
    outcomes.sort(key=lambda o: (order[str(o["video"])], int(o["frame"])))
    good, report = review(split, videos, [FrameCheck.from_row(o) for o in outcomes], max_instances)
    if not report.bad or skip_bad:
        prepared.write_text(
            prepared.join(split_uri, prepared.INDEX),
            json.dumps(_index(split, resolution, good, report, outcomes)),
        )
    log.info(
        "%s: %d videos, %d frames, %d bad, %d shards -> %s",
        split,
        len(videos),
        report.n_frames,
        len(report.bad),
        len(items),
        split_uri,
    )
    return report


def _index(
    split: str,
    resolution: str,
    good: Sequence[VideoRecord],
    report: DavisReport,
    outcomes: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    by_video: dict[str, list[dict[str, Any]]] = {}
    for o in outcomes:
        areas = json.loads(str(o["areas"]))
        by_video.setdefault(str(o["video"]), []).append(
            {
                "shard": o["shard"],
                "row": int(o["row"]),
                "file_name": str(o["file_name"]),
                "mask_name": str(o["mask_name"]),
                "height": int(o["height"]),
                "width": int(o["width"]),
                "objects": len(areas),
                "areas": areas,
            }
        )
    return {
        "format": prepared.FORMAT,
        "dataset": "davis",
        "split": split,
        "resolution": resolution,
        "videos": [{"name": v.name, "frames": by_video[v.name]} for v in good],
        "skipped_videos": sorted(report.bad_videos),
    }


def load_prepared_davis(uri: str, split: str) -> list[VideoRecord]:
    """The videos of a prepared DAVIS split, their frames and masks as shard references
    (prepared.RowRef), in split order: what video_pipeline.ClipDecoder reads. Their ids are
    as the annotations have them (see `load_prepared_davis_train`)."""
    split_uri, index = _read_index(uri, split)
    return [_video(split_uri, v) for v in index["videos"]]


def load_prepared_davis_train(
    uri: str, split: str, max_instances: int
) -> tuple[list[VideoRecord], DavisReport]:
    """The videos of a prepared split as training reads them, each with the objects it keeps
    for K = max_instances (`davis.kept_objects`, from the pixels per object id the index
    holds), and their report: the voided counts for this K and the videos prepare_data left
    out. An index without pixel counts keeps the ids as they are."""
    split_uri, index = _read_index(uri, split)
    videos = [_video(split_uri, v) for v in index["videos"]]
    checks = [
        FrameCheck(
            v["name"],
            f["file_name"],
            hw=(int(f.get("height", 0)), int(f.get("width", 0))),
            areas=tuple((int(i), int(n)) for i, n in f.get("areas", ())),
        )
        for v in index["videos"]
        for f in v["frames"]
    ]
    good, report = review(split, videos, checks, max_instances)
    return good, replace(report, bad_videos=tuple(index.get("skipped_videos", ())))


def _read_index(uri: str, split: str) -> tuple[str, dict[str, Any]]:
    split_uri = prepared.join(uri, split)
    try:
        index = json.loads(prepared.read_text(prepared.join(split_uri, prepared.INDEX)))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{split_uri}: no {prepared.INDEX}; not a prepared split, or "
            "jobs/prepare_data.py did not finish"
        ) from None
    if index.get("dataset") != "davis":
        raise ValueError(f"{split_uri}: prepared from {index.get('dataset')!r}, not DAVIS")
    return split_uri, index


def _video(split_uri: str, v: dict[str, Any]) -> VideoRecord:
    refs = [(prepared.join(split_uri, f["shard"]), f["row"], f) for f in v["frames"]]
    return VideoRecord(
        v["name"],
        tuple(prepared.RowRef(s, r, "image", f"{v['name']}/{f['file_name']}") for s, r, f in refs),
        tuple(prepared.RowRef(s, r, "mask", f"{v['name']}/{f['mask_name']}") for s, r, f in refs),
    )
