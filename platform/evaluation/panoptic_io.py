"""Writing (class, instance id) maps in the COCO-panoptic results format.

One image becomes an RGB PNG (segment id = R + 256 G + 256^2 B, 0 = void) plus an
annotation `{"image_id", "file_name", "segments_info": [...]}`; all annotations and the
categories go into one JSON (the `predictions.json` of eval_coco; docs/pq.md, "File format").

Segments of a prediction: every distinct (class, id) pair with class > 0 and id > 0;
all segments of one STUFF category are merged into one, as COCO panoptic allows at most
one segment per stuff category and image. Segment ids are 1..n in (class, id) order.
Given a score map, each segment also gets a `score` (`segment_scores`; docs/pq.md, "Beside
PQ: mIoU and AP^Th_pan"), which AP^Th_pan ranks by.
PNGs are written with fast zlib settings: prediction sets are large and short-lived.
"""

from __future__ import annotations

import io
import json
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from pix2seqd.platform.data.coco_panoptic import CategoryMap, id_to_rgb
from pix2seqd.platform.evaluation.segment_scores import segment_scores

Layout = Literal["hw2", "2hw"]


def split_label_map(
    label_map: np.ndarray, layout: Layout | None = None, name: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 2) or (2, H, W) integer map -> (class (H, W), instance id (H, W)) int64.

    `layout=None` infers it from which axis has size 2, and refuses to guess when both
    ends do (e.g. (2, H, 2)).
    """
    a = np.asarray(label_map)
    if a.ndim != 3 or 2 not in (a.shape[0], a.shape[-1]):
        raise ValueError(f"{name}: label map must be (H, W, 2) or (2, H, W), got shape {a.shape}")
    if layout is None:
        if a.shape[0] == 2 and a.shape[-1] == 2:
            raise ValueError(
                f"{name}: label map shape {a.shape} is ambiguous; pass layout='hw2' or '2hw'"
            )
        layout = "hw2" if a.shape[-1] == 2 else "2hw"
    cls, inst = (a[..., 0], a[..., 1]) if layout == "hw2" else (a[0], a[1])
    return cls.astype(np.int64), inst.astype(np.int64)


def encode_segments(
    label_map: np.ndarray,
    category_map: CategoryMap,
    *,
    merge_stuff: bool = True,
    crowd_instances: Collection[int] = (),
    layout: Layout | None = None,
    name: str = "",
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """(class, id) map -> ((H, W) uint32 segment ids 1..n, 0 = void; segments_info).

    `crowd_instances`: instance ids whose segments get `iscrowd = 1` (GT-style output).
    Raises ValueError (naming `name`) for classes outside 0..C or negative ids.
    """
    cls, inst = split_label_map(label_map, layout, name)
    if cls.size and (cls.min() < 0 or cls.max() >= category_map.num_classes or inst.min() < 0):
        raise ValueError(
            f"{name}: classes must lie in 0..{category_map.num_classes - 1} and ids "
            f"be >= 0; got classes {cls.min()}..{cls.max()}, min id {inst.min()}"
        )
    valid = (cls > 0) & (inst > 0)
    if merge_stuff:
        inst = np.where(np.asarray(category_map.isthing)[cls], inst, 0)
    n_inst = int(inst.max(initial=0)) + 1
    code = np.where(valid, cls * n_inst + inst, 0)  # one int per (class, id) pair, 0 = void
    uniq, seg_ids, area = _label_codes(code.ravel(), category_map.num_classes * n_inst)
    seg_ids = seg_ids.reshape(code.shape)
    boxes = _boxes(seg_ids, len(uniq))
    crowd = set(int(i) for i in crowd_instances)
    info = []
    for k, (u, a, box) in enumerate(zip(uniq.tolist(), area.tolist(), boxes.tolist())):
        c, i = divmod(u, n_inst)
        info.append(
            {
                "id": k + 1,
                "category_id": int(category_map.class_to_category[c]),
                "area": int(a),
                "bbox": box,
                "iscrowd": int(i in crowd),
            }
        )
    return seg_ids.astype(np.uint32), info


def _label_codes(code: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P,) codes in [0, size), 0 = void -> (sorted distinct non-zero codes (n,),
    label 0..n per element (P,), pixel count per code (n,)); np.unique without the sort."""
    if size > 1 << 20:  # a lookup table this big costs more than sorting
        uniq, inverse, counts = np.unique(code, return_inverse=True, return_counts=True)
        has_void = int(uniq.size > 0 and uniq[0] == 0)
        return uniq[has_void:], inverse + (1 - has_void), counts[has_void:]
    counts = np.bincount(code, minlength=size)
    counts[0] = 0
    uniq = np.flatnonzero(counts)
    lut = np.zeros(size, dtype=np.int64)
    lut[uniq] = np.arange(1, len(uniq) + 1)
    return uniq, lut[code], counts[uniq]


def _boxes(labels: np.ndarray, n: int) -> np.ndarray:
    """(n, 4) COCO boxes [x, y, w, h] (inclusive extent) of labels 1..n in an (H, W) map."""
    h, w = labels.shape
    # Which columns / rows each label touches, counted in one pass each (no per-label scan).
    cols = np.bincount((labels * w + np.arange(w)).ravel(), minlength=(n + 1) * w)
    rows = np.bincount((labels * h + np.arange(h)[:, None]).ravel(), minlength=(n + 1) * h)
    cols, rows = cols.reshape(n + 1, w)[1:] > 0, rows.reshape(n + 1, h)[1:] > 0
    x0, x1 = cols.argmax(1), w - 1 - cols[:, ::-1].argmax(1)
    y0, y1 = rows.argmax(1), h - 1 - rows[:, ::-1].argmax(1)
    return np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], axis=1)


def write_id_png(path: str | Path, seg_ids: np.ndarray) -> None:
    """Write (H, W) segment ids < 2^24 as an RGB PNG (creating its folder)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(id_to_rgb(seg_ids)).save(path, compress_level=1)


def write_prediction(
    label_map: np.ndarray,
    category_map: CategoryMap,
    image_id: int,
    pred_dir: str | Path,
    name: str,
    *,
    layout: Layout | None = None,
    score_map: np.ndarray | None = None,
) -> dict[str, Any]:
    """Write `<pred_dir>/<name>.png` for one image; return its results-format annotation.

    `label_map` is (H, W, 2) or (2, H, W) (contiguous class, instance id) at the original
    image size. Pixels with class 0 or id 0 are void; stuff segments are merged.
    `score_map` (H, W): each segment's `score` in segments_info is its mean over the
    segment's pixels (`segment_scores.agreement_map`); without it no segment has a score.
    """
    png, info = encode_prediction(label_map, category_map, name, layout=layout, score_map=score_map)
    path = Path(pred_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return {"image_id": image_id, "file_name": path.name, "segments_info": info}


def encode_prediction(
    label_map: np.ndarray,
    category_map: CategoryMap,
    name: str,
    *,
    layout: Layout | None = None,
    score_map: np.ndarray | None = None,
) -> tuple[bytes, list[dict[str, Any]]]:
    """`write_prediction` in memory: (the result PNG's bytes, segments_info)."""
    seg_ids, info = encode_segments(label_map, category_map, layout=layout, name=name)
    if score_map is not None:
        scores = segment_scores(seg_ids, np.asarray(score_map), len(info))
        info = [{**seg, "score": float(v)} for seg, v in zip(info, scores)]
    buf = io.BytesIO()
    Image.fromarray(id_to_rgb(seg_ids)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue(), info


def write_groundtruth(
    label_map: np.ndarray,
    category_map: CategoryMap,
    image_id: int,
    gt_dir: str | Path,
    name: str,
    *,
    crowd_instances: Collection[int] = (),
    merge_stuff: bool = False,
    layout: Layout | None = None,
) -> dict[str, Any]:
    """GT-style twin of `write_prediction` (mainly for tests): segments carry `iscrowd`.

    Every (class, id) pair stays its own segment unless `merge_stuff`; instance ids in
    `crowd_instances` are marked crowd.
    """
    seg_ids, info = encode_segments(
        label_map,
        category_map,
        merge_stuff=merge_stuff,
        crowd_instances=crowd_instances,
        layout=layout,
        name=name,
    )
    file_name = f"{name}.png"
    write_id_png(Path(gt_dir) / file_name, seg_ids)
    return {"image_id": image_id, "file_name": file_name, "segments_info": info}


def write_predictions_json(
    path: str | Path,
    annotations: Sequence[Mapping[str, Any]],
    categories: CategoryMap | Sequence[Mapping[str, Any]],
    images: Sequence[Mapping[str, Any]] | None = None,
) -> None:
    """Write `{"annotations", "categories"[, "images"]}`; pass `images` for a GT-style file."""
    cats = categories.to_coco() if isinstance(categories, CategoryMap) else list(categories)
    data: dict[str, Any] = {"annotations": list(annotations), "categories": cats}
    if images is not None:
        data["images"] = list(images)
    Path(path).write_text(json.dumps(data))
