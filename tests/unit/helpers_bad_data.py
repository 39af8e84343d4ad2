"""Bad-input cases for the validation and prepare_data tests: each corrupts one record of
a generated COCO-panoptic set and says what the error must mention."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

SPLIT = "train2017"


def _ann_json(root: Path) -> Path:
    return root / "annotations" / f"panoptic_{SPLIT}.json"


def _first(root: Path) -> tuple[dict, dict, dict]:
    data = json.loads(_ann_json(root).read_text())
    return data, data["images"][0], data["annotations"][0]


def _truncated_jpeg(root: Path) -> tuple[str, str]:
    _, im, _ = _first(root)
    path = root / SPLIT / im["file_name"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return im["file_name"], "cannot decode image"


def _corrupt_png(root: Path) -> tuple[str, str]:
    _, _, ann = _first(root)
    path = root / "annotations" / f"panoptic_{SPLIT}" / ann["file_name"]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a png" * 20)
    return ann["file_name"], "cannot read panoptic PNG"


def _png_id_not_in_json(root: Path) -> tuple[str, str]:
    data, _, ann = _first(root)
    ann["segments_info"] = ann["segments_info"][1:]
    _ann_json(root).write_text(json.dumps(data))
    return ann["file_name"], "are not in segments_info"


def _json_segment_not_in_png(root: Path) -> tuple[str, str]:
    data, _, ann = _first(root)
    ann["segments_info"].append(
        {
            "id": 16_000_000,
            "category_id": ann["segments_info"][0]["category_id"],
            "iscrowd": 0,
            "area": 5,
            "bbox": [0, 0, 1, 1],
        }
    )
    _ann_json(root).write_text(json.dumps(data))
    return ann["file_name"], "do not occur in the PNG"


def _unknown_category(root: Path) -> tuple[str, str]:
    data, _, ann = _first(root)
    ann["segments_info"][0]["category_id"] = 9999
    _ann_json(root).write_text(json.dumps(data))
    return ann["file_name"], "unknown category_id 9999"


def _size_mismatch(root: Path) -> tuple[str, str]:
    _, im, _ = _first(root)
    path = root / SPLIT / im["file_name"]
    with Image.open(path) as image:
        bigger = image.resize((image.width + 3, image.height))
    bigger.save(path, quality=95)
    return im["file_name"], "differs from image"


def _missing_file(root: Path) -> tuple[str, str]:
    _, im, _ = _first(root)
    (root / SPLIT / im["file_name"]).unlink()
    return im["file_name"], "file not found"


CASES = {
    "truncated_jpeg": _truncated_jpeg,
    "corrupt_png": _corrupt_png,
    "png_id_not_in_json": _png_id_not_in_json,
    "json_segment_not_in_png": _json_segment_not_in_png,
    "unknown_category": _unknown_category,
    "size_mismatch": _size_mismatch,
    "missing_file": _missing_file,
}


def corrupt(root: Path, case: str) -> tuple[str, str]:
    """Corrupt the first train record of `root` -> (file name the error names, phrase)."""
    return CASES[case](Path(root))


def first_image_id(root: Path) -> int:
    return _first(Path(root))[1]["id"]


def crowded(root: Path, n: int = 12) -> int:
    """Rewrite the first train record with `n` stripe segments (more than a small K allows);
    returns its image id."""
    data, im, ann = _first(root)
    h, w = im["height"], im["width"]
    ids = 1 + (np.arange(w)[None, :].repeat(h, 0) * n // w)
    rgb = np.stack([ids & 255, ids >> 8 & 255, ids >> 16 & 255], -1).astype(np.uint8)
    Image.fromarray(rgb).save(root / "annotations" / f"panoptic_{SPLIT}" / ann["file_name"])
    cat = data["categories"][0]["id"]
    ann["segments_info"] = [
        {"id": int(i), "category_id": cat, "iscrowd": 0} for i in range(1, n + 1)
    ]
    _ann_json(root).write_text(json.dumps(data))
    return im["id"]
