"""Per-example augmentation in numpy/PIL, in the official order (docs/model.md,
"Training inputs").

Train: scale jitter -> random crop -> horizontal flip -> colour jitter (image only) ->
pad bottom/right -> nearest resize of the label map to mask size. Before them, when on,
the symmetries of the generated data (`symmetry_augment`; not in the paper). Eval: resize
to the largest size that fits the canvas, pad. Images stay uint8 and padding is applied on the training device
(value 0.3 there), so only the unpadded size `hw` travels with the example.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Example:
    """One transformed example.

    image: (H, W, 3) uint8 on the canvas, zeros outside the valid region; hw: (2,) valid
    height, width; mask: (Hm, Wm, 2) uint8 [class, instance id], 0 outside the valid region.
    """

    image: np.ndarray
    hw: np.ndarray
    mask: np.ndarray


def train_transform(image, label, canvas, mask_hw, scale_range, color_strength, hflip, rng):
    """image (h, w, 3) uint8, label (h, w, 2) int -> Example on a `canvas` (H, W) with masks
    of `mask_hw` (Hm, Wm); randomness from `rng`. At scale 1 the image fits the canvas."""
    (h, w), (H, W) = image.shape[:2], canvas
    s = rng.uniform(*scale_range)
    r = min(s * H / h, s * W / w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    image, label = _resize(image, nh, nw, Image.BILINEAR), _resize_label(label, nh, nw)
    y0 = int(rng.integers(0, max(0, nh - H) + 1))
    x0 = int(rng.integers(0, max(0, nw - W) + 1))
    image, label = image[y0 : y0 + H, x0 : x0 + W], label[y0 : y0 + H, x0 : x0 + W]
    if hflip and rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    if color_strength > 0:
        image = color_jitter(image, color_strength, rng)
    return _pad(image, label, canvas, mask_hw)


def clip_transform(
    image: np.ndarray,
    labels: np.ndarray,
    canvas: tuple[int, int],
    mask_hw: tuple[int, int],
    scale_range: tuple[float, float],
    color_strength: float,
    hflip: bool,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The train transform (docs/model.md, "Training inputs") on a (H, W) canvas, one geometric draw for all frames.

    image (h, w, 3) uint8 of the last frame; labels (h, w, ...) of every frame (e.g. ids
    (h, w, T)). Scale jitter (aspect kept; at s = 1 the frame fits the canvas), crop, flip,
    colour jitter (image only), pad bottom/right (zeros), labels nearest to mask_hw.
    Returns image (H, W, 3) uint8, hw (2,) int32 valid size, labels (Hm, Wm, ...).

    The image is resized bicubic (official video train transforms). The labels' chain of
    nearest-neighbour steps (resize, crop, flip, pad, resize to mask size) is one gather
    with the composed indices: the same result as `_resize_label` step by step,
    without full-resolution intermediates.
    """
    (H, W), (h, w) = canvas, image.shape[:2]
    s = rng.uniform(*scale_range)
    r = min(s * H / h, s * W / w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    y0 = int(rng.integers(0, max(0, nh - H) + 1))
    x0 = int(rng.integers(0, max(0, nw - W) + 1))
    flip = hflip and rng.random() < 0.5
    vh, vw = min(nh, H), min(nw, W)
    image = _resize(image, nh, nw, Image.BICUBIC)[y0 : y0 + vh, x0 : x0 + vw]
    if flip:
        image = image[:, ::-1]
    if color_strength > 0:
        image = color_jitter(image, color_strength, rng)
    out = np.zeros((H, W, 3), np.uint8)
    out[:vh, :vw] = image
    rows, row_ok = _label_index(h, nh, y0, vh, H, mask_hw[0], False)
    cols, col_ok = _label_index(w, nw, x0, vw, W, mask_hw[1], flip)
    lab = labels[rows[:, None], cols[None, :]]
    lab[~(row_ok[:, None] & col_ok[None, :])] = 0
    return out, np.array([vh, vw], np.int32), lab


def _label_index(
    n_src: int, n_resized: int, offset: int, n_valid: int, n_canvas: int, n_mask: int, flip: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Along one axis: mask pixel -> source pixel through resize, crop at `offset`, flip,
    pad to n_canvas and resize to n_mask; and whether it lies in the valid (unpadded) part."""
    c = _nearest(n_canvas, n_mask)
    valid = c < n_valid
    c = np.minimum(c, n_valid - 1)
    if flip:
        c = n_valid - 1 - c
    return _nearest(n_src, n_resized)[offset + c], valid


def _nearest(n_in: int, n_out: int) -> np.ndarray:
    """Nearest-neighbour source index of each of n_out pixels, the pixel-centre convention
    of `_resize_label`."""
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def symmetry_augment(image, labels, vflip, rgb_symmetry, rng):
    """`data.vflip` and `data.rgb_symmetry`, drawn before the train transform (no draws when
    both are off). vflip: rows reversed with p 0.5. rgb_symmetry: one of the 48 symmetries
    of the RGB cube, uniformly (channels permuted, each inverted with p 0.5).
    image (H, W, 3) uint8, labels (H, W, ...) -> contiguous arrays of the same shapes: new
    ones where something was applied; the inputs (maybe cached) are never written."""
    if vflip and rng.random() < 0.5:
        image, labels = image[::-1], labels[::-1]
    if rgb_symmetry:
        image = image[..., rng.permutation(3)]
        image = np.where(rng.random(3) < 0.5, 255 - image, image)  # uint8 stays uint8
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def reduce_to_reach(image, label, canvas, max_scale, method=Image.BILINEAR):
    """A decoded example shrunk to the largest size the train transform can ask of it: the
    size at which it fits `canvas` (H, W) times `max_scale` (the top of the scale jitter).

    image (h, w, 3) uint8, label (h, w, ...) -> the same arrays when they are no larger,
    else image resized with `method` (the train transform's own) and label nearest. The
    train transform resizes by a factor of at most 1 from here, so at a fixed scale the
    example is the one it would make from the full-size arrays, and images far larger than
    the canvas (COCO's 640 px on a 64 to 256 px canvas) are augmented and cached small."""
    (h, w), (H, W) = image.shape[:2], canvas
    r = min(max_scale * H / h, max_scale * W / w)
    if r >= 1:
        return image, label
    # the train transform's own rounding, so that at the top scale it resizes by exactly 1
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    return _resize(image, nh, nw, method), _resize_label(label, nh, nw)


def eval_transform(image, canvas, mask_hw, label=None):
    """Aspect-preserving resize to the largest size that fits the `canvas` (H, W) (on a
    square canvas: the long side), then pad; masks at `mask_hw`. label may be None."""
    (h, w), (H, W) = image.shape[:2], canvas
    r = min(H / h, W / w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    image = _resize(image, nh, nw, Image.BILINEAR)
    label = _resize_label(label, nh, nw) if label is not None else np.zeros((nh, nw, 2), np.int32)
    return _pad(image, label, canvas, mask_hw)


def color_jitter(image, strength, rng):
    """SimCLR-v2 style: with p=0.8 brightness, contrast, saturation (0.8·s) and hue (0.2·s)
    in random order, then grayscale with p=0.2. image (H, W, 3) uint8 -> uint8."""
    x = image.astype(np.float32) / 255.0
    if rng.random() < 0.8:
        ops = [_brightness, _contrast, _saturation, _hue]
        amounts = [0.8 * strength] * 3 + [0.2 * strength]
        for k in rng.permutation(4):
            x = ops[k](x, amounts[k], rng)
    if rng.random() < 0.2:
        x = np.repeat(_gray(x)[..., None], 3, axis=-1)
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def void_smallest(label, max_instances):
    """Keep the K-1 largest segments of a compact-id label map; the rest become void.

    label: (H, W, 2) int (class, compact id 1..N, 0 = null), changed in place.
    Returns: (label, number of segments made void). Pix2Seq-D cannot represent more than
    K-1 segments per image; dropping the smallest loses the least area.
    """
    ids = label[..., 1]
    n = int(ids.max(initial=0))
    if n <= max_instances - 1:
        return label, 0
    area = np.bincount(ids.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-area, kind="stable")  # ties: the lower id stays
    keep = np.zeros(n + 1, bool)
    keep[1 + order[: max_instances - 1]] = True
    new_id = np.zeros(n + 1, ids.dtype)
    new_id[keep] = np.arange(1, max_instances)
    dropped = ~keep[ids]
    label[dropped] = 0
    label[..., 1] = new_id[ids]
    return label, n - (max_instances - 1)


def relabel_random(ids, max_instances, rng):
    """COCO `object_order='random'`: compact ids 1..N -> distinct ids drawn from [1, K-1].

    ids: (...) int with 0 = null. Raises ValueError when N > K - 1 (cannot be represented).
    """
    n = int(ids.max(initial=0))
    if n > max_instances - 1:
        raise ValueError(
            f"{n} segments but model.max_instances={max_instances} allows {max_instances - 1}"
        )
    table = np.zeros(n + 1, np.int64)
    table[1:] = rng.choice(np.arange(1, max_instances), size=n, replace=False)
    return table[ids]


def raster_order_ids(ids):
    """`data.id_order=raster`: non-zero ids renumbered 1..N in the row-major order of their
    first pixel (for (T, H, W) clips: the first frame first), 0 stays 0.

    ids: (...) non-negative int -> same shape and dtype.
    """
    present, first = np.unique(ids.ravel(), return_index=True)
    keep = present > 0
    present, first = present[keep], first[keep]
    table = np.zeros(int(ids.max(initial=0)) + 1, ids.dtype)
    table[present[np.argsort(first)]] = np.arange(1, len(present) + 1)
    return table[ids]


def _pad(image, label, canvas, mask_hw):
    h, w = image.shape[:2]
    padded = np.zeros((*canvas, 3), np.uint8)
    padded[:h, :w] = image
    lab = np.zeros((*canvas, 2), np.int64)
    lab[:h, :w] = label
    if tuple(mask_hw) != tuple(canvas):
        lab = _resize_label(lab, *mask_hw)
    return Example(padded, np.array([h, w], np.int32), lab.astype(np.uint8))


def _resize(image, h, w, method):
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((w, h), method))


def _resize_label(label, h, w):
    """Nearest-neighbour resize with the pixel-centre convention, label (H, W, C)."""
    H, W = label.shape[:2]
    if (H, W) == (h, w):
        return label
    rows = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
    return label[rows[:, None], cols[None, :]]


def _gray(x):
    return x @ np.array([0.299, 0.587, 0.114], np.float32)


def _brightness(x, a, rng):
    return x * rng.uniform(max(0.0, 1 - a), 1 + a)


def _contrast(x, a, rng):
    mean = _gray(x).mean()
    return (x - mean) * rng.uniform(max(0.0, 1 - a), 1 + a) + mean


def _saturation(x, a, rng):
    g = _gray(x)[..., None]
    return (x - g) * rng.uniform(max(0.0, 1 - a), 1 + a) + g


def _hue(x, a, rng):
    # Rotation of the chroma plane in YIQ space: a cheap, linear hue shift.
    theta = rng.uniform(-a, a) * 2 * np.pi
    c, s = np.cos(theta), np.sin(theta)
    to_yiq = np.array(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32
    )
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float32)
    m = np.linalg.inv(to_yiq) @ rot @ to_yiq
    return x @ m.T.astype(np.float32)
