"""Deterministic randomness and file writing shared by the layout writers."""

import json
import zlib

import numpy as np
from PIL import Image
from scipy import ndimage

JPEG_QUALITY = 95


def rng_for(seed, *keys):
    """Generator for one item, seeded from (seed, *keys) only.

    Strings are hashed with CRC-32 (stable across runs, unlike hash()), so every image
    or sequence gets its own stream and the output does not depend on generation order.
    """
    words = [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng([int(seed), *words])


def ids_to_rgb(ids):
    """Segment ids int (H, W) -> uint8 (H, W, 3) with id = R + 256 G + 256^2 B."""
    ids = ids.astype(np.uint32)
    return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], -1).astype(np.uint8)


def rgb_to_ids(rgb):
    """uint8 (H, W, 3) -> int64 (H, W), the inverse of ids_to_rgb."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def segment_stats(ids):
    """Area and COCO bbox of every non-zero id.

    Args: ids int (H, W).
    Returns: {id: (area, [x, y, width, height])}, ints.
    """
    values, inverse = np.unique(ids, return_inverse=True)
    labels = inverse.reshape(ids.shape) + 1
    areas = np.bincount(inverse.ravel(), minlength=len(values))
    stats = {}
    for k, box in enumerate(ndimage.find_objects(labels)):
        if values[k] != 0 and box is not None:
            ys, xs = box
            bbox = [xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start]
            stats[int(values[k])] = (int(areas[k]), [int(v) for v in bbox])
    return stats


def save_jpeg(path, image, mode="RGB"):
    """uint8 (H, W, 3) RGB -> JPEG; no chroma subsampling so thin coloured stripes survive.

    mode: how the file stores the pixels, as PIL names it: 'RGB', 'L' (grayscale, PIL's
    ITU-R 601-2 luma) or 'CMYK' (rgb_to_cmyk; PIL writes an Adobe marker with inverted
    values, as Photoshop does, and reads such files back the same way).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "CMYK":
        picture = Image.fromarray(rgb_to_cmyk(image), "CMYK")
    elif mode in ("RGB", "L"):
        picture = Image.fromarray(image).convert(mode)
    else:
        raise ValueError(f"save_jpeg: mode must be 'RGB', 'L' or 'CMYK', got {mode!r}")
    picture.save(path, quality=JPEG_QUALITY, subsampling=0)


def rgb_to_cmyk(image):
    """uint8 (H, W, 3) RGB -> uint8 (H, W, 4) CMYK with full black generation.

    K = 255 - max(R, G, B), C = 255 (255 - K - R) / (255 - K) (M, Y likewise), so that
    the product rule R = (255 - C)(255 - K) / 255, which PIL's convert('RGB') applies,
    gives the colour back. PIL's own convert('CMYK') writes K = 0, which no real CMYK
    file does.
    """
    rgb = image.astype(np.float64)
    k = 255.0 - rgb.max(axis=-1, keepdims=True)
    white = np.maximum(255.0 - k, 1.0)  # K = 255 is black: C, M, Y are then irrelevant
    cmy = 255.0 * (white - rgb) / white
    return np.rint(np.concatenate([cmy, k], axis=-1)).astype(np.uint8)


def save_png(path, array, palette=None):
    """uint8 (H, W, 3) RGB, uint8 (H, W) ('P' when `palette`, a flat list of 768 ints,
    is given, else 'L') or uint16 (H, W) -> PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if palette is not None:
        image.putpalette(palette)  # turns an 'L' image into 'P', indices unchanged
    image.save(path)


def write_json(path, obj, **dump_kwargs):
    """Write `obj` as JSON; dumps() rather than dump() so the C encoder does the work."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, **dump_kwargs))
