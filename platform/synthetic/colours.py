"""Random colours, drawn from one distribution for every class so colour never tells
the class apart."""

import numpy as np

# Euclidean RGB distance between the two colours of a texture, and between a thing and
# the colours around it: enough contrast that stripes and outlines survive JPEG and the
# 64-px resize, without making any colour class-specific.
TEXTURE_CONTRAST = 90.0
OBJECT_CONTRAST = 70.0


def random_colour(rng):
    """Uniform colour in the RGB cube. Returns float (3,)."""
    return rng.uniform(0.0, 255.0, size=3)


def colour_pair(rng):
    """Two colours at least TEXTURE_CONTRAST apart. Returns two float (3,)."""
    first = random_colour(rng)
    return first, contrasting_colour(rng, [first], TEXTURE_CONTRAST)


def contrasting_colour(rng, avoid, min_dist=OBJECT_CONTRAST, tries=30):
    """Colour at least `min_dist` from every colour in `avoid`.

    Falls back to the best of `tries` draws, so the draw count is bounded.
    Returns float (3,).
    """
    avoid = np.reshape(avoid, (-1, 3))
    best, best_dist = None, -1.0
    for _ in range(tries):
        colour = random_colour(rng)
        dist = np.sqrt(((avoid - colour) ** 2).sum(-1)).min(initial=np.inf)
        if dist >= min_dist:
            return colour
        if dist > best_dist:
            best, best_dist = colour, dist
    return best
