"""Overlay images for people and MLflow: the image, then each id map blended on it, side by
side (training eval: image | ground truth | prediction; predict: image | prediction)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from pix2seqd.platform.data.coco_panoptic import read_id_png
from pix2seqd.platform.data.pipeline import read_rgb


def colorize(ids: np.ndarray) -> np.ndarray:
    """(H, W) segment ids -> (H, W, 3) uint8; a fixed pseudo-random colour per id, 0 black."""
    x = ids.astype(np.uint64) * np.uint64(2654435761) % np.uint64(2**24)
    rgb = np.stack([(x >> np.uint64(s)) & np.uint64(255) for s in (0, 8, 16)], -1).astype(np.uint8)
    rgb[ids == 0] = 0
    return rgb


def overlay_panels(
    image: np.ndarray, id_maps: Sequence[np.ndarray], out: Path, alpha: float = 0.55, scale: int = 2
) -> Path:
    """Write a PNG strip: `image` (H, W, 3) uint8, then every (H, W) id map blended on it."""
    base = image.astype(np.float32)
    panels = [base] + [
        (1 - alpha) * base + alpha * colorize(ids).astype(np.float32) for ids in id_maps
    ]
    strip = np.concatenate(panels, axis=1).clip(0, 255).astype(np.uint8)
    pil = Image.fromarray(strip)
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    out.parent.mkdir(parents=True, exist_ok=True)
    pil.save(out)
    return out


def overlay(
    image_path: str | Path,
    gt_png: str | Path,
    pred_png: str | Path,
    out: Path,
    alpha: float = 0.55,
    scale: int = 2,
) -> Path:
    """Write a 3-panel PNG: the image, GT segments blended on it, predicted segments."""
    return overlay_panels(
        read_rgb(image_path), [read_id_png(gt_png), read_id_png(pred_png)], out, alpha, scale
    )
