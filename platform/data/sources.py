"""Which reader serves `data.dataset`: one entry point for the panoptic image layouts."""

from __future__ import annotations

from pathlib import Path

from pix2seqd.platform.config import DatasetKind
from pix2seqd.platform.data.coco_panoptic import (
    CategoryMap,
    PanopticRecord,
    load_cityscapes_panoptic,
    load_coco_panoptic,
)


def load_panoptic_split(
    kind: DatasetKind | str, root: str | Path, split: str
) -> tuple[list[PanopticRecord], CategoryMap]:
    """Records and categories of one split of a COCO or Cityscapes panoptic layout."""
    kind = DatasetKind(kind)
    if kind is DatasetKind.COCO:
        return load_coco_panoptic(root, split)
    if kind is DatasetKind.CITYSCAPES:
        return load_cityscapes_panoptic(root, split)
    raise ValueError(
        f"data.dataset={kind.value!r} is a video data set; "
        "panoptic image readers serve 'coco' and 'cityscapes'"
    )


def gt_location(kind: DatasetKind | str, root: str | Path, split: str) -> tuple[Path, Path]:
    """(panoptic JSON, PNG folder) of a split: what PQ scoring compares predictions with."""
    root, kind = Path(root), DatasetKind(kind)
    if kind is DatasetKind.CITYSCAPES:
        gt = root / "gtFine"
        return gt / f"cityscapes_panoptic_{split}.json", gt / f"cityscapes_panoptic_{split}"
    return (
        root / "annotations" / f"panoptic_{split}.json",
        root / "annotations" / f"panoptic_{split}",
    )
