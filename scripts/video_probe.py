"""Where a video checkpoint fails: its first-frame mode against its tracking mode.

For the first clip of every sequence of a split (frames 0, 1, 2), frame 2 is sampled twice:
with no conditioning (all-zero masks, what streaming inference gives frame 0) and with the
ground-truth masks of frames 0 and 1 (a perfect history). Each prints the mean over
objects of the best IoU of the object's mask with one predicted id, on the model's mask
grid, and the foreground IoU. A gap between train and val splits is overfitting; a gap
between the two modes says how much of J&F the first frame costs.

    python scripts/video_probe.py --checkpoint runs:/<video run id> [--davis-root DIR]
        [--split val] [--sequences 16] [--steps 32] [--td 1] [--seed 0]

Default root: the generated DAVIS set. Needs no Ray cluster.
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import torch

from pix2seqd.platform.data.davis import load_davis
from pix2seqd.platform.data.default_data import resolve_data_root
from pix2seqd.platform.data.video_pipeline import ClipDecoder, clip_index
from pix2seqd.platform.evaluation.predict import load_for_inference
from pix2seqd.platform.train.checkpoints import resolve_checkpoint
from pix2seqd.platform.train.step import to_model_inputs


def object_iou(gt: torch.Tensor, pred: torch.Tensor) -> float:
    """gt, pred: int (B, Hm, Wm) ids -> mean over gt objects of the best IoU with one id."""
    scores = []
    for g, p in zip(gt, pred):
        ids = [q for q in p.unique().tolist() if q > 0]
        for a in (v for v in g.unique().tolist() if v > 0):
            obj = g == a
            scores.append(max((((obj & (p == q)).sum() / (obj | (p == q)).sum()).item()
                               for q in ids), default=0.0))
    return float(np.mean(scores)) if scores else float("nan")


def foreground_iou(gt: torch.Tensor, pred: torch.Tensor) -> float:
    return (((gt > 0) & (pred > 0)).sum() / ((gt > 0) | (pred > 0)).sum()).item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--davis-root", default="")
    ap.add_argument("--split", default="val")
    ap.add_argument("--sequences", type=int, default=16)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--td", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model, cfg = load_for_inference(resolve_checkpoint(args.checkpoint))
    # the clip as training reads it, without flip and without still clips
    cfg = replace(cfg, data=replace(cfg.data, hflip=False, still_fraction=0.0))
    videos = load_davis(resolve_data_root(args.davis_root, video=True), args.split)
    clips = clip_index(videos, cfg.model.decoder.cond_frames + 1)
    firsts = [c for c in clips if c[1] == 0][: args.sequences]
    decoder = ClipDecoder(cfg, videos, clips)
    batch = decoder._stack([decoder.example(c, 0) for c in firsts])
    images, masks, cond = to_model_inputs({k: torch.from_numpy(v) for k, v in batch.items()},
                                          "cpu", cfg.data.pad_value)
    gen = torch.Generator().manual_seed(args.seed)
    for name, history in (("no conditioning", torch.zeros_like(cond)), ("ground-truth history", cond)):
        pred = model.sample(images, args.steps, args.td, history, gen)[:, 1]
        print(f"{args.split} {name:>20}: object IoU {object_iou(masks[:, 1], pred):.3f}  "
              f"foreground IoU {foreground_iou(masks[:, 1], pred):.3f}  ({len(firsts)} sequences)")


if __name__ == "__main__":
    main()
