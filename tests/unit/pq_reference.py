"""Test oracle: panopticapi's `pq_compute`, re-implemented in plain numpy, quirks kept.

Written from the rules of docs/pq.md, independently of the project code, and used only by
the tests. Sequential (no process pool), so float sums run in image order.
Return shape and errors are panopticapi's: int `per_class` keys, KeyError for broken
predictions, ZeroDivisionError for a split with no evaluable category.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

VOID = 0
OFFSET = 256 * 256 * 256


def _ids(path: Path) -> np.ndarray:
    rgb = np.array(Image.open(path), dtype=np.uint32)[..., :3]
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


class _Stat:
    def __init__(self):
        self.tp, self.fp, self.fn, self.iou = 0, 0, 0, 0.0


def _pred_segments(pred_ann: dict, pred: np.ndarray, categories: dict) -> dict:
    """Prediction segments by id (last duplicate wins), areas recounted from the PNG."""
    segs = {s["id"]: dict(s) for s in pred_ann["segments_info"]}
    labels, counts = np.unique(pred, return_counts=True)
    for label, count in zip(labels.tolist(), counts.tolist()):
        if label == VOID:
            continue
        if label not in segs:
            raise KeyError(
                f"segment with ID {label} is presented in PNG and not presented in JSON."
            )
        segs[label]["area"] = count
        if segs[label]["category_id"] not in categories:
            raise KeyError(
                f"segment with ID {label} has unknown category_id {segs[label]['category_id']}."
            )
    missing = set(segs) - set(labels.tolist())
    if missing:
        raise KeyError(
            f"segment IDs {sorted(missing)} are presented in JSON and not presented in PNG."
        )
    return segs


def _image_stats(gt_ann, pred_ann, gt_dir, pred_dir, categories, stats):
    gt = _ids(Path(gt_dir) / gt_ann["file_name"])
    pred = _ids(Path(pred_dir) / pred_ann["file_name"])
    gt_segs = {s["id"]: s for s in gt_ann["segments_info"]}
    pred_segs = _pred_segments(pred_ann, pred, categories)

    joint = gt.astype(np.uint64) * OFFSET + pred.astype(np.uint64)
    labels, counts = np.unique(joint, return_counts=True)
    inter = {(int(j // OFFSET), int(j % OFFSET)): int(c) for j, c in zip(labels, counts)}

    gt_matched, pred_matched = set(), set()
    for (g, p), n in inter.items():
        if g not in gt_segs or p not in pred_segs:
            continue
        if gt_segs[g]["iscrowd"] == 1 or gt_segs[g]["category_id"] != pred_segs[p]["category_id"]:
            continue
        union = pred_segs[p]["area"] + gt_segs[g]["area"] - n - inter.get((VOID, p), 0)
        iou = n / union
        if iou > 0.5:
            st = stats[gt_segs[g]["category_id"]]
            st.tp += 1
            st.iou += iou
            gt_matched.add(g)
            pred_matched.add(p)

    crowd_by_cat = {}
    for g, s in gt_segs.items():
        if g in gt_matched:
            continue
        if s["iscrowd"] == 1:
            crowd_by_cat[s["category_id"]] = g  # only the last one per category survives
            continue
        stats[s["category_id"]].fn += 1

    for p, s in pred_segs.items():
        if p in pred_matched:
            continue
        ignored = inter.get((VOID, p), 0)
        if s["category_id"] in crowd_by_cat:
            ignored += inter.get((crowd_by_cat[s["category_id"]], p), 0)
        if ignored / s["area"] > 0.5:
            continue
        stats[s["category_id"]].fp += 1


def _average(stats, categories, isthing):
    pq = sq = rq = 0.0
    n = 0
    per_class = {}
    for cat_id, cat in categories.items():
        if isthing is not None and (cat["isthing"] == 1) != isthing:
            continue
        st = stats[cat_id]
        if st.tp + st.fp + st.fn == 0:
            per_class[cat_id] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
            continue
        n += 1
        denom = st.tp + 0.5 * st.fp + 0.5 * st.fn
        c = {"pq": st.iou / denom, "sq": st.iou / st.tp if st.tp else 0.0, "rq": st.tp / denom}
        per_class[cat_id] = c
        pq, sq, rq = pq + c["pq"], sq + c["sq"], rq + c["rq"]
    return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class


def pq_compute_reference(gt_json, pred_json, gt_dir, pred_dir) -> dict:
    """panopticapi.evaluation.pq_compute, numbers and quirks included (see module doc)."""
    gt = json.loads(Path(gt_json).read_text())
    pred = json.loads(Path(pred_json).read_text())
    categories = {c["id"]: c for c in gt["categories"]}
    preds = {a["image_id"]: a for a in pred["annotations"]}
    stats = defaultdict(_Stat)
    for gt_ann in gt["annotations"]:
        if gt_ann["image_id"] not in preds:
            raise Exception(f"no prediction for the image with id: {gt_ann['image_id']}")
        _image_stats(gt_ann, preds[gt_ann["image_id"]], gt_dir, pred_dir, categories, stats)
    out = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        out[name], per_class = _average(stats, categories, isthing)
        if name == "All":
            out["per_class"] = per_class
    return out
