"""Thing shapes. A thing's class is its outline, never its colour."""

import numpy as np

SHAPES = ("disc", "square", "triangle", "cross")
# The held-out family's things (heldout.py): outlines none of the default set has.
HELDOUT_SHAPES = ("ring", "diamond", "bar", "half_disc")

# Half-thickness of a cross arm relative to the arm length, thick enough that the arms
# stay visible after the image is shrunk to 64 px and the mask to 32 px.
_CROSS_ARM = 0.36
# A ring's hole as a fraction of its radius; a bar's thickness as a fraction of its length.
_RING_HOLE = 0.55
_BAR_WIDTH = 0.35


def shape_mask(kind, h, w, cy, cx, ry, rx, flip=False):
    """Filled shape centred at (cy, cx) with half-extents (ry, rx), in pixels.

    A triangle points up (down when `flip`); a bar lies horizontally (vertically when
    `flip`); a half disc is the upper half (lower when `flip`), filling its extents. Pixel (i, j) is sampled at its centre
    (i + 0.5, j + 0.5) so shapes are symmetric about their centre.
    Returns: bool (h, w).
    """
    y, x = np.ogrid[:h, :w]
    v = (y + 0.5 - cy) / ry
    u = (x + 0.5 - cx) / rx
    if kind == "disc":
        return u * u + v * v <= 1.0
    if kind == "square":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if kind == "triangle":
        v = -v if flip else v
        return (v <= 1.0) & (np.abs(u) <= (v + 1.0) / 2.0)
    if kind == "cross":
        inside = (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
        return inside & ((np.abs(u) <= _CROSS_ARM) | (np.abs(v) <= _CROSS_ARM))
    if kind == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= _RING_HOLE**2)
    if kind == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if kind == "bar":
        along, across = (v, u) if flip else (u, v)
        return (np.abs(along) <= 1.0) & (np.abs(across) <= _BAR_WIDTH)
    if kind == "half_disc":
        v = -v if flip else v
        # a disc of radii (2 ry, rx) centred on the extents' bottom edge, its upper half
        return (u * u + ((1.0 - v) / 2.0) ** 2 <= 1.0) & (v <= 1.0)
    raise ValueError(f"unknown shape {kind!r}; expected one of {SHAPES + HELDOUT_SHAPES}")
