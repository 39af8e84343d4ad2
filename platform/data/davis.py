"""DAVIS 2017 reader (unsupervised annotations), the layout of the official release:

    JPEGImages/<res>/<seq>/00000.jpg ...
    Annotations_unsupervised/<res>/<seq>/00000.png ...   (palette PNG: 0 = background,
                                                          k = object k, 255 = void)
    ImageSets/2017/{train,val}.txt                        (one sequence name per line)

For the model a frame's mask is (class, id) with the class channel all zero and id = the
DAVIS object id (docs/model.md, "Video"); void (255) pixels are id 0 and left out of the loss weights'
object counts like background. Every frame must have its annotation (the evaluator
requires it too); a missing or extra file is an error naming the sequence and frame.

A video whose object ids go beyond K-1 (`model.max_instances` = K) keeps the K-1 objects
with the most pixels over all its frames and makes the others void (`kept_objects`): the
choice is per video, so an object has the same id in every frame of a clip. The pre-flight
check (`validate_davis`) and prepare_data both choose this way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

VOID = 255


@dataclass(frozen=True)
class VideoRecord:
    """One sequence: its frames (JPEG) and their annotations (palette PNG), in time order.

    kept_ids: when not empty, the DAVIS object ids training keeps, ascending; the i-th of
    them is training id i + 1 and every other id is void (`kept_objects`). Empty: the ids
    as the annotations have them."""

    name: str
    frames: tuple[Path, ...]
    masks: tuple[Path, ...]
    kept_ids: tuple[int, ...] = ()


def read_split(root: Path, split: str) -> list[str]:
    """Sequence names of ImageSets/2017/<split>.txt, in file order."""
    path = root / "ImageSets" / "2017" / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"DAVIS split file not found: {path}")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: a sequence is listed twice")
    return names


def load_davis(root: str | Path, split: str, resolution: str = "480p") -> list[VideoRecord]:
    """Records of the sequences of `split`. Files are listed, not opened.

    Raises FileNotFoundError for a missing split file or sequence folder, ValueError when a
    sequence has no frames or its frames and annotations do not pair up one to one.
    """
    root = Path(root)
    records = []
    for name in read_split(root, split):
        image_dir = root / "JPEGImages" / resolution / name
        mask_dir = root / "Annotations_unsupervised" / resolution / name
        for folder in (image_dir, mask_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"DAVIS sequence {name!r}: folder not found: {folder}")
        frames = sorted(image_dir.glob("*.jpg"))
        masks = sorted(mask_dir.glob("*.png"))
        if not frames:
            raise ValueError(f"DAVIS sequence {name!r}: no frames in {image_dir}")
        stems, mask_stems = [f.stem for f in frames], [m.stem for m in masks]
        if stems != mask_stems:
            missing = sorted(set(stems) - set(mask_stems))
            extra = sorted(set(mask_stems) - set(stems))
            raise ValueError(
                f"DAVIS sequence {name!r}: frames without annotation {missing}, "
                f"annotations without frame {extra} (in {mask_dir})"
            )
        records.append(VideoRecord(name, tuple(frames), tuple(masks)))
    return records


def read_davis_mask(path: str | Path) -> np.ndarray:
    """Palette PNG -> uint8 (H, W) object ids (0 background, 255 void). A PNG that is not
    a palette or greyscale image is an error: its values would not be object ids."""
    with Image.open(path) as im:
        if im.mode not in ("P", "L"):
            raise ValueError(f"{path}: DAVIS annotation must be a palette PNG, got mode {im.mode}")
        return np.asarray(im, dtype=np.uint8).copy()


def davis_label_map(ids: np.ndarray, max_instances: int, name: str = "") -> np.ndarray:
    """Object ids (H, W) -> (H, W, 2) int64 (class 0, id), void -> id 0. More objects than
    K−1 cannot be represented and are an error naming the frame."""
    ids = np.where(ids == VOID, 0, ids).astype(np.int64)
    if ids.max(initial=0) > max_instances - 1:
        raise ValueError(
            f"{name}: object id {ids.max()} but max_instances={max_instances} "
            f"allows ids up to {max_instances - 1}"
        )
    return np.stack([np.zeros_like(ids), ids], axis=-1)


def kept_objects(areas: Mapping[int, int], max_instances: int) -> tuple[int, ...]:
    """The object ids a video keeps given each id's pixels over all its frames: () when every
    id is at most K-1 (ids as they are); else the K-1 largest objects (ties: the lower id),
    ascending, which `id_table` renumbers 1.. in that order."""
    if max(areas, default=0) <= max_instances - 1:
        return ()
    largest = sorted(areas, key=lambda i: (-areas[i], i))[: max_instances - 1]
    return tuple(sorted(largest))


def id_table(kept_ids: tuple[int, ...]) -> np.ndarray:
    """(256,) uint8: DAVIS id -> the id training reads. Empty `kept_ids`: the identity;
    otherwise kept ids -> 1..n in order, background stays 0, every other id -> VOID."""
    if not kept_ids:
        return np.arange(256, dtype=np.uint8)
    table = np.full(256, VOID, np.uint8)
    table[0] = 0
    table[list(kept_ids)] = np.arange(1, len(kept_ids) + 1)
    return table
