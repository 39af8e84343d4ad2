"""Thing shapes. A thing's class is its outline, never its colour."""

import numpy as np

SHAPES = ("disc", "square", "triangle", "cross")

# Half-thickness of a cross arm relative to the arm length, thick enough that the arms
# stay visible after the image is shrunk to 64 px and the mask to 32 px.
_CROSS_ARM = 0.36


def shape_mask(kind, h, w, cy, cx, ry, rx, flip=False):
    """Filled shape centred at (cy, cx) with half-extents (ry, rx), in pixels.

    A triangle points up (down when `flip`). Pixel (i, j) is sampled at its centre
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
    raise ValueError(f"unknown shape {kind!r}; expected one of {SHAPES}")
