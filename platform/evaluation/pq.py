"""Panoptic quality (PQ, SQ, RQ) with panopticapi's rules and result shape.

Scoring is done by `hotcoco.panoptic` (Rust, checked against panopticapi, quirks included;
the rules are in docs/pq.md). This module adds two things around it:

* a validation pass over the prediction side, so a broken prediction fails with a
  ValueError that names the image, the file and the segment;
* panopticapi's reporting: a category with no GT and no prediction reports 0.0 in
  `per_class` (hotcoco: -1.0), and a split without any such category reports 0.0 with
  n = 0 (panopticapi: ZeroDivisionError, hotcoco: -1.0).

Result (the R.json of eval_coco, docs/cli.md), all fractions in [0, 1]::

    {"All": {"pq", "sq", "rq", "n"}, "Things": {...}, "Stuff": {...},
     "per_class": {"<category id>": {"pq", "sq", "rq"}}}

`per_class` keys are strings (as they read back from R.json); panopticapi uses ints.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from hotcoco.panoptic import PanopticEval
from PIL import Image

from pix2seqd.platform.data.coco_panoptic import read_id_png

SPLITS = ("All", "Things", "Stuff")


def pq_compute(
    gt_json: str | Path, pred_json: str | Path, gt_dir: str | Path, pred_dir: str | Path
) -> dict[str, Any]:
    """Score a COCO-panoptic prediction set; returns the dict described in the module doc.

    Raises ValueError (naming image and segment) for: a GT image without prediction, a
    missing PNG, a prediction PNG of another shape than the GT PNG, a PNG id absent from
    segments_info, a segments_info id absent from the PNG, an unknown category id.
    """
    validate_prediction_set(gt_json, pred_json, gt_dir, pred_dir)
    ev = PanopticEval(
        str(gt_json), str(pred_json), gt_folder=str(gt_dir), pred_folder=str(pred_dir)
    )
    ev.evaluate()  # unlike hotcoco's pq_compute, this does not print the table
    return panopticapi_result(ev.results())


def panopticapi_result(res: Mapping[str, Any]) -> dict[str, Any]:
    """hotcoco `results()` -> panopticapi values as plain floats/ints (see module doc).

    A category counts iff it has any TP, FP or FN; this, not hotcoco's -1.0 marker, decides.
    """
    out: dict[str, Any] = {}
    for split in SPLITS:
        n = int(res[split]["n"])
        out[split] = {k: float(res[split][k]) if n > 0 else 0.0 for k in ("pq", "sq", "rq")}
        out[split]["n"] = n
    per_class = {}
    for cat_id in sorted(res["per_class"]):
        r = res["per_class"][cat_id]
        counted = r["tp"] + r["fp"] + r["fn"] > 0
        per_class[str(cat_id)] = {k: float(r[k]) if counted else 0.0 for k in ("pq", "sq", "rq")}
    out["per_class"] = per_class
    return out


# ---------------------------------------------------------------- validation


def _load(path: str | Path, keys: tuple[str, ...]) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"panoptic JSON not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"{path}: missing top-level keys {missing}")
    return data


def validate_prediction_set(
    gt_json: str | Path, pred_json: str | Path, gt_dir: str | Path, pred_dir: str | Path
) -> None:
    """Check the prediction side the way panopticapi does, with clearer ValueErrors.

    The GT side is not checked beyond its files existing: panopticapi scores GT quirks
    (stale areas, orphan PNG ids) as they are, and so does hotcoco.
    """
    gt = _load(gt_json, ("annotations", "categories"))
    pred = _load(pred_json, ("annotations",))
    for folder in (gt_dir, pred_dir):
        if not Path(folder).is_dir():
            raise ValueError(f"panoptic PNG folder not found: {folder}")
    for c in gt["categories"]:
        if "id" not in c or "isthing" not in c:
            raise ValueError(f"{gt_json}: category {c} lacks 'id' or 'isthing'")
    cat_ids = {c["id"] for c in gt["categories"]}
    # Last entry per image wins, as in panopticapi's dict; extra prediction images are ignored.
    by_image = {a.get("image_id"): a for a in pred["annotations"]}
    pairs = []
    for g in gt["annotations"]:
        p = by_image.get(g["image_id"])
        if p is None:
            raise ValueError(f"image {g['image_id']}: no prediction in {pred_json}")
        pairs.append((g, p))
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    _run_in_threads(lambda gp: _check_image(gp[0], gp[1], gt_dir, pred_dir, cat_ids), pairs)


def _run_in_threads(fn: Callable[[Any], None], items: list[Any]) -> None:
    """Call `fn` on every item in a thread pool (PNG decoding and numpy release the GIL).

    Re-raises the first failure in item order, so errors are deterministic, and cancels
    the work not yet started instead of finishing a 5000-image set first.
    """
    pool = ThreadPoolExecutor(min(16, os.cpu_count() or 1))
    futures = [pool.submit(fn, item) for item in items]
    try:
        for f in futures:
            f.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _check_image(
    gt_ann: Mapping[str, Any],
    pred_ann: Mapping[str, Any],
    gt_dir: Path,
    pred_dir: Path,
    cat_ids: set[int],
) -> None:
    """Validate one image's prediction PNG + segments_info against its GT PNG."""
    image = f"image {gt_ann['image_id']}"
    if "file_name" not in pred_ann or "segments_info" not in pred_ann:
        raise ValueError(f"{image}: prediction annotation lacks 'file_name' or 'segments_info'")
    gt_png, pred_png = gt_dir / gt_ann["file_name"], pred_dir / pred_ann["file_name"]
    for png in (gt_png, pred_png):
        if not png.is_file():
            raise ValueError(f"{image}: panoptic PNG not found: {png}")
    with Image.open(gt_png) as im:  # reads the header only
        gt_shape = (im.height, im.width)
    ids = read_id_png(pred_png, f"{image} ({pred_png})")
    if ids.shape != gt_shape:
        raise ValueError(
            f"{image}: prediction {pred_png} is {ids.shape[0]}x{ids.shape[1]} (HxW), "
            f"ground truth {gt_png} is {gt_shape[0]}x{gt_shape[1]}"
        )
    _check_segments(ids, pred_ann["segments_info"], cat_ids, f"{image} ({pred_png})")


def _check_segments(
    ids: np.ndarray, segments_info: list[Mapping[str, Any]], cat_ids: set[int], where: str
) -> None:
    """(H, W) PNG ids vs segments_info, both ways, plus the categories of segments with pixels.

    Checks run in panopticapi's order, so the first error is the one it would report: PNG
    ids in increasing order (an id missing from segments_info, or its unknown category),
    then the segments_info ids absent from the PNG (id 0 among them: the PNG's 0 is VOID).
    """
    try:
        info = {s["id"]: s["category_id"] for s in segments_info}  # last duplicate wins
    except (KeyError, TypeError) as e:
        raise ValueError(f"{where}: malformed segments_info entry ({e!r})") from None
    # Look pixels up among the listed ids (O(P log S)) instead of np.unique's full sort.
    listed = sorted(i for i in info if i != 0)
    keys = np.array([0, *listed], dtype=np.int64)
    flat = ids.ravel().astype(np.int64)
    pos = np.minimum(np.searchsorted(keys, flat), len(keys) - 1)
    unknown = keys[pos] != flat
    first_unknown = int(flat[unknown].min()) if unknown.any() else None
    present = np.bincount(pos[~unknown], minlength=len(keys))[1:] > 0
    bad_category = [seg for seg in keys[1:][present].tolist() if info[seg] not in cat_ids]
    if first_unknown is not None and (not bad_category or first_unknown < bad_category[0]):
        raise ValueError(f"{where}: segment {first_unknown} is in the PNG but not in segments_info")
    if bad_category:
        seg = bad_category[0]
        raise ValueError(f"{where}: segment {seg} has unknown category_id {info[seg]}")
    absent = ([0] if 0 in info else []) + keys[1:][~present].tolist()
    if absent:
        void = " (id 0 is VOID in the PNG)" if 0 in info else ""
        raise ValueError(
            f"{where}: segments {absent} are in segments_info but not in the PNG{void}"
        )
