"""Reader for the official COCO-panoptic layout and its two-channel label maps.

Layout (as distributed by cocodataset.org)::

    <root>/<split>/*.jpg
    <root>/annotations/panoptic_<split>.json
    <root>/annotations/panoptic_<split>/*.png    segment id = R + 256 G + 256^2 B, 0 = void

`load_coco_panoptic` checks the structure of the JSON (what would make the whole file
unusable). Per-image content errors (a PNG id missing from `segments_info`, an unknown
category) are raised by `decode_label_map`, so a data-preparation job can skip one bad
image instead of losing the set.

Label map convention (docs/model.md, "Masks and instance ids"): (H, W, 2) int32, channel 0 = contiguous class 1..C in
sorted COCO-id order (0 = void), channel 1 = instance id. Things and stuff both get ids.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

CrowdMode = Literal["segment", "void"]


@dataclass(frozen=True)
class Category:
    """One COCO-panoptic category (`id` is the sparse COCO id, e.g. 1..200)."""

    id: int
    name: str
    isthing: bool


@dataclass(frozen=True)
class Segment:
    """One entry of an annotation's `segments_info` (`bbox` is COCO x, y, w, h)."""

    id: int
    category_id: int
    iscrowd: bool = False
    area: int = 0
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)


@dataclass(frozen=True)
class PanopticRecord:
    """One annotated image: its JPEG, its id PNG and the segments the PNG uses."""

    image_id: int | str  # COCO: int; Cityscapes: the file stem
    image_path: Path
    png_path: Path
    width: int
    height: int
    segments: tuple[Segment, ...]


class CategoryMap:
    """COCO category ids <-> contiguous classes 1..C (sorted by id); class 0 = void.

    Attributes: `categories` (sorted by id), `num_classes` = C + 1, `isthing` (per class,
    index 0 = void is False), `class_to_category` ((C + 1,) int64, entry 0 = 0).
    """

    def __init__(self, categories: Iterable[Category]):
        cats = tuple(sorted(categories, key=lambda c: c.id))
        ids = [c.id for c in cats]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate category ids in {ids}")
        if any(i <= 0 for i in ids):
            raise ValueError(f"category ids must be positive (0 is void), got {ids}")
        self.categories = cats
        self.num_classes = len(cats) + 1
        self.isthing = (False,) + tuple(c.isthing for c in cats)
        self.class_to_category = np.array([0] + ids, dtype=np.int64)
        self._class_of = {c.id: k for k, c in enumerate(cats, start=1)}

    @classmethod
    def from_coco(cls, categories: Sequence[Mapping[str, Any]], source: str = "") -> CategoryMap:
        """Build from a COCO `categories` list (needs `id`, `name`, `isthing`)."""
        try:
            cats = [Category(int(c["id"]), str(c["name"]), bool(c["isthing"])) for c in categories]
        except (KeyError, TypeError) as e:
            raise ValueError(f"{source}: malformed category entry ({e!r})") from None
        return cls(cats)

    def class_of(self, category_id: int) -> int:
        """Contiguous class of a COCO category id; KeyError if unknown."""
        return self._class_of[category_id]

    def __contains__(self, category_id: object) -> bool:
        return category_id in self._class_of

    def to_coco(self) -> list[dict[str, Any]]:
        """The COCO `categories` list (`isthing` as 0/1, as the official files have it)."""
        return [{"id": c.id, "name": c.name, "isthing": int(c.isthing)} for c in self.categories]


# ---------------------------------------------------------------- id PNG encoding


def record_item(rec: PanopticRecord, epoch: int = 0) -> dict[str, Any]:
    """A record as a flat Ray Data row (segments as JSON text)."""
    segs = [
        {"id": s.id, "category_id": s.category_id, "iscrowd": int(s.iscrowd)} for s in rec.segments
    ]
    return {
        "image_id": rec.image_id,
        "image_path": str(rec.image_path),
        "png_path": str(rec.png_path),
        "segments": json.dumps(segs),
        "epoch": epoch,
        "height": rec.height,
        "width": rec.width,
    }


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3 or 4) uint8 -> (H, W) uint32 segment ids R + 256 G + 256^2 B (alpha ignored)."""
    rgb = rgb.astype(np.uint32, copy=False)
    return rgb[..., 0] + (rgb[..., 1] << 8) + (rgb[..., 2] << 16)


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) integer segment ids < 2^24 -> (H, W, 3) uint8 RGB."""
    ids = ids.astype(np.uint32, copy=False)
    return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1).astype(np.uint8)


def read_id_png(png: bytes | str | Path, name: str = "") -> np.ndarray:
    """Decode an RGB(A) panoptic PNG (bytes or path) to (H, W) uint32 segment ids."""
    name = name or (str(png) if isinstance(png, (str, Path)) else "<png bytes>")
    try:
        with Image.open(io.BytesIO(png) if isinstance(png, bytes) else png) as im:
            mode = im.mode
            # Palette/grey PNGs cannot carry 24-bit ids; converting them would invent ids.
            if mode not in ("RGB", "RGBA"):
                raise ValueError(f"{name}: panoptic PNG must be RGB or RGBA, got mode {mode}")
            return rgb_to_id(np.asarray(im))
    except FileNotFoundError:
        raise
    except OSError as e:  # undecodable or truncated file
        raise ValueError(f"{name}: cannot read panoptic PNG ({e})") from None


# ---------------------------------------------------------------- JSON loading


def parse_segments(segments_info: Sequence[Mapping[str, Any]], source: str) -> tuple[Segment, ...]:
    """`segments_info` dicts -> Segments; ValueError naming `source` if a key is missing."""
    out = []
    for k, s in enumerate(segments_info):
        try:
            bbox = tuple(int(v) for v in s.get("bbox", (0, 0, 0, 0)))
            out.append(
                Segment(
                    int(s["id"]),
                    int(s["category_id"]),
                    bool(s.get("iscrowd", 0)),
                    int(s.get("area", 0)),
                    bbox,
                )
            )  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{source}: segments_info[{k}] is malformed ({e!r})") from None
    return tuple(out)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"COCO-panoptic annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise ValueError(f"{path}: missing top-level keys {missing}")
    return data


def _index_images(
    images: Sequence[Mapping[str, Any]], source: Path
) -> dict[int, Mapping[str, Any]]:
    by_id: dict[int, Mapping[str, Any]] = {}
    for k, im in enumerate(images):
        missing = [key for key in ("id", "file_name", "width", "height") if key not in im]
        if missing:
            raise ValueError(f"{source}: images[{k}] lacks keys {missing}")
        if im["id"] in by_id:
            raise ValueError(f"{source}: duplicate image id {im['id']} (images[{k}])")
        by_id[im["id"]] = im
    return by_id


def load_coco_panoptic(root: str | Path, split: str) -> tuple[list[PanopticRecord], CategoryMap]:
    """Read `<root>/annotations/panoptic_<split>.json` into records, in annotation order.

    Images listed without an annotation are left out (panopticapi scores annotations only).
    Raises FileNotFoundError for a missing JSON or folder, ValueError (naming the file) for
    missing keys, duplicate image ids, an annotation of an unknown image, or two
    annotations of one image. Files inside the folders are not opened here.
    """
    root = Path(root)
    json_path = root / "annotations" / f"panoptic_{split}.json"
    return _load_panoptic(
        json_path,
        root / split,
        root / "annotations" / f"panoptic_{split}",
        lambda file_name: root / split / file_name,
    )


def load_cityscapes_panoptic(
    root: str | Path, split: str
) -> tuple[list[PanopticRecord], CategoryMap]:
    """Read the Cityscapes panoptic layout that cityscapesscripts' createPanopticImgs.py
    writes: `gtFine/cityscapes_panoptic_<split>.json` and `gtFine/cityscapes_panoptic_<split>/`
    (COCO-panoptic format; category ids are Cityscapes label ids, image ids are file stems),
    images in `leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`. Errors as load_coco_panoptic.
    """
    root = Path(root)
    gt = root / "gtFine"
    images = root / "leftImg8bit" / split
    return _load_panoptic(
        gt / f"cityscapes_panoptic_{split}.json",
        images,
        gt / f"cityscapes_panoptic_{split}",
        lambda file_name: images / file_name.split("_", 1)[0] / file_name,
    )


def _load_panoptic(
    json_path: Path, image_dir: Path, png_dir: Path, image_path_of: Callable[[str], Path]
) -> tuple[list[PanopticRecord], CategoryMap]:
    data = _read_json(json_path)
    for folder in (image_dir, png_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"panoptic data folder not found: {folder}")
    categories = CategoryMap.from_coco(data["categories"], str(json_path))
    images = _index_images(data["images"], json_path)
    records, seen = [], set()
    for k, ann in enumerate(data["annotations"]):
        missing = [key for key in ("image_id", "file_name", "segments_info") if key not in ann]
        if missing:
            raise ValueError(f"{json_path}: annotations[{k}] lacks keys {missing}")
        image_id = ann["image_id"]
        if image_id not in images:
            raise ValueError(f"{json_path}: annotations[{k}] refers to unknown image id {image_id}")
        if image_id in seen:
            raise ValueError(f"{json_path}: image id {image_id} has more than one annotation")
        seen.add(image_id)
        im = images[image_id]
        records.append(
            PanopticRecord(
                image_id=image_id,
                image_path=image_path_of(im["file_name"]),
                png_path=png_dir / ann["file_name"],
                width=int(im["width"]),
                height=int(im["height"]),
                segments=parse_segments(ann["segments_info"], f"{json_path} image {image_id}"),
            )
        )
    return records, categories


# ---------------------------------------------------------------- label maps


def _segment_table(
    segments: Sequence[Segment], category_map: CategoryMap, crowd: CrowdMode, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted segment ids (S,), their class (S,) and their order in segments_info (S,).

    Crowd segments in 'void' mode get class 0 (later also id 0).
    """
    ids = np.array([s.id for s in segments], dtype=np.int64)
    uniq, counts = np.unique(ids, return_counts=True)
    bad = uniq[(counts > 1) | (uniq <= 0)].tolist()
    if bad:
        raise ValueError(f"{name}: segments_info has duplicate or non-positive segment ids {bad}")
    classes = np.empty(len(segments), dtype=np.int64)
    for k, s in enumerate(segments):
        if s.category_id not in category_map:
            raise ValueError(f"{name}: segment {s.id} has unknown category_id {s.category_id}")
        void = s.iscrowd and crowd == "void"
        classes[k] = 0 if void else category_map.class_of(s.category_id)
    order = np.argsort(ids, kind="stable")
    return ids[order], classes[order], order


def decode_label_map(
    png: bytes | str | Path | np.ndarray,
    segments: Sequence[Segment],
    category_map: CategoryMap,
    *,
    crowd: CrowdMode = "segment",
    max_instances: int | None = None,
    name: str = "",
) -> np.ndarray:
    """Panoptic PNG + its segments -> (H, W, 2) int32 label map (class, instance id).

    `png`: PNG bytes, a path, an (H, W, 3|4) uint8 RGB array or an (H, W) id array.
    Instance ids are 1..N, compact over the segments that have pixels, in segments_info
    order; void pixels (PNG id 0) are (0, 0). `crowd='segment'` (default; the official
    implementation's Cityscapes reader keeps crowd regions as one segment of their class) treats a
    crowd segment like any other; `crowd='void'` maps it to (0, 0).
    `max_instances` counts id 0, so at most `max_instances - 1` segments are allowed.
    Raises ValueError naming `name` and the segment for PNG ids absent from `segments`,
    unknown categories, duplicate ids, or too many segments.
    """
    if crowd not in ("segment", "void"):
        raise ValueError(f"crowd must be 'segment' or 'void', got {crowd!r}")
    name = name or (str(png) if isinstance(png, (str, Path)) else "<panoptic png>")
    ids = _as_id_map(png, name).astype(np.int64)
    keys, classes, order = _segment_table(segments, category_map, crowd, name)
    # Prepend id 0 so void pixels look up like any segment: one searchsorted, no pixel loop.
    keys = np.concatenate([[0], keys])
    pos = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
    unknown = keys[pos] != ids
    if unknown.any():
        bad = np.unique(ids[unknown]).tolist()
        raise ValueError(f"{name}: PNG segment ids {bad} are not in segments_info")
    inst = _compact_instance_ids(pos, classes, order, len(keys))
    if max_instances is not None and inst.max(initial=0) > max_instances - 1:
        raise ValueError(
            f"{name}: {inst.max()} segments, but max_instances={max_instances} "
            f"allows {max_instances - 1}"
        )
    class_lut = np.concatenate([[0], classes])
    return np.stack([class_lut[pos], inst[pos]], axis=-1).astype(np.int32)


def require_present(ids: np.ndarray, segments: Sequence[Segment], name: str) -> None:
    """ValueError naming `name` when a `segments_info` id does not occur in the id map
    (panopticapi rejects such files; a listed segment without pixels is a broken record)."""
    absent = sorted({s.id for s in segments} - set(np.unique(ids).tolist()))
    if absent:
        raise ValueError(f"{name}: segments_info ids {absent} do not occur in the PNG")


def _as_id_map(png: bytes | str | Path | np.ndarray, name: str) -> np.ndarray:
    if not isinstance(png, np.ndarray):
        return read_id_png(png, name)
    if png.ndim == 3 and png.shape[-1] in (3, 4):
        return rgb_to_id(png)
    if png.ndim == 2:
        return png
    raise ValueError(f"{name}: expected (H, W), (H, W, 3) or (H, W, 4) array, got {png.shape}")


def _compact_instance_ids(
    pos: np.ndarray, classes: np.ndarray, order: np.ndarray, n_keys: int
) -> np.ndarray:
    """Instance id per table row (row 0 = void): 1..N over present, non-void segments.

    `pos` (H, W) are table rows per pixel; rows 1.. are segments sorted by id and
    `order` gives their position in segments_info, which fixes the numbering.
    """
    present = np.bincount(pos.ravel(), minlength=n_keys)[1:] > 0
    keep_info = np.zeros(len(order), dtype=bool)
    keep_info[order[present & (classes > 0)]] = True
    ids_info = np.where(keep_info, np.cumsum(keep_info), 0)
    return np.concatenate([[0], ids_info[order]])
