"""How large a data set's images and segments are at a canvas and mask stride, from its
annotation file alone (image sizes and segment areas; no image is decoded), and the canvas
`data.image_size=auto` chooses from it (docs/data_report.md).

An image is fitted to the canvas (H, W) with its aspect kept (the evaluation transform,
`transforms.eval_transform`): scale r = min(H / h, W / w). A segment of `area` pixels then
covers area · r² / stride² mask pixels (paper §3.1: the mask is the canvas at the mask
stride). Quantiles are numpy's linear interpolation. Crowd segments are left out (PQ ignores
them).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pix2seqd.platform.config import AutoSize, Config, canvas_unit, override
from pix2seqd.platform.data.coco_panoptic import CategoryMap, PanopticRecord
from pix2seqd.platform.data.default_data import resolve_data_root
from pix2seqd.platform.data.sources import load_panoptic_split

log = logging.getLogger(__name__)

QUANTILES = (5, 25, 50, 75, 95)
SMALL_THING_PX = 4  # below this a thing's mask has no shape: under a 2 x 2 block
WARN_SHARE = 0.25  # the report warns when this share of things is under SMALL_THING_PX
# auto: the median thing covers at least this many mask pixels. A square thing of side a
# whose drawn edges are off by half a mask pixel (nearest-neighbour rounding) on every side
# keeps IoU (a - 1)² / a² above PQ's match threshold 0.5 only for a > 3.41, a² > 11.7.
AUTO_THING_PX = 12.0
AUTO_MIN_CANVAS = 64
AUTO_MAX_CANVAS = 256  # the compute bound: 16x the pixels (encoder) and mask (decoder) of 64
AUTO_RULE = (
    f"the smallest square canvas from {AUTO_MIN_CANVAS} to {AUTO_MAX_CANVAS} on which the "
    f"median thing covers >= {AUTO_THING_PX:.0f} mask pixels"
)


@dataclass(frozen=True)
class SegmentSizes:
    """Per image its (height, width); per (non-crowd) segment its area in image pixels,
    whether it is a thing, and the index of its image."""

    heights: np.ndarray
    widths: np.ndarray
    areas: np.ndarray
    isthing: np.ndarray
    image_of: np.ndarray

    @property
    def images(self) -> int:
        return len(self.heights)


@dataclass(frozen=True)
class Geometry:
    """Where a config puts its data: the canvas (H, W), None for data.image_size=auto, the
    mask stride and the canvas unit (`config.canvas_unit`)."""

    canvas: tuple[int, int] | None
    mask_stride: int
    unit: int

    @classmethod
    def of(cls, cfg: Config) -> Geometry:
        auto = isinstance(cfg.data.image_size, AutoSize)
        return cls(None if auto else cfg.data.image_hw, cfg.model.mask_stride, canvas_unit(cfg))

    def canvas_for(self, sizes: SegmentSizes) -> tuple[int, int]:
        """The canvas itself, or auto's choice for `sizes`."""
        if self.canvas is not None:
            return self.canvas
        side = auto_canvas(sizes, self.mask_stride, self.unit)
        return side, side


def split_reports(
    sizes: dict[str, SegmentSizes], geometry: Geometry, auto_from: str
) -> dict[str, Any]:
    """Each split's report (with its warning, '' for none) at the geometry's canvas, an auto
    canvas chosen from split `auto_from` (the training split); logged as `report_lines`."""
    canvas = geometry.canvas_for(sizes[auto_from])
    return {split: checked_report(s, canvas, geometry, split) for split, s in sizes.items()}


def checked_report(
    sizes: SegmentSizes, canvas: tuple[int, int], geometry: Geometry, name: str
) -> dict[str, Any]:
    """`size_report` at `canvas` with its `warning` ('' for none), its lines logged under
    `name` (a split, or the training run's data)."""
    report = size_report(sizes, canvas, geometry.mask_stride)
    log.info("%s: %s", name, "\n".join(report_lines(report)))
    return {**report, "warning": warn_small_things(report, sizes, geometry.unit)}


def segment_sizes(records: Sequence[PanopticRecord], cmap: CategoryMap) -> SegmentSizes:
    """The sizes the annotation records list (segments_info `area`; where a file leaves it
    out, the bbox's w · h)."""
    areas, things, image_of = [], [], []
    for k, rec in enumerate(records):
        for seg in rec.segments:
            if seg.iscrowd:
                continue
            areas.append(seg.area or seg.bbox[2] * seg.bbox[3])
            things.append(bool(cmap.isthing[cmap.class_of(seg.category_id)]))
            image_of.append(k)
    return SegmentSizes(
        np.array([r.height for r in records], np.float64),
        np.array([r.width for r in records], np.float64),
        np.array(areas, np.float64),
        np.array(things, bool),
        np.array(image_of, np.int64),
    )


def mask_px(sizes: SegmentSizes, canvas: tuple[int, int], stride: int) -> np.ndarray:
    """Each segment's mask pixels on `canvas` (H, W) at `stride`."""
    scale = np.minimum(canvas[0] / sizes.heights, canvas[1] / sizes.widths)
    return sizes.areas * scale[sizes.image_of] ** 2 / stride**2


def size_report(sizes: SegmentSizes, canvas: tuple[int, int], stride: int) -> dict[str, Any]:
    """The report (JSON): image heights, widths and aspects (w / h), and thing and stuff
    segment sizes in mask pixels, as quantiles; the share of things under 4 mask pixels."""
    px = mask_px(sizes, canvas, stride)
    things, stuff = px[sizes.isthing], px[~sizes.isthing]
    return {
        "canvas": list(canvas),
        "mask_stride": stride,
        "images": sizes.images,
        "image_height": _quantiles(sizes.heights),
        "image_width": _quantiles(sizes.widths),
        "image_aspect": _quantiles(sizes.widths / np.maximum(sizes.heights, 1)),
        "things": int(things.size),
        "stuff": int(stuff.size),
        "thing_mask_px": _quantiles(things),
        "stuff_mask_px": _quantiles(stuff),
        "things_under_4px": float((things < SMALL_THING_PX).mean()) if things.size else 0.0,
    }


def report_metrics(report: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics of a report: data/thing_mask_px_p25, _p50, data/things_under_4px, the
    median stuff segment and image side."""
    out = {"data/things_under_4px": report["things_under_4px"]}
    for name in ("thing_mask_px", "stuff_mask_px", "image_height", "image_width"):
        for q in ("p25", "p50") if name == "thing_mask_px" else ("p50",):
            value = report[name].get(q)
            if value is not None:
                out[f"data/{name}_{q}"] = value
    return out


def report_lines(report: dict[str, Any]) -> list[str]:
    """The report as lines for the job's log."""
    h, w = report["canvas"]

    def q(name: str) -> str:
        return " / ".join(f"{report[name].get(k, float('nan')):.3g}" for k in ("p5", "p50", "p95"))

    return [
        f"data sizes at canvas {h}x{w}, mask stride {report['mask_stride']} "
        f"({report['images']} images; p5 / p50 / p95):",
        f"  image height {q('image_height')}, width {q('image_width')}, "
        f"aspect w/h {q('image_aspect')}",
        f"  things ({report['things']}): {q('thing_mask_px')} mask px, "
        f"{100 * report['things_under_4px']:.1f} % under {SMALL_THING_PX} px",
        f"  stuff ({report['stuff']}): {q('stuff_mask_px')} mask px",
    ]


def with_canvas(cfg: Config) -> Config:
    """`cfg` with data.image_size=auto decided as a training job on its data would decide it
    (the train split's annotation file of `data.root`, or of the generated set): for tools
    that use a preset without a training job (benchmarks). Other configs are returned as
    they are."""
    if not isinstance(cfg.data.image_size, AutoSize):
        return cfg
    d = cfg.data
    records, cmap = load_panoptic_split(d.dataset, resolve_data_root(d.root), d.train_split)
    side, _ = Geometry.of(cfg).canvas_for(segment_sizes(records, cmap))
    return override(cfg, {"data.image_size": side})


def fitting_canvas(sizes: SegmentSizes, stride: int, unit: int) -> int | None:
    """The smallest square canvas, a multiple of `unit`, on which the median thing covers
    at least AUTO_THING_PX mask pixels (None: the data has no things)."""
    m = _median_thing_at(sizes, 1, 1)
    if m is None:
        return None
    # the median thing grows with the canvas squared: m · c² / stride² >= AUTO_THING_PX
    need = stride * math.sqrt(AUTO_THING_PX / max(m, 1e-12))
    return max(unit, unit * math.ceil(need / unit - 1e-9))


def auto_canvas(sizes: SegmentSizes, stride: int, unit: int) -> int:
    """`data.image_size=auto`: the fitting canvas, within [AUTO_MIN_CANVAS, AUTO_MAX_CANVAS]
    rounded to a multiple of `unit` (the model's size unit)."""
    low = unit * math.ceil(AUTO_MIN_CANVAS / unit)
    high = max(low, unit * (AUTO_MAX_CANVAS // unit))
    fit = fitting_canvas(sizes, stride, unit)
    return low if fit is None else min(max(fit, low), high)


def warn_small_things(report: dict[str, Any], sizes: SegmentSizes, unit: int) -> str:
    """A warning when WARN_SHARE or more of the things cover under 4 mask pixels, naming a
    canvas that would fit; '' otherwise (the warning is also logged)."""
    if report["things_under_4px"] < WARN_SHARE:
        return ""
    h, w = report["canvas"]
    stride = report["mask_stride"]
    fit = fitting_canvas(sizes, stride, unit)
    text = (
        f"{100 * report['things_under_4px']:.0f} % of the things cover fewer than "
        f"{SMALL_THING_PX} mask pixels at canvas {h}x{w} and mask stride {stride} (median "
        f"thing {report['thing_mask_px'].get('p50', 0):.1f} px): the model cannot draw them. "
        f"A canvas of {fit} (data.image_size={fit}) gives the median thing "
        f"{AUTO_THING_PX:.0f} mask pixels or more."
    )
    log.warning(text)
    return text


def _median_thing_at(sizes: SegmentSizes, canvas: int, stride: int) -> float | None:
    px = mask_px(sizes, (canvas, canvas), stride)[sizes.isthing]
    return float(np.median(px)) if px.size else None


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    return {f"p{q}": float(v) for q, v in zip(QUANTILES, np.percentile(values, QUANTILES))}
