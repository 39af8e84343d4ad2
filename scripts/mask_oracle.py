"""The upper bound a canvas and mask stride put on PQ (COCO-panoptic layout) or J&F (DAVIS
layout): the val ground truth is sent through the model's geometry as if it were a
prediction (fitted to the square canvas as evaluation fits images, nearest to the mask
size, back to the original size with `models/postprocess.to_original`; for PQ also the
majority vote and min_pixels of prediction) and scored with the project's evaluators.
What it loses is what no model at that geometry can draw.

    python scripts/mask_oracle.py --data-root DIR [--split val2017] --canvas 64 128 \
        --stride 4 [--min-pixels 10]
    python scripts/mask_oracle.py --davis --data-root DIR [--split val] --canvas 64 --stride 2

Prints one line per (canvas, stride): PQ all / things / stuff and PQ per category id, or
J&F (J / F).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pix2seqd.models.postprocess import majority_vote, to_original
from pix2seqd.platform.data.coco_panoptic import decode_label_map, load_coco_panoptic
from pix2seqd.platform.data.davis import load_davis
from pix2seqd.platform.data.transforms import eval_transform
from pix2seqd.platform.evaluation.davis_eval import evaluate_davis
from pix2seqd.platform.evaluation.panoptic_io import write_prediction, write_predictions_json
from pix2seqd.platform.evaluation.pq import pq_compute

# ids a geometry may hold: the resolution alone is measured, not the model's id budget
ANY_IDS = 256


def round_trip(label: np.ndarray, canvas: int, stride: int) -> torch.Tensor:
    """(H, W, 2) label -> (2, H, W): to the square canvas, to its mask, back to (H, W)."""
    blank = np.zeros(label.shape[:2] + (3,), np.uint8)
    mask_hw = (canvas // stride, canvas // stride)
    example = eval_transform(blank, (canvas, canvas), mask_hw, label)
    small = torch.from_numpy(example.mask.astype(np.int64)).permute(2, 0, 1)
    unpadded = tuple(int(v) for v in example.hw)
    return to_original(small, (canvas, canvas), unpadded, label.shape[:2])


def oracle_pq(root: Path, split: str, canvas: int, stride: int, min_pixels: int) -> dict:
    """The project's PQ result dict (`pq_compute`) of the ground truth of `split` sent
    through the geometry."""
    records, cmap = load_coco_panoptic(root, split)
    gt = root / "annotations"
    with tempfile.TemporaryDirectory(prefix="mask-oracle-") as tmp:
        out, annotations = Path(tmp), []
        for rec in records:
            label = decode_label_map(rec.png_path, rec.segments, cmap)
            back = round_trip(label, canvas, stride)
            voted = majority_vote(back, cmap.num_classes, ANY_IDS, min_pixels).numpy()
            name = Path(rec.png_path).stem
            annotations.append(write_prediction(voted, cmap, rec.image_id, out, name, layout="2hw"))
        write_predictions_json(out / "pred.json", annotations, cmap)
        return pq_compute(
            gt / f"panoptic_{split}.json", out / "pred.json", gt / f"panoptic_{split}", out
        )


def oracle_jf(root: Path, split: str, canvas: int, stride: int) -> dict:
    """`evaluate_davis`'s result of the ground-truth id PNGs of `split` sent through the
    geometry."""
    with tempfile.TemporaryDirectory(prefix="mask-oracle-") as tmp:
        for video in load_davis(root, split):
            for path in video.masks:
                write_round_trip(Path(path), Path(tmp) / video.name, canvas, stride)
        return evaluate_davis(root, tmp, split)


def write_round_trip(path: Path, folder: Path, canvas: int, stride: int) -> None:
    """One DAVIS id PNG through the geometry, written under `folder` with its palette."""
    png = Image.open(path)
    ids = np.asarray(png).astype(np.int64)
    back = round_trip(np.stack([ids, ids], -1), canvas, stride)[1]
    folder.mkdir(parents=True, exist_ok=True)
    result = Image.fromarray(back.numpy().astype(np.uint8), "P")
    result.putpalette(png.getpalette())
    result.save(folder / path.name)


def report(args: argparse.Namespace, canvas: int, stride: int) -> str:
    if args.davis:
        res = oracle_jf(args.data_root, args.split or "val", canvas, stride)
        return f"J&F {res['J&F-Mean']:.3f} ({res['J-Mean']:.3f} / {res['F-Mean']:.3f})"
    res = oracle_pq(args.data_root, args.split or "val2017", canvas, stride, args.min_pixels)
    parts = " / ".join(f"{res[k]['pq']:.3f}" for k in ("All", "Things", "Stuff"))
    per_class = ", ".join(f"{c}: {v['pq']:.3f}" for c, v in res["per_class"].items())
    return f"PQ {parts}; per category {per_class}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--data-root", type=Path, required=True, help="COCO-panoptic layout (DAVIS with --davis)"
    )
    ap.add_argument("--davis", action="store_true", help="DAVIS layout: J&F instead of PQ")
    ap.add_argument("--split", default="", help="default val2017 (COCO), val (DAVIS)")
    ap.add_argument("--canvas", type=int, nargs="+", default=[64])
    ap.add_argument("--stride", type=int, nargs="+", default=[4])
    ap.add_argument("--min-pixels", type=int, default=10)
    args = ap.parse_args()
    for canvas in args.canvas:
        for stride in args.stride:
            print(f"canvas {canvas}, stride {stride}: {report(args, canvas, stride)}")


if __name__ == "__main__":
    main()
