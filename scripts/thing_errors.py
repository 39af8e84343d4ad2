"""What kind of errors an image prediction makes on things: a prediction folder
(`eval_coco.py --pred-dir`, with its predictions.json) against the COCO-panoptic ground
truth, by thing size.

For every non-crowd ground-truth thing: the predicted segment of any category with the
highest plain IoU (void pixels not left out, unlike PQ's matching), whether that IoU is
over 0.5 (found) and whether its category is the thing's. Things are binned by their size in
mask pixels at a canvas and stride (`platform/data/size_report.py`'s rule), so a missed
thing (a size the model does not draw yet) is told apart from a misclassified one.

    python scripts/thing_errors.py --data-root DIR --pred-dir DIR [--split val2017] \
        [--canvas 64] [--stride 4]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from pix2seqd.platform.data.coco_panoptic import rgb_to_id

BINS = (0, 4, 8, 16, 32, 64, np.inf)


def thing_matches(gt_ids, gt_segments, pred_ids, pred_segments, thing_ids):
    """gt_ids, pred_ids (H, W) segment ids; segments: segments_info lists; thing_ids: the
    thing category ids -> per non-crowd ground-truth thing (its segment id, best IoU, whether
    the best predicted segment has its category; False when none overlaps)."""
    rows = []
    for seg in gt_segments:
        if seg["category_id"] not in thing_ids or seg.get("iscrowd", 0):
            continue
        m = gt_ids == seg["id"]
        best, same = 0.0, False
        for pred in pred_segments:
            p = pred_ids == pred["id"]
            inter = np.count_nonzero(m & p)
            iou = inter / np.count_nonzero(m | p) if inter else 0.0
            if iou > best:
                best, same = iou, pred["category_id"] == seg["category_id"]
        rows.append((seg["id"], best, same))
    return rows


def read_ids(path: Path) -> np.ndarray:
    return rgb_to_id(np.asarray(Image.open(path).convert("RGB")))


def size_bins(mask_px: np.ndarray, iou: np.ndarray, same: np.ndarray) -> list[str]:
    """One line per size bin, then one for all sizes: things, share found (IoU > 0.5),
    share of the found ones with the right category, mean best IoU."""
    lines = []
    for lo, hi in [*zip(BINS[:-1], BINS[1:]), (0, np.inf)]:
        sel = (mask_px >= lo) & (mask_px < hi)
        if sel.any():
            found = iou[sel] > 0.5
            right = same[sel][found].mean() if found.any() else float("nan")
            lines.append(
                f"  {lo:g}-{hi:g} mask px: {sel.sum()} things, found {found.mean():.2f}, "
                f"right category {right:.2f} of those, mean best IoU {iou[sel].mean():.2f}"
            )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--pred-dir", type=Path, required=True)
    ap.add_argument("--split", default="val2017")
    ap.add_argument("--canvas", type=int, default=64)
    ap.add_argument("--stride", type=int, default=4)
    args = ap.parse_args()
    gt_json = json.loads((args.data_root / f"annotations/panoptic_{args.split}.json").read_text())
    preds = json.loads((args.pred_dir / "predictions.json").read_text())["annotations"]
    preds = {a["image_id"]: a for a in preds}
    things = {c["id"] for c in gt_json["categories"] if c["isthing"]}
    images = {i["id"]: i for i in gt_json["images"]}
    px, iou, same = [], [], []
    for ann in gt_json["annotations"]:
        gt = read_ids(args.data_root / f"annotations/panoptic_{args.split}" / ann["file_name"])
        pred = preds.get(ann["image_id"], {"file_name": None, "segments_info": []})
        pred_ids = read_ids(args.pred_dir / pred["file_name"]) if pred["file_name"] else gt * 0
        image = images[ann["image_id"]]
        r2 = min(args.canvas / image["height"], args.canvas / image["width"]) ** 2
        areas = {s["id"]: s["area"] for s in ann["segments_info"]}
        for seg_id, best, right in thing_matches(gt, ann["segments_info"], pred_ids,
                                                 pred["segments_info"], things):  # fmt: skip
            px.append(areas[seg_id] * r2 / args.stride**2)
            iou.append(best)
            same.append(right)
    px, iou, same = np.array(px), np.array(iou), np.array(same, bool)
    print(f"{len(px)} things at canvas {args.canvas}, stride {args.stride}:")
    print("\n".join(size_bins(px, iou, same)))


if __name__ == "__main__":
    main()
