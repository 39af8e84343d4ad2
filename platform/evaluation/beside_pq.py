"""The metrics COCO panoptic papers report beside PQ, from the same result files:
mIoU over the categories (`semantic`) and AP^Th_pan of the thing segments (`instance_ap`);
docs/pq.md, "Beside PQ: mIoU and AP^Th_pan".

One pass reads each image's GT and prediction PNG once (in threads) for both. AP^Th_pan
needs a confidence per detection: it is computed when every thing segment of the
prediction JSON carries a `score` (eval_coco's checkpoint mode writes them,
`segment_scores`), and is None otherwise, with a log line saying why.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pix2seqd.platform.data.coco_panoptic import read_id_png
from pix2seqd.platform.evaluation import instance_ap, semantic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Categories:
    """The GT JSON's categories: ids in file order, id -> index, thing ids."""

    ids: tuple[int, ...]
    index: Mapping[int, int]
    things: frozenset[int]

    @classmethod
    def from_coco(cls, categories: list[Mapping[str, Any]]) -> Categories:
        ids = tuple(int(c["id"]) for c in categories)
        things = frozenset(int(c["id"]) for c in categories if c.get("isthing"))
        return cls(ids, {c: k for k, c in enumerate(ids)}, things)


@dataclass(frozen=True)
class ImageResult:
    """One image's share: semantic counts (3, n), GT instances, detections (None: some thing
    segment has no score), and its COCO image entry."""

    counts: np.ndarray
    gts: list[dict[str, Any]]
    dets: list[dict[str, Any]] | None
    image: dict[str, Any]


def beside_pq(
    gt_json: str | Path, pred_json: str | Path, gt_dir: str | Path, pred_dir: str | Path
) -> dict[str, Any]:
    """{"miou", "iou_per_class", "ap_th_pan"} of a COCO-panoptic prediction set (fractions;
    None where undefined). Meant after `pq.pq_compute`, which validates the prediction files."""
    gt = json.loads(Path(gt_json).read_text())
    pred = json.loads(Path(pred_json).read_text())
    cats = Categories.from_coco(gt["categories"])
    by_image = {a.get("image_id"): a for a in pred["annotations"]}
    pairs = []
    for g in gt["annotations"]:
        if g["image_id"] not in by_image:
            raise ValueError(f"image {g['image_id']}: no prediction in {pred_json}")
        pairs.append((g, by_image[g["image_id"]]))
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        per_image = list(pool.map(lambda gp: score_image(*gp, gt_dir, pred_dir, cats), pairs))
    counts = sum((r.counts for r in per_image), np.zeros((3, len(cats.ids)), dtype=np.int64))
    miou, per_class = semantic.miou(counts, cats.ids)
    return {"miou": miou, "iou_per_class": per_class, "ap_th_pan": _ap(per_image, cats, pred_json)}


def score_image(
    gt_ann: Mapping[str, Any],
    pred_ann: Mapping[str, Any],
    gt_dir: Path,
    pred_dir: Path,
    cats: Categories,
) -> ImageResult:
    """Read one image's two PNGs; its semantic counts, GT instances and detections."""
    image_id = gt_ann["image_id"]
    where = f"image {image_id}"
    gt_png, pred_png = gt_dir / gt_ann["file_name"], pred_dir / pred_ann["file_name"]
    gt_ids = read_id_png(gt_png, f"{where} ({gt_png})")
    pred_ids = read_id_png(pred_png, f"{where} ({pred_png})")
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(
            f"{where}: prediction is {pred_ids.shape} (HxW), ground truth {gt_ids.shape}"
        )
    counts = semantic.semantic_counts(
        semantic.semantic_map(
            gt_ids, gt_ann["segments_info"], cats.index, f"{where} (GT)", ground_truth=True
        ),
        semantic.semantic_map(pred_ids, pred_ann["segments_info"], cats.index, where),
        len(cats.ids),
    )
    gts = instance_ap.gt_objects(
        image_id, instance_ap.thing_rles(gt_ids, gt_ann["segments_info"], cats.things)
    )
    things = instance_ap.thing_rles(pred_ids, pred_ann["segments_info"], cats.things)
    scored = all("score" in seg for seg, _ in things)
    dets = instance_ap.detections(image_id, things, where) if scored else None
    h, w = gt_ids.shape
    return ImageResult(counts, gts, dets, {"id": image_id, "height": h, "width": w})


def _ap(per_image: list[ImageResult], cats: Categories, pred_json: str | Path) -> float | None:
    unscored = [r.image["id"] for r in per_image if r.dets is None]
    if unscored:
        log.info(
            "AP^Th_pan skipped (ap_th_pan: null): thing segments of %d image(s) of %s have "
            "no 'score' in segments_info (first: image %s); checkpoint evaluations write them",
            len(unscored),
            pred_json,
            unscored[0],
        )
        return None
    return instance_ap.ap_th_pan(
        [r.image for r in per_image],
        cats.things,
        [g for r in per_image for g in r.gts],
        [d for r in per_image for d in r.dets or ()],
    )
