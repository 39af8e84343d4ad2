"""AP^Th_pan: mask AP of the thing segments of panoptic results, scored by pycocotools'
COCOeval (docs/pq.md, "Beside PQ: mIoU and AP^Th_pan").

Both sides come from panoptic files. Ground truth: every thing segment with pixels of the
GT PNGs, as a COCO instances structure built in memory (mask as RLE, `area` its pixel
count, `iscrowd` from segments_info: crowd regions are ignored by COCOeval, and a detection
mostly inside one is neither a true nor a false positive). Detections: every thing segment
of the prediction as a COCO result {image_id, category_id, segmentation (RLE), score}.
COCOeval(iouType='segm') with its defaults (IoU 0.50:0.05:0.95, 101 recall points, at most
100 detections per image, the highest scores first); AP^Th_pan is `stats[0]`, the mean over
the thing categories with non-crowd GT.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

log = logging.getLogger(__name__)


def thing_rles(
    ids: np.ndarray, segments_info: Sequence[Mapping[str, Any]], thing_ids: Collection[int]
) -> list[tuple[Mapping[str, Any], dict[str, Any]]]:
    """(segment, RLE) of every thing segment of `segments_info` with pixels in `ids` (H, W);
    of a duplicate id the last entry counts, as in panopticapi."""
    # pycocotools encodes column-major masks: compare on the transposed ids once, so each
    # mask comes out column-major without a copy
    ids_t = np.ascontiguousarray(ids.T)
    out = []
    for seg in {int(s["id"]): s for s in segments_info}.values():
        if seg["category_id"] not in thing_ids or int(seg["id"]) == 0:
            continue
        mask_t = ids_t == int(seg["id"])
        if mask_t.any():
            out.append((seg, mask_utils.encode(mask_t.view(np.uint8).T[:, :, None])[0]))
    return out


def gt_objects(
    image_id: Any, rles: Sequence[tuple[Mapping[str, Any], dict[str, Any]]]
) -> list[dict[str, Any]]:
    """GT thing segments -> COCO instance annotations (without `id`, given when pooled)."""
    return [
        {
            "image_id": image_id,
            "category_id": seg["category_id"],
            "segmentation": rle,
            "area": float(mask_utils.area(rle)),
            "iscrowd": int(bool(seg.get("iscrowd", 0))),
        }
        for seg, rle in rles
    ]


def detections(
    image_id: Any, rles: Sequence[tuple[Mapping[str, Any], dict[str, Any]]], where: str
) -> list[dict[str, Any]]:
    """Predicted thing segments -> COCO results; each segment needs a finite `score`
    (ValueError naming `where` and the segment otherwise)."""
    out = []
    for seg, rle in rles:
        score = seg.get("score")
        if (
            isinstance(score, bool)
            or not isinstance(score, (int, float))
            or not math.isfinite(score)
        ):
            raise ValueError(
                f"{where}: segment {seg['id']} has score {score!r}; a finite number is needed"
            )
        out.append(
            {
                "image_id": image_id,
                "category_id": seg["category_id"],
                "segmentation": rle,
                "score": float(score),
            }
        )
    return out


def ap_th_pan(
    images: Sequence[Mapping[str, Any]],
    thing_ids: Collection[int],
    gts: Sequence[Mapping[str, Any]],
    dets: Sequence[Mapping[str, Any]],
) -> float | None:
    """COCOeval segm AP (`stats[0]`) of `dets` against `gts` on `images` ({id, height,
    width}) over the categories `thing_ids`; None when no category has non-crowd GT."""
    gt = COCO()
    gt.dataset = {
        "images": [dict(im) for im in images],
        "categories": [{"id": c} for c in sorted(thing_ids)],
        "annotations": [{**g, "id": k + 1} for k, g in enumerate(gts)],
    }
    if not any(not g["iscrowd"] for g in gts):
        return None
    printed = io.StringIO()
    # pycocotools prints its progress and table; stdout is for the job's results
    with contextlib.redirect_stdout(printed):
        gt.createIndex()
        if not dets:  # loadRes cannot take an empty list; no detection finds nothing
            return 0.0
        ev = COCOeval(gt, gt.loadRes([dict(d) for d in dets]), iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    log.debug("COCOeval (segm) of the thing segments:\n%s", printed.getvalue())
    ap = float(ev.stats[0])
    return ap if ap >= 0 else None
