"""One still panoptic scene: 1-3 textured stuff regions, a few shaped things, maybe a
crowd and some VOID pixels. Layout writers (coco.py, cityscapes.py) turn a Scene into
files; the rules that make it learnable live here:
* a thing's class is its shape, a stuff region's class is its texture;
* every segment's colours come from the same distribution whatever its class.
"""

from dataclasses import dataclass, field

import numpy as np

from pix2seqd.platform.synthetic.colours import colour_pair, contrasting_colour
from pix2seqd.platform.synthetic.layout import cluster_masks, line_band, place_shape, stuff_regions
from pix2seqd.platform.synthetic.textures import texture

# Thing diameter as a fraction of the shorter image side.
THING_SIZE = (0.22, 0.45)
CROWD_MEMBER_SIZE = (0.09, 0.13)
# Per-pixel sensor noise (8-bit units), so flat areas are not perfectly flat.
NOISE_SIGMA = 3.0


@dataclass(frozen=True)
class SceneSpec:
    """What a scene may contain.

    things / stuff: tuples of (category_id, look), look being a name from
    shapes.SHAPES (or HELDOUT_SHAPES) / textures.TEXTURES; thing_size: a thing's diameter
    as a fraction of the shorter image side, drawn uniformly in this range.
    """

    things: tuple
    stuff: tuple
    max_things: int = 4
    max_stuff: int = 3
    crowd_prob: float = 0.2
    band_prob: float = 0.2
    border_prob: float = 0.2
    thing_size: tuple[float, float] = THING_SIZE


@dataclass(frozen=True)
class Segment:
    category_id: int
    isthing: bool
    iscrowd: bool = False


@dataclass
class Scene:
    """image: (H, W, 3), float32 while painting, uint8 once make_scene returns;
    index: int32 (H, W), 0 = VOID, k > 0 = segments[k - 1].
    A segment may end up with no pixels (covered or cut off); writers skip those."""

    image: np.ndarray
    index: np.ndarray
    segments: list = field(default_factory=list)

    def paint(self, mask, colour, segment):
        """Paint `mask` (bool (H, W)) in `colour`; a later paint covers earlier ones."""
        self.image[mask] = colour
        if segment is None:
            self.index[mask] = 0
        else:
            self.segments.append(segment)
            self.index[mask] = len(self.segments)


def make_scene(rng, h, w, spec):
    """Draw one scene of size (h, w). Consumes `rng` in a fixed order (deterministic).

    Returns: Scene with a uint8 image.
    """
    scene = Scene(np.zeros((h, w, 3), np.float32), np.zeros((h, w), np.int32))
    unit = max(h, w) / 64.0
    colours = paint_stuff(scene, rng, spec, unit)
    if rng.random() < spec.band_prob:
        # an unlabelled object lying on the background, like COCO's unannotated clutter
        band_colour = contrasting_colour(rng, colours)
        scene.paint(line_band(rng, h, w, rng.uniform(1.0, 2.0) * unit), band_colour, None)
        colours.append(band_colour)
    taken = []
    if rng.random() < spec.crowd_prob:
        paint_crowd(scene, rng, spec, colours, taken)
    for _ in range(rng.integers(1, spec.max_things + 1)):
        paint_thing(scene, rng, spec, colours, taken)
    if rng.random() < spec.border_prob:
        width = max(1, int(round(rng.uniform(1.0, 2.0) * unit)))
        for edge in (np.s_[:width], np.s_[-width:]):
            scene.index[edge, :] = 0
            scene.index[:, edge] = 0
    noise = rng.normal(0.0, NOISE_SIGMA, size=(h, w, 3))
    scene.image = np.clip(np.rint(scene.image + noise), 0, 255).astype(np.uint8)
    return scene


def paint_stuff(scene, rng, spec, unit):
    """Fill the image with 2..max_stuff regions of distinct stuff categories.

    Returns: list of the colours used (float (3,)), for the things to contrast with.
    """
    h, w = scene.index.shape
    n = int(rng.integers(min(2, spec.max_stuff), spec.max_stuff + 1))
    n = min(n, len(spec.stuff))
    regions = stuff_regions(rng, h, w, n)
    colours = []
    for r, k in enumerate(rng.permutation(len(spec.stuff))[:n]):
        category_id, look = spec.stuff[k]
        c1, c2 = colour_pair(rng)
        mask = regions == r
        t = texture(look, h, w, unit, rng)[mask][:, None]
        scene.paint(mask, (1 - t) * c1 + t * c2, Segment(category_id, False))
        colours += [c1, c2]
    return colours


def paint_thing(scene, rng, spec, colours, taken):
    """Place and paint one thing of a random category (skipped when nothing fits)."""
    h, w = scene.index.shape
    category_id, kind = spec.things[rng.integers(len(spec.things))]
    size = rng.uniform(*spec.thing_size) * min(h, w)
    mask = place_shape(rng, h, w, kind, size, taken)
    if mask is None:
        return
    colour = contrasting_colour(rng, colours)
    scene.paint(mask, colour, Segment(category_id, True))
    colours.append(colour)
    taken.append(mask)


def paint_crowd(scene, rng, spec, colours, taken):
    """Paint a cluster of small touching things labelled as one crowd segment."""
    h, w = scene.index.shape
    category_id, kind = spec.things[rng.integers(len(spec.things))]
    members = cluster_masks(rng, h, w, kind, rng.uniform(*CROWD_MEMBER_SIZE) * min(h, w))
    segment = Segment(category_id, True, iscrowd=True)
    scene.segments.append(segment)
    for mask in members:
        colour = contrasting_colour(rng, colours)
        scene.image[mask] = colour
        scene.index[mask] = len(scene.segments)
    taken.append(np.logical_or.reduce(members))
