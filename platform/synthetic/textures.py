"""Stuff textures. A stuff region's class is its texture, never its colours.

A texture is a weight map t in [0, 1]; the region's pixels are (1 - t) * c1 + t * c2 for
a random colour pair, so colour carries no class information. Lengths are given in
`unit` = pixels per pixel of the 64-px-long-side image the model sees, so periods stay
visible (>= 6 px) after that resize whatever the generated size.
"""

import numpy as np

TEXTURES = ("horizontal_stripes", "vertical_stripes", "checkerboard", "smooth", "blotches")


def texture(kind, h, w, unit, rng):
    """Weight map of one texture over the whole image.

    Args: kind in TEXTURES; h, w image size; unit pixels per 64-px-image pixel;
    rng numpy Generator (consumed in a fixed order per kind).
    Returns: float32 (h, w) in [0, 1].
    """
    y, x = np.ogrid[:h, :w]
    if kind in ("horizontal_stripes", "vertical_stripes"):
        return _stripes(kind == "vertical_stripes", y, x, unit, rng)
    if kind == "checkerboard":
        cell = rng.uniform(3.5, 5.0) * unit
        oy, ox = rng.uniform(0, 2 * cell, size=2)
        return ((np.floor((y + oy) / cell) + np.floor((x + ox) / cell)) % 2).astype(np.float32)
    if kind == "smooth":
        angle = rng.uniform(0, 2 * np.pi)
        d = (y - h / 2) * np.sin(angle) + (x - w / 2) * np.cos(angle)
        return (0.5 + d / max(h, w)).clip(0, 1).astype(np.float32)
    if kind == "blotches":
        return _blotches(h, w, unit, rng)
    raise ValueError(f"unknown texture {kind!r}; expected one of {TEXTURES}")


def _stripes(vertical, y, x, unit, rng):
    """Square-wave stripes, period 6-10 units, tilted by at most 8 degrees. Returns (h, w)."""
    period = rng.uniform(6.0, 10.0) * unit
    phase = rng.uniform(0, period)
    tilt = np.deg2rad(rng.uniform(-8, 8))
    along, across = (x, y) if vertical else (y, x)
    d = along * np.cos(tilt) + across * np.sin(tilt) + phase
    return ((d % period) < period / 2).astype(np.float32)


def _blotches(h, w, unit, rng):
    """Blocky two-colour noise on a grid of 4-6 unit cells. Returns (h, w)."""
    cell = max(1, int(round(rng.uniform(4.0, 6.0) * unit)))
    grid = rng.random((h // cell + 2, w // cell + 2)) < 0.5
    big = np.repeat(np.repeat(grid, cell, axis=0), cell, axis=1)
    oy, ox = rng.integers(0, cell, size=2)
    return big[oy : oy + h, ox : ox + w].astype(np.float32)
