"""Semantic-segmentation mIoU of panoptic results (docs/pq.md, "Beside PQ: mIoU and
AP^Th_pan"): each panoptic PNG becomes a map of category indices (segment -> its category,
every segment of a category merged), then per category c over the whole split

    IoU_c = Σ_images |GT_c ∩ P_c| / Σ_images |GT_c ∪ P_c|,   mIoU = mean of IoU_c

counting only pixels the GT labels: GT void (PNG id 0, an id missing from the GT's
segments_info, or a GT segment of an unknown category) is ignored, crowd regions count as their category, and a pixel the
prediction leaves void counts against the GT's category (in its union, never in an
intersection). A category with an empty union (absent from both GT and prediction on
labelled pixels) is left out of the mean and reports None.

detectron2's SemSegEvaluator differs in one place: it averages only categories with GT
pixels, so a category that is only predicted does not lower its mean (its pixels still
lower the IoU of the GT categories they cover). Over COCO val every category has GT
pixels and both rules give the same number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

VOID = -1  # category index of a pixel no segment covers


def semantic_map(
    ids: np.ndarray,
    segments_info: Sequence[Mapping[str, Any]],
    cat_index: Mapping[int, int],
    where: str,
    *,
    ground_truth: bool = False,
) -> np.ndarray:
    """(H, W) panoptic segment ids -> (H, W) int64 category indices (`cat_index[category
    id]`), VOID where the id is 0 or not in `segments_info`. A duplicate id: the last entry
    wins, as in panopticapi.

    A segment whose category is not in `cat_index` is VOID on the ground-truth side (PQ drops
    such GT segments too) and a ValueError naming `where` and the segment on the prediction
    side."""
    category = {int(s["id"]): s["category_id"] for s in segments_info if int(s["id"]) != 0}
    unknown = [(i, c) for i, c in category.items() if c not in cat_index]
    if unknown and not ground_truth:
        raise ValueError(
            f"{where}: segment {unknown[0][0]} has unknown category_id {unknown[0][1]}"
        )
    known = sorted((i, cat_index[c]) for i, c in category.items() if c in cat_index)
    if not known:
        return np.full(ids.shape, VOID, dtype=np.int64)
    ids = np.asarray(ids)
    # keys in the PNG's own dtype: searchsorted would otherwise convert every pixel
    keys = np.array([i for i, _ in known], dtype=ids.dtype)
    cats = np.array([c for _, c in known], dtype=np.int64)
    pos = np.minimum(np.searchsorted(keys, ids), keys.size - 1)
    return np.where(keys[pos] == ids, cats[pos], VOID)


def semantic_counts(gt_sem: np.ndarray, pred_sem: np.ndarray, n: int) -> np.ndarray:
    """Per category 0..n-1 on the pixels the GT labels: int64 (3, n) rows (|GT ∩ P|, |GT|,
    |P|). gt_sem, pred_sem: (H, W) category indices, VOID = unlabelled."""
    if gt_sem.shape != pred_sem.shape:
        raise ValueError(f"semantic maps differ in shape: GT {gt_sem.shape}, {pred_sem.shape}")
    labelled = gt_sem != VOID
    g, p = gt_sem[labelled], pred_sem[labelled]
    return np.stack(
        [
            np.bincount(g[p == g], minlength=n),
            np.bincount(g, minlength=n),
            np.bincount(p[p != VOID], minlength=n),
        ]
    )


def miou(counts: np.ndarray, category_ids: Sequence[int]) -> tuple[float | None, dict[str, Any]]:
    """(mIoU, {"<category id>": IoU or None}) from summed `semantic_counts` (3, n); mIoU is
    None when no category has a non-empty union."""
    inter, gt, pred = (counts[k].astype(np.float64) for k in range(3))
    union = gt + pred - inter
    valid = union > 0
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=valid)
    per_class = {
        str(cid): (float(iou[k]) if valid[k] else None) for k, cid in enumerate(category_ids)
    }
    return (float(iou[valid].mean()) if valid.any() else None), per_class
