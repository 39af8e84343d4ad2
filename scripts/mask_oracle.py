"""Upper bound that the mask resolution puts on PQ (COCO layout) or J&F (DAVIS layout):
the ground truth of the val split is sent through the model's geometry (resize to the
canvas, nearest to the mask size, back to the original size; majority vote and min_pixels
as in prediction) and scored like a prediction.

    python scripts/mask_oracle.py coco  [--root DIR] [--image-size 64] [--mask 16 32]
    python scripts/mask_oracle.py davis [--root DIR] [--image-size 64] [--mask 16 32]

Default roots: the generated data sets (made once, cached).
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
from pix2seqd.platform.data.default_data import default_coco_root, default_davis_root
from pix2seqd.platform.data.transforms import eval_transform
from pix2seqd.platform.evaluation.davis_eval import evaluate_davis
from pix2seqd.platform.evaluation.panoptic_io import write_prediction, write_predictions_json
from pix2seqd.platform.evaluation.pq import pq_compute


def round_trip(label: np.ndarray, size: int, mask: int) -> torch.Tensor:
    """(H, W, 2) label -> (2, H, W) after the canvas / mask-size / original-size round trip."""
    ex = eval_transform(np.zeros(label.shape[:2] + (3,), np.uint8), size, mask, label)
    pred = torch.from_numpy(ex.mask.astype(np.int64)).permute(2, 0, 1)
    return to_original(pred, (size, size), tuple(int(v) for v in ex.hw), label.shape[:2])


def coco_oracle(root: Path, size: int, mask: int, min_pixels: int) -> dict:
    records, cmap = load_coco_panoptic(root, "val2017")
    out = Path(tempfile.mkdtemp(prefix="oracle-"))
    anns = []
    for rec in records:
        label = decode_label_map(rec.png_path, rec.segments, cmap)
        full = majority_vote(round_trip(label, size, mask), cmap.num_classes, 256, min_pixels)
        anns.append(write_prediction(full.numpy(), cmap, rec.image_id, out, Path(rec.png_path).stem,
                                     layout="2hw"))
    write_predictions_json(out / "pred.json", anns, cmap)
    gt = root / "annotations"
    res = pq_compute(gt / "panoptic_val2017.json", out / "pred.json", gt / "panoptic_val2017", out)
    return {k: round(res[k]["pq"], 3) for k in ("All", "Things", "Stuff")}


def davis_oracle(root: Path, size: int, mask: int) -> dict:
    out = Path(tempfile.mkdtemp(prefix="oracle-"))
    for video in load_davis(root, "val"):
        for path in video.masks:
            im = Image.open(path)
            ids = np.asarray(im).astype(np.int64)
            back = round_trip(np.stack([ids, ids], -1), size, mask)[1].numpy().astype(np.uint8)
            target = out / video.name / Path(str(path)).name
            target.parent.mkdir(parents=True, exist_ok=True)
            png = Image.fromarray(back, "P")
            png.putpalette(im.getpalette())
            png.save(target)
    res = evaluate_davis(root, out, "val")
    return {k: round(res[k], 3) for k in ("J&F-Mean", "J-Mean", "F-Mean")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layout", choices=("coco", "davis"))
    parser.add_argument("--root", default="")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--mask", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--min-pixels", type=int, default=10)
    args = parser.parse_args()
    for mask in args.mask:
        if args.layout == "coco":
            root = Path(args.root) if args.root else default_coco_root()
            print(f"mask {mask}: PQ", coco_oracle(root, args.image_size, mask, args.min_pixels))
        else:
            root = Path(args.root) if args.root else default_davis_root()
            print(f"mask {mask}: J&F", davis_oracle(root, args.image_size, mask))


if __name__ == "__main__":
    main()
