"""Checks of DAVIS videos before training (raw layout) and in prepare_data, one rule for both.

Per frame (`check_frame`): the JPEG decodes completely (a truncated file fails only when its
pixels are read), the annotation is a palette or greyscale PNG that decodes completely (the
values `davis.read_davis_mask` reads as object ids), and both have one size. Per video
(`review`): every frame has the size of the video's first frame (a clip stacks the masks of
consecutive frames). A bad frame makes its whole video unusable, since training clips are
consecutive frames: the report names each bad frame's file and its video, and `skip_bad`
leaves those videos out.

Each frame's pixels per object id feed `davis.kept_objects`: a video with ids beyond K-1
keeps its K-1 largest objects and the rest are void, counted as COCO counts them
(`voided_segments`: object-frame pairs made void, `images_with_voided`: frames with one).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pix2seqd.platform.data.davis import VOID, VideoRecord, kept_objects
from pix2seqd.platform.data.validate import ValidationReport, decoded_size, read_bytes


@dataclass(frozen=True)
class FrameCheck:
    """Outcome of one frame: `problem` is '' when it is usable; path: its JPEG (for
    messages); hw: (height, width); areas: (object id, pixels) of the ids it holds,
    background and void left out."""

    video: str
    path: str
    problem: str = ""
    hw: tuple[int, int] = (0, 0)
    areas: tuple[tuple[int, int], ...] = ()

    @property
    def image_id(self) -> str:
        """`<video>/<frame file>`, the id of the frame in reports."""
        return f"{self.video}/{Path(self.path).name}"

    def row(self) -> dict[str, Any]:
        """The check as a Ray Data row (areas as JSON)."""
        return {
            "video": self.video,
            "path": self.path,
            "problem": self.problem,
            "height": self.hw[0],
            "width": self.hw[1],
            "areas": json.dumps(self.areas),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> FrameCheck:
        areas = tuple((int(i), int(n)) for i, n in json.loads(str(row["areas"])))
        hw = (int(row["height"]), int(row["width"]))
        return cls(str(row["video"]), str(row["path"]), str(row["problem"]), hw, areas)


def check_frame(
    image: bytes, mask: bytes, names: tuple[str, str]
) -> tuple[str, tuple[int, int], tuple[tuple[int, int], ...]]:
    """(problem or '', (height, width), object areas) of one frame given its encoded bytes;
    names: (frame file, annotation file) for messages."""
    try:
        hw = decoded_size(image, names[0])
    except ValueError as err:
        return str(err), (0, 0), ()
    try:
        with Image.open(io.BytesIO(mask)) as m:
            if m.mode not in ("P", "L"):
                return (
                    f"{names[1]}: DAVIS annotation must be a palette PNG, got mode {m.mode}",
                    hw,
                    (),
                )
            ids = np.asarray(m, dtype=np.uint8)
    except (OSError, SyntaxError) as err:  # PIL raises SyntaxError for some broken headers
        return f"{names[1]}: cannot read annotation PNG ({err})", hw, ()
    if ids.shape != hw:
        return (
            f"{names[1]}: annotation size {ids.shape} differs from frame {names[0]} size {hw}",
            hw,
            (),
        )
    counts = np.bincount(ids.ravel(), minlength=256)
    counts[[0, VOID]] = 0
    return "", hw, tuple((int(i), int(counts[i])) for i in np.flatnonzero(counts))


def check_frame_files(video: str, image_path: str, mask_path: str) -> FrameCheck:
    """Check one frame on disk; a missing file is a problem naming it."""
    try:
        image, mask = read_bytes(image_path), read_bytes(mask_path)
    except OSError as err:
        return FrameCheck(video, image_path, str(err))
    problem, hw, areas = check_frame(image, mask, (image_path, mask_path))
    return FrameCheck(video, image_path, problem, hw, areas)


def frame_check_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """map_batches function: rows {'video', 'image_path', 'mask_path'} -> `FrameCheck.row`s."""
    rows = [
        check_frame_files(str(v), str(i), str(m)).row()
        for v, i, m in zip(batch["video"], batch["image_path"], batch["mask_path"])
    ]
    return {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]} if rows else {}


@dataclass(frozen=True)
class DavisReport:
    """What the checks found in one split: `frames` counts its frames as records (`bad`:
    (frame id, problem) of every bad frame; the voided counts for K = `max_instances`, over
    the usable videos), `bad_videos` names the videos bad frames make unusable."""

    frames: ValidationReport
    n_videos: int
    bad_videos: tuple[str, ...]

    @property
    def split(self) -> str:
        return self.frames.split

    @property
    def n_frames(self) -> int:
        return self.frames.n_records

    @property
    def bad(self) -> tuple[tuple[str, str], ...]:
        return self.frames.bad

    @property
    def voided_segments(self) -> int:
        return self.frames.voided_segments

    @property
    def images_with_voided(self) -> int:
        return self.frames.images_with_voided

    def to_json(self) -> dict[str, Any]:
        """The frames' report (`n_records` counts frames) with `n_videos` and `bad_videos`."""
        return {
            **self.frames.to_json(),
            "n_videos": self.n_videos,
            "bad_videos": list(self.bad_videos),
        }

    def metrics(self, prefix: str = "data/") -> dict[str, float]:
        """Counts for MLflow (`data/bad_videos`, `data/bad_frames`, `data/voided_segments`,
        ...)."""
        return {
            f"{prefix}bad_videos": float(len(self.bad_videos)),
            **self.frames.metrics(prefix, unit="frames"),
        }

    def error(self, limit: int = 10) -> str:
        return (
            f"{len(self.bad)} of {self.n_frames} frames of DAVIS split {self.split!r} are bad, "
            f"in videos {list(self.bad_videos)} (rerun with --skip-bad to leave these videos "
            f"out):\n  {self.frames.problems(limit)}"
        )


def review(
    split: str, videos: Sequence[VideoRecord], checks: Sequence[FrameCheck], max_instances: int
) -> tuple[list[VideoRecord], DavisReport]:
    """The usable videos (with their `kept_ids` for K = max_instances) and the report, from
    the checks of every frame of `videos` (in any order)."""
    by_video: dict[str, list[FrameCheck]] = {v.name: [] for v in videos}
    for c in checks:
        by_video[c.video].append(c)
    good, bad, bad_videos, voided, frames_voided = [], [], [], 0, 0
    for video in videos:
        frames = sorted(by_video[video.name], key=lambda c: c.path)
        problems = [(c.image_id, c.problem) for c in _with_size_problems(frames) if c.problem]
        if problems:
            bad += problems
            bad_videos.append(video.name)
            continue
        kept = kept_objects(_total_areas(frames), max_instances)
        good.append(replace(video, kept_ids=kept))
        if kept:
            lost = [sum(1 for i, _ in c.areas if i not in kept) for c in frames]
            voided += sum(lost)
            frames_voided += sum(1 for n in lost if n)
    frame_report = ValidationReport(
        split, len(checks), tuple(bad), max_instances, voided, frames_voided
    )
    return good, DavisReport(frame_report, len(videos), tuple(bad_videos))


def _with_size_problems(frames: Sequence[FrameCheck]) -> list[FrameCheck]:
    """`frames` (of one video, in order) with a problem added to each usable frame whose size
    differs from the video's first usable frame."""
    first = next((c for c in frames if not c.problem), None)
    return [
        replace(
            c,
            problem=f"{c.path}: size {c.hw} differs from {first.path} size {first.hw} "
            "(the frames of a video must have one size)",
        )
        if first is not None and not c.problem and c.hw != first.hw
        else c
        for c in frames
    ]


def _total_areas(frames: Sequence[FrameCheck]) -> dict[int, int]:
    total: dict[int, int] = {}
    for c in frames:
        for i, n in c.areas:
            total[i] = total.get(i, 0) + n
    return total


def validate_videos(
    videos: Sequence[VideoRecord], split: str, max_instances: int, skip_bad: bool = False
) -> tuple[list[VideoRecord], DavisReport]:
    """Check every frame of `videos` (files on disk) with Ray Data tasks; returns (usable
    videos with their `kept_ids`, report).

    Raises ValueError naming the bad frames and their videos unless `skip_bad`, so a run
    stops before its first step instead of failing at the same frame after every restart.
    """
    # lazy: Ray Data loads in seconds; the rest of this module is used without Ray (unit tests)
    import ray.data

    items = [
        {"video": v.name, "image_path": str(f), "mask_path": str(m)}
        for v in videos
        for f, m in zip(v.frames, v.masks)
    ]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(64, len(items) // 64)))
    rows = ds.map_batches(
        frame_check_batch, batch_size=64, batch_format="numpy", num_cpus=0.5
    ).take_all()
    good, report = review(split, videos, [FrameCheck.from_row(r) for r in rows], max_instances)
    if report.bad and not skip_bad:
        raise ValueError(report.error())
    return good, report
