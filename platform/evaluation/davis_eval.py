"""DAVIS-2017 unsupervised J&F, computed as the official evaluator does
(davisvideochallenge/davis2017-evaluation; rules and quirks: docs/davis.md).

Per sequence (GT ids: 0 background, 1..K objects, 255 void; predictions: 0 background,
1..N proposals):

* K = the largest GT id of the **first** frame (objects appearing later are dropped);
  N = the largest predicted id over all frames, at most MAX_PROPOSALS (else an error);
  fewer proposals than objects are padded with empty ones.
* Per frame and (proposal, object) pair: J = |P∧G∧¬V| / |(P∨G)∧¬V| (1 if the union is
  empty); F = boundary F-measure of P∧¬V against G with tolerance
  ceil(0.008·diagonal) px, boundaries from east/south/south-east differences (none
  along the image border), dilated with a disk; P+R = 0 → 0, no boundary on
  either side → 1.
* One Hungarian assignment per sequence on mean_t (J+F)/2; extra proposals cost
  nothing; objects are reported in the order of their matched proposal index
  (`<seq>_1` is the object matched to the lowest proposal id, not GT object 1).
* Per object: mean, recall (> 0.5) and decay (overlapping quarter bins); global
  numbers are plain means over all objects of all sequences.

Speed (not semantics): each mask's boundary and its dilation are computed once per
frame, on crops; all pair counts come from one bincount (J) and from looking up the
dilations at the other masks' boundary pixels (F). Results equal the official code's
float for float (same formulas, same reduction layout before the assignment).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from pix2seqd.platform.data.davis import VOID, VideoRecord, load_davis, read_davis_mask

MAX_PROPOSALS = 20
BOUND_TH = 0.008
RESULT_MODES = ("P", "L", "1", "I", "I;16", "I;16L", "I;16B")  # single channel, integer ids
GLOBAL_KEYS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


# ---------------------------------------------------------------- data set level


def evaluate_davis(
    davis_root: str | Path,
    results_dir: str | Path,
    split: str = "val",
    resolution: str = "480p",
    sequences: Sequence[str] | None = None,
    *,
    workers: int | None = None,
) -> dict[str, Any]:
    """Score `<results_dir>/<seq>/<frame>.png` against the DAVIS split; returns the J.json
    dict (module doc): GLOBAL_KEYS as floats plus "per_object" {"<seq>_<k>": {"J-Mean",
    "F-Mean"}}. `sequences` restricts the split (official order: as given). `workers`
    threads score sequences in parallel; the numbers do not depend on it."""
    records = _select(load_davis(davis_root, split, resolution), sequences)
    results_dir = Path(results_dir)
    workers = workers or min(8, os.cpu_count() or 1, max(len(records), 1))
    if workers == 1:
        scored = [_score_record(rec, results_dir) for rec in records]
    else:
        with ThreadPoolExecutor(workers) as pool:  # numpy/scipy/PIL release the GIL
            scored = list(pool.map(lambda rec: _score_record(rec, results_dir), records))
    return _summarise([rec.name for rec in records], scored)


def _select(records: list[VideoRecord], sequences: Sequence[str] | None) -> list[VideoRecord]:
    if sequences is None:
        return records
    by_name = {rec.name: rec for rec in records}
    unknown = [name for name in sequences if name not in by_name]
    if unknown:
        raise ValueError(f"sequences not in the DAVIS split: {unknown}")
    return [by_name[name] for name in dict.fromkeys(sequences)]


def _score_record(rec: VideoRecord, results_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    gt = _read_gt(rec)
    pred = _read_results(rec, results_dir, gt.shape[1:])
    return evaluate_sequence(gt, pred, rec.name)


def _summarise(names: list[str], scored: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Per-object statistics in the official order, then plain means over objects."""
    stats: dict[str, list[float]] = {key: [] for key in GLOBAL_KEYS[1:]}
    per_object = {}
    for name, (j_obj, f_obj) in zip(names, scored):
        for k in range(j_obj.shape[0]):
            jm, jr, jd = db_statistics(j_obj[k])
            fm, fr, fd = db_statistics(f_obj[k])
            for key, value in zip(GLOBAL_KEYS[1:], (jm, jr, jd, fm, fr, fd)):
                stats[key].append(value)
            per_object[f"{name}_{k + 1}"] = {"J-Mean": jm, "F-Mean": fm}
    if not per_object:
        raise ValueError("no GT object in the evaluated DAVIS sequences (first frames are empty)")
    means = {key: float(np.mean(values)) for key, values in stats.items()}
    # the official tool: (np.mean(J["M"]) + np.mean(F["M"])) / 2
    result: dict[str, Any] = {"J&F-Mean": (means["J-Mean"] + means["F-Mean"]) / 2.0, **means}
    result["per_object"] = per_object
    return result


def _read_gt(rec: VideoRecord) -> np.ndarray:
    """(T, H, W) uint8 raw annotation ids of one sequence."""
    frames = [read_davis_mask(path) for path in rec.masks]
    for path, frame in zip(rec.masks, frames):
        if frame.shape != frames[0].shape:
            raise ValueError(
                f"DAVIS sequence {rec.name!r}: annotation {path} is {frame.shape}, "
                f"the first annotation is {frames[0].shape}"
            )
    return np.stack(frames)


def _read_results(rec: VideoRecord, results_dir: Path, shape: tuple[int, ...]) -> np.ndarray:
    """(T, H, W) uint8 proposal ids, one PNG per GT frame (named after the GT PNG)."""
    frames, top = [], 0
    for mask_path in rec.masks:
        path = results_dir / rec.name / f"{mask_path.stem}.png"
        if not path.is_file():
            raise FileNotFoundError(
                f"DAVIS results for sequence {rec.name!r}: frame "
                f"{mask_path.stem!r} not found, expected {path}"
            )
        ids = _read_result_png(path, shape)
        top = max(top, int(ids.max(initial=0)))
        frames.append(ids.astype(np.uint8) if top <= MAX_PROPOSALS else None)
    if top > MAX_PROPOSALS:
        raise _too_many_proposals(rec.name, top)
    return np.stack(frames)


def _read_result_png(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """One results PNG as integer ids (H, W); mode and size are checked against the GT."""
    with Image.open(path) as im:
        if im.mode not in RESULT_MODES:
            raise ValueError(
                f"{path}: a results PNG must be single-channel integer ids "
                f"(mode {', '.join(RESULT_MODES)}), got mode {im.mode}"
            )
        if (im.height, im.width) != tuple(shape):
            raise ValueError(
                f"{path}: results frame is {im.width}x{im.height} (WxH) but the "
                f"GT frame is {shape[1]}x{shape[0]}"
            )
        ids = np.asarray(im)
    if ids.dtype.kind not in "biu" or ids.min(initial=0) < 0:
        raise ValueError(f"{path}: results ids must be non-negative integers")
    return ids


def _too_many_proposals(name: str, n: int) -> ValueError:
    return ValueError(
        f"DAVIS sequence {name!r}: {n} proposals (largest predicted id over all "
        f"frames) but the official evaluator allows at most {MAX_PROPOSALS}"
    )


# ---------------------------------------------------------------- sequence level


def evaluate_sequence(
    gt: np.ndarray, pred: np.ndarray, name: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame J and F of the matched objects of one sequence.

    gt: (T, H, W) raw annotation ids (0 bg, 1..K objects, 255 void); pred: (T, H, W) int
    proposal ids (0 bg). Returns (J, F), each float64 (K, T), rows in the official
    reporting order (sorted by matched proposal index). Raises ValueError (naming
    `name`) for more than MAX_PROPOSALS proposals or mismatched shapes.
    """
    gt, pred = _check_sequence(gt, pred, name)
    n_frames, height, width = gt.shape
    n_obj = int(np.where(gt[0] == VOID, 0, gt[0]).max(initial=0))
    n_rows = max(int(pred.max(initial=0)), n_obj)  # proposals, padded with empty ones
    radius = bound_radius((height, width))
    j_all = np.zeros((n_rows, n_obj, n_frames))  # the official (N', K, T) layout
    f_all = np.zeros((n_rows, n_obj, n_frames))
    for t in range(n_frames):
        j_all[:, :, t], f_all[:, :, t] = _frame_scores(gt[t], pred[t], n_obj, n_rows, radius)
    # Same array layout and reductions as the official code, so the score matrix is
    # bitwise equal and linear_sum_assignment breaks ties (e.g. empty proposals) alike.
    score = (np.mean(j_all, axis=2) + np.mean(f_all, axis=2)) / 2
    rows, cols = linear_sum_assignment(-score)  # rows come back sorted: reporting order
    return j_all[rows, cols], f_all[rows, cols]


def _check_sequence(gt: np.ndarray, pred: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape or gt.ndim != 3 or gt.shape[0] == 0:
        raise ValueError(
            f"DAVIS sequence {name!r}: GT {gt.shape} and prediction {pred.shape} "
            f"must have the same non-empty (T, H, W) shape"
        )
    if gt.dtype.kind not in "biu" or pred.dtype.kind not in "biu":
        raise ValueError(f"DAVIS sequence {name!r}: GT and prediction must hold integer ids")
    if gt.min(initial=0) < 0 or gt.max(initial=0) > 255 or pred.min(initial=0) < 0:
        raise ValueError(f"DAVIS sequence {name!r}: ids out of range (GT 0..255, prediction >= 0)")
    n_prop = int(pred.max(initial=0))
    if n_prop > MAX_PROPOSALS:
        raise _too_many_proposals(name, n_prop)
    return gt.astype(np.uint8, copy=False), pred.astype(np.uint8, copy=False)


def _frame_scores(
    gt: np.ndarray, pred: np.ndarray, n_obj: int, n_rows: int, radius: int
) -> tuple[np.ndarray, np.ndarray]:
    """J and F of every (proposal, object) pair of one frame, each (n_rows, n_obj).

    gt, pred: (H, W) uint8; proposals n_rows >= max(pred) (ids beyond max(pred) are the
    empty padding proposals)."""
    void = gt == VOID
    obj_lut = np.zeros(256, np.uint8)  # GT ids -> object ids; void and ids > K -> 0
    obj_lut[1 : n_obj + 1] = np.arange(1, n_obj + 1)
    gt_obj = obj_lut[gt]
    j = _pair_iou(gt_obj, void, pred, n_obj, n_rows)
    # F sees the prediction with void removed; GT object masks never contain void
    pred_f = np.where(void, 0, pred).astype(np.uint8)
    f = _pair_boundary_f(gt_obj, pred_f, n_obj, n_rows, radius)
    return j, f


def _pair_iou(
    gt_obj: np.ndarray, void: np.ndarray, pred: np.ndarray, n_obj: int, n_rows: int
) -> np.ndarray:
    """(n_rows, n_obj) J from one bincount of (object id, proposal id) over the frame."""
    # void gets its own row n_obj + 1, dropped below: outside both intersection and union
    row = np.where(void, n_obj + 1, gt_obj).astype(np.intp)
    counts = np.bincount((row * (n_rows + 1) + pred).ravel(), minlength=(n_obj + 2) * (n_rows + 1))
    counts = counts.reshape(n_obj + 2, n_rows + 1)[: n_obj + 1]  # (object 0..K, proposal 0..N')
    inter = counts[1:, 1:].T
    union = counts[:, 1:].sum(0)[:, None] + counts[1:, :].sum(1)[None, :] - inter
    j = inter / np.maximum(union, 1)
    j[union == 0] = 1.0
    return j


def _pair_boundary_f(
    gt_obj: np.ndarray, pred: np.ndarray, n_obj: int, n_rows: int, radius: int
) -> np.ndarray:
    """(n_rows, n_obj) boundary F: each mask's boundary and dilation once, then the pair
    counts by looking the dilations up at the other side's boundary pixels."""
    gt_pts = _label_boundaries(gt_obj, n_obj)
    pred_pts = _label_boundaries(pred, n_rows)
    gt_dil = _dilation_stack(gt_pts, gt_obj.shape, radius)
    pred_dil = _dilation_stack(pred_pts, pred.shape, radius)
    n_gt = np.array([len(ys) for ys, _ in gt_pts])
    n_fg = np.array([len(ys) for ys, _ in pred_pts])
    fg_match = np.zeros((n_rows, n_obj), np.int64)  # |B_pred ∧ dilate(B_gt)|
    gt_match = np.zeros((n_rows, n_obj), np.int64)  # |B_gt ∧ dilate(B_pred)|
    for p, (ys, xs) in enumerate(pred_pts):
        if len(ys) and n_obj:
            fg_match[p] = gt_dil[:, ys, xs].sum(1)
    for g, (ys, xs) in enumerate(gt_pts):
        if len(ys) and n_rows:
            gt_match[:, g] = pred_dil[:, ys, xs].sum(1)
    return _f_from_counts(n_fg[:, None], n_gt[None, :], fg_match, gt_match)


def _label_boundaries(labels: np.ndarray, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Boundary pixel coordinates (ys, xs) of the masks labels == 1..n, (H, W) uint8 in.

    The boundary is computed on the mask's bounding box grown by one pixel (clipped): it
    holds every boundary pixel, and the grown box's last row/column is background, so the
    last-row/last-column rule gives there what the full image would."""
    height, width = labels.shape
    empty = (np.zeros(0, np.intp), np.zeros(0, np.intp))
    out = [empty] * n
    for i, box in enumerate(ndimage.find_objects(labels, max_label=n)):
        if box is None:
            continue  # empty mask: empty boundary, empty dilation
        y0, x0 = max(box[0].start - 1, 0), max(box[1].start - 1, 0)
        y1, x1 = min(box[0].stop + 1, height), min(box[1].stop + 1, width)
        ys, xs = np.nonzero(boundary_map(labels[y0:y1, x0:x1] == i + 1))
        out[i] = (ys + y0, xs + x0)
    return out


def _dilation_stack(
    points: list[tuple[np.ndarray, np.ndarray]], shape: tuple[int, int], radius: int
) -> np.ndarray:
    """(n, H, W) bool: the disk dilation of each boundary point set."""
    stack = np.zeros((len(points), *shape), bool)  # calloc: untouched pages cost nothing
    for i, (ys, xs) in enumerate(points):
        if len(ys):
            y0, x0, block = _dilate_points(ys, xs, shape, radius)
            stack[i, y0 : y0 + block.shape[0], x0 : x0 + block.shape[1]] = block
    return stack


def _f_from_counts(n_fg, n_gt, fg_match, gt_match) -> np.ndarray:
    """The official precision/recall/F rules on (broadcastable) boundary counts.

    No predicted boundary → precision 1; no GT boundary → recall 1 (the other one is then
    0 unless both are empty, because there is nothing to match); P + R = 0 → F = 0."""
    precision = np.where(n_fg > 0, fg_match / np.maximum(n_fg, 1), 1.0)
    recall = np.where(n_gt > 0, gt_match / np.maximum(n_gt, 1), 1.0)
    total = precision + recall
    # the official expression and evaluation order: 2 * P * R / (P + R)
    return np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1.0), 0.0)


# ---------------------------------------------------------------- statistics


def db_statistics(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, recall, decay) of per-frame values (T,), as davis2017 `utils.db_statistics`.

    recall = fraction of frames with value > 0.5 (strict); decay = mean of the first
    quarter bin − mean of the last, bins v[ids[i]:ids[i+1]+1] (overlapping) with
    ids = round(linspace(1, T, 5) + 1e-10) − 1 cast to uint8 (wraps beyond 256 frames,
    as the official code does)."""
    values = np.asarray(values, np.float64)
    mean = np.nanmean(values)
    recall = np.nanmean(values > 0.5)
    ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.uint8)
    bins = [values[ids[i] : ids[i + 1] + 1] for i in range(4)]
    decay = np.nanmean(bins[0]) - np.nanmean(bins[3])
    return float(mean), float(recall), float(decay)


# ---------------------------------------------------------------- per-frame pieces


def j_measure(pred_mask: np.ndarray, gt_mask: np.ndarray, void: np.ndarray | None = None) -> float:
    """Region similarity of two (H, W) masks; void pixels are outside intersection and
    union; an empty union scores 1."""
    keep = np.ones(gt_mask.shape, bool) if void is None else ~np.asarray(void, bool)
    pred_mask, gt_mask = np.asarray(pred_mask, bool), np.asarray(gt_mask, bool)
    union = np.count_nonzero((pred_mask | gt_mask) & keep)
    return 1.0 if union == 0 else np.count_nonzero(pred_mask & gt_mask & keep) / union


def f_measure(
    pred_mask: np.ndarray,
    gt_mask: np.ndarray,
    void: np.ndarray | None = None,
    bound_th: float = BOUND_TH,
) -> float:
    """Boundary F-measure of two (H, W) masks (void removed from both first), tolerance
    bound_radius(shape, bound_th) pixels."""
    keep = np.ones(gt_mask.shape, bool) if void is None else ~np.asarray(void, bool)
    radius = bound_radius(gt_mask.shape, bound_th)
    fg = boundary_map(np.asarray(pred_mask, bool) & keep)
    gt = boundary_map(np.asarray(gt_mask, bool) & keep)
    fg_match = np.count_nonzero(fg & dilate(gt, radius))
    gt_match = np.count_nonzero(gt & dilate(fg, radius))
    return float(_f_from_counts(np.count_nonzero(fg), np.count_nonzero(gt), fg_match, gt_match))


def bound_radius(shape: Sequence[int], bound_th: float = BOUND_TH) -> int:
    """Boundary tolerance in pixels for an (H, W) image: ceil(bound_th · diagonal) when
    bound_th < 1 (8 at 480x854, 2 at 120x160), else bound_th itself."""
    # np.linalg.norm as the official code, so the rounding at the ceil is the same
    radius = bound_th if bound_th >= 1 else float(np.ceil(bound_th * np.linalg.norm(shape[:2])))
    if radius != int(radius):
        raise ValueError(f"boundary tolerance must be a whole number of pixels, got {radius}")
    return int(radius)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool boundary of a mask (davis2017 `_seg2bmap`): a pixel differing from its
    east, south or south-east neighbour; the last row compares east only, the last column
    south only, the bottom-right pixel is never boundary (so no boundary along the border)."""
    seg = np.asarray(mask, bool)
    b = np.zeros_like(seg)
    b[:-1, :-1] = (
        (seg[:-1, :-1] != seg[:-1, 1:])
        | (seg[:-1, :-1] != seg[1:, :-1])
        | (seg[:-1, :-1] != seg[1:, 1:])
    )
    b[-1, :-1] = seg[-1, :-1] != seg[-1, 1:]
    b[:-1, -1] = seg[:-1, -1] != seg[1:, -1]
    b[-1, -1] = False
    return b


def disk(radius: int) -> np.ndarray:
    """(2r+1, 2r+1) bool disk, dx² + dy² <= r² (skimage.morphology.disk)."""
    offsets = np.arange(-radius, radius + 1)
    return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2


def dilate(bmap: np.ndarray, radius: int) -> np.ndarray:
    """(H, W) bool dilation of a bool map with disk(radius), as cv2.dilate with that
    kernel: pixels outside the image never contribute. Works on the bounding box of the
    set pixels grown by the radius."""
    bmap = np.asarray(bmap, bool)
    out = np.zeros_like(bmap)
    ys, xs = np.nonzero(bmap)
    if len(ys):
        y0, x0, block = _dilate_points(ys, xs, bmap.shape, radius)
        out[y0 : y0 + block.shape[0], x0 : x0 + block.shape[1]] = block
    return out


def _dilate_points(
    ys: np.ndarray, xs: np.ndarray, shape: Sequence[int], radius: int
) -> tuple[int, int, np.ndarray]:
    """Disk dilation of a non-empty point set, as (y0, x0, block): the block covers the
    points' bounding box grown by the radius, clipped to the (H, W) image."""
    r = radius
    by0, bx0 = int(ys.min()), int(xs.min())
    h, w = int(ys.max()) - by0 + 1, int(xs.max()) - bx0 + 1
    # input grown by 2r (zeros: no point there), output grown by r around the box
    src = np.zeros((h + 4 * r, w + 4 * r), bool)
    src[ys - by0 + 2 * r, xs - bx0 + 2 * r] = True
    block = _dilate_margin(src, r)
    y0, x0 = max(by0 - r, 0), max(bx0 - r, 0)
    y1, x1 = min(by0 + h + r, shape[0]), min(bx0 + w + r, shape[1])
    return y0, x0, block[y0 - (by0 - r) : y1 - (by0 - r), x0 - (bx0 - r) : x1 - (bx0 - r)]


def _dilate_margin(src: np.ndarray, r: int) -> np.ndarray:
    """Disk dilation of the interior of src (a margin of r on every side is only read):
    (h, w) -> (h - 2r, w - 2r). Row by row: disk row dy spans |dx| <= isqrt(r² − dy²),
    so OR horizontally dilated copies (one per span width) shifted by dy."""
    h, w = src.shape[0] - 2 * r, src.shape[1] - 2 * r
    spans = [math.isqrt(r * r - dy * dy) for dy in range(-r, r + 1)]
    wide, cur = {}, src[:, r : r + w].copy()
    for k in range(max(spans) + 1):
        if k:
            cur |= src[:, r - k : r - k + w]
            cur |= src[:, r + k : r + k + w]
        if k in spans:
            wide[k] = cur.copy()
    out = np.zeros((h, w), bool)
    for dy, k in zip(range(-r, r + 1), spans):
        out |= wide[k][r + dy : r + dy + h]
    return out
