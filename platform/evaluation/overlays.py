"""Overlay images for MLflow: image | ground truth | prediction, side by side."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pix2seqd.platform.data.coco_panoptic import read_id_png


def colorize(ids: np.ndarray) -> np.ndarray:
    """(H, W) segment ids -> (H, W, 3) uint8; a fixed pseudo-random colour per id, 0 black."""
    x = ids.astype(np.uint64) * np.uint64(2654435761) % np.uint64(2**24)
    rgb = np.stack([(x >> np.uint64(s)) & np.uint64(255) for s in (0, 8, 16)], -1).astype(np.uint8)
    rgb[ids == 0] = 0
    return rgb


def overlay(image_path: str | Path, gt_png: str | Path, pred_png: str | Path, out: Path,
            alpha: float = 0.55, scale: int = 2) -> Path:
    """Write a 3-panel PNG: the image, GT segments blended on it, predicted segments."""
    with Image.open(image_path) as im:
        image = np.asarray(im.convert("RGB")).astype(np.float32)
    panels = [image]
    for png in (gt_png, pred_png):
        seg = colorize(read_id_png(png)).astype(np.float32)
        panels.append((1 - alpha) * image + alpha * seg)
    strip = np.concatenate(panels, axis=1).clip(0, 255).astype(np.uint8)
    pil = Image.fromarray(strip)
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    out.parent.mkdir(parents=True, exist_ok=True)
    pil.save(out)
    return out
