"""What kind of errors a video prediction makes: scored result PNGs (`eval_davis
--results-dir`) against the DAVIS ground truth, beyond J&F.

Prints, for the first frame of every sequence: the foreground recall of each object (share
of its pixels predicted as any object), the IoU of the predicted id covering most of it,
that id's purity (share of its pixels on the object: low when an id spills over the
background or another object), and the share of background pixels predicted as an object;
then the mean J of the matched objects (the evaluator's Hungarian matching) per frame index,
which shows whether errors are carried on, repaired or made worse over time.

    python scripts/video_errors.py --data-root DIR --results-dir DIR [--split val] [--frames 10]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pix2seqd.platform.data.davis import VOID, load_davis
from pix2seqd.platform.evaluation.davis_eval import _read_gt, _read_results, evaluate_sequence


def first_frame_errors(
    gt: np.ndarray, pred: np.ndarray
) -> tuple[list[tuple[float, float, float]], float]:
    """gt, pred (H, W) ids of one frame -> per object (fg recall, best-id IoU, purity) and
    the share of background (gt 0) pixels predicted as an object."""
    rows = []
    for obj in np.unique(gt[(gt > 0) & (gt != VOID)]):
        m = gt == obj
        ids, counts = np.unique(pred[m & (pred > 0)], return_counts=True)
        if len(ids) == 0:
            rows.append((0.0, 0.0, float("nan")))
            continue
        p = pred == ids[counts.argmax()]
        rows.append(((pred[m] > 0).mean(), (m & p).sum() / (m | p).sum(), (m & p).sum() / p.sum()))
    background = gt == 0
    return rows, float((pred[background] > 0).mean()) if background.any() else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--data-root",
        "--davis-root",
        dest="data_root",
        required=True,
        help="DAVIS 2017 folder (--davis-root: its older name)",
    )
    ap.add_argument("--results-dir", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--frames", type=int, default=10, help="frame indices in the J curve")
    args = ap.parse_args()
    objects, false_fg, curves = [], [], []
    for rec in load_davis(args.data_root, args.split):
        gt = _read_gt(rec)
        pred = _read_results(rec, Path(args.results_dir), gt.shape[1:])
        rows, fp = first_frame_errors(gt[0], pred[0])
        objects += rows
        false_fg.append(fp)
        j, _ = evaluate_sequence(gt, pred, rec.name)
        curves += [row[: args.frames] for row in j if len(row) >= args.frames]
    recall, iou, purity = np.array(objects).T
    print(
        f"first frame, {len(objects)} objects: fg recall {recall.mean():.3f} (< 0.3: "
        f"{(recall < 0.3).mean():.3f}), best-id IoU {iou.mean():.3f}, its purity "
        f"{np.nanmean(purity):.3f}; background predicted as object {np.nanmean(false_fg):.3f}"
    )
    curve = np.mean(curves, axis=0)
    print(
        f"mean J per frame ({len(curves)} objects in sequences of >= {args.frames} frames): "
        + " ".join(f"{v:.3f}" for v in curve)
    )


if __name__ == "__main__":
    main()
