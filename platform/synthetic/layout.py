"""Where things go: the stuff split of the background, void bands, thing placement."""

import numpy as np

from pix2seqd.platform.synthetic.shapes import shape_mask

# Each stuff region keeps at least this fraction of the image, so that no region is a
# sliver too thin to show its texture.
MIN_REGION_FRACTION = 0.12
# Two things may share at most this fraction of the smaller one ("lightly overlapping").
MAX_OVERLAP = 0.15


def half_plane(rng, h, w):
    """Side of a random straight line through the central half of the image.

    Returns: bool (h, w).
    """
    angle = rng.uniform(0.0, np.pi)
    py, px = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
    y, x = np.ogrid[:h, :w]
    return (y + 0.5 - py) * np.cos(angle) - (x + 0.5 - px) * np.sin(angle) > 0


def line_band(rng, h, w, width):
    """Pixels within width / 2 of a random straight line through the central half.

    Returns: bool (h, w).
    """
    angle = rng.uniform(0.0, np.pi)
    py, px = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
    y, x = np.ogrid[:h, :w]
    dist = (y + 0.5 - py) * np.cos(angle) - (x + 0.5 - px) * np.sin(angle)
    return np.abs(dist) <= width / 2


def stuff_regions(rng, h, w, n, tries=20):
    """Split the image into n (1-3) regions by up to two random lines.

    The second line splits only one side of the first, giving three convex pieces.
    Retries until every region holds MIN_REGION_FRACTION of the pixels (the last try
    is kept if none does; callers drop empty segments).
    Returns: int32 (h, w) with values 0..n-1.
    """
    regions = np.zeros((h, w), np.int32)
    for _ in range(tries if n > 1 else 0):
        first = half_plane(rng, h, w)
        regions = first.astype(np.int32)
        if n == 3:
            regions = np.where(first, 1, np.where(half_plane(rng, h, w), 2, 0))
        counts = np.bincount(regions.ravel(), minlength=n)
        if counts.min() >= MIN_REGION_FRACTION * h * w:
            break
    return regions.astype(np.int32)


def overlaps_too_much(mask, taken):
    """Whether `mask` covers more than MAX_OVERLAP of itself or of any mask in `taken`."""
    area = mask.sum()
    for other in taken:
        inter = np.logical_and(mask, other).sum()
        if inter > MAX_OVERLAP * min(area, other.sum()):
            return True
    return False


def place_shape(rng, h, w, kind, size, taken, tries=30):
    """A shape of diameter ~`size` px fully inside the image, avoiding `taken` masks.

    Returns: bool (h, w), or None when no position fits within `tries`.
    """
    ry, rx = size / 2 * rng.uniform(0.88, 1.12, size=2)
    flip = bool(rng.random() < 0.5)
    for _ in range(tries):
        cy = rng.uniform(ry, h - ry)
        cx = rng.uniform(rx, w - rx)
        mask = shape_mask(kind, h, w, cy, cx, ry, rx, flip)
        if mask.any() and not overlaps_too_much(mask, taken):
            return mask
    return None


def cluster_masks(rng, h, w, kind, member_size):
    """A crowd: a 2-3 x 2-3 grid of small touching shapes of one kind.

    Members sit 0.8 diameters apart so neighbours touch, like a group of people that is
    labelled as one segment. Returns: list of bool (h, w), one per member.
    """
    rows, cols = rng.integers(2, 4, size=2)
    pitch = 0.8 * member_size
    extent_y = (rows - 1) * pitch + member_size
    extent_x = (cols - 1) * pitch + member_size
    top = rng.uniform(0, max(h - extent_y, 0))
    left = rng.uniform(0, max(w - extent_x, 0))
    members = []
    for r in range(rows):
        for c in range(cols):
            jy, jx = rng.uniform(-0.1, 0.1, size=2) * member_size
            cy = top + member_size / 2 + r * pitch + jy
            cx = left + member_size / 2 + c * pitch + jx
            members.append(shape_mask(kind, h, w, cy, cx, member_size / 2, member_size / 2))
    return members
