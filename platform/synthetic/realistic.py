"""`make_synthetic.py --realistic`: the generated COCO-panoptic set with the quirks of the
real COCO 2017 panoptic files that the default set lacks.

* Categories: the 133 real ones (coco_categories.py), ids 1..200 with gaps. The generator's
  seven looks are mapped onto seven of them (COCO_ID_OF_LOOK); the other 126 are listed
  and never used, as rare categories are absent from a small real subset.
* The images of the default set of the same arguments, pixel for pixel and PNG for PNG,
  with those category ids.
* After them, in each split that has images, the quirk images of QUIRKS: grayscale and
  CMYK JPEGs, an image with more than 100 segments, images that surely hold a crowd
  region (`iscrowd` = 1), and images without any segment (empty `segments_info`, an
  all-zero PNG).

A quirk image's randomness comes from (seed, split, index) under its own key, so the
ordinary images do not depend on the quirks, and the output is byte-identical for equal
arguments.
"""

import enum
from dataclasses import replace
from pathlib import Path

import numpy as np

from pix2seqd.platform.synthetic.coco import (
    coco_info,
    coco_scene_spec,
    default_coco_categories,
    write_coco_image,
    write_coco_scene,
    write_coco_split,
)
from pix2seqd.platform.synthetic.coco_categories import COCO_ID_OF_LOOK, coco_panoptic_categories
from pix2seqd.platform.synthetic.colours import contrasting_colour
from pix2seqd.platform.synthetic.files import rng_for
from pix2seqd.platform.synthetic.scene import (
    NOISE_SIGMA,
    Scene,
    Segment,
    make_scene,
    paint_stuff,
)
from pix2seqd.platform.synthetic.shapes import shape_mask


class Quirk(str, enum.Enum):
    """A property of real COCO images that the default generated set never has."""

    GRAYSCALE = "grayscale"  # JPEG stored in PIL mode 'L' (one channel)
    CMYK = "cmyk"  # JPEG stored in PIL mode 'CMYK' (four inverted channels, Adobe marker)
    CROWDED = "crowded"  # one stuff region under CROWDED_GRID things: > 100 segments
    CROWD = "crowd"  # an ordinary scene that surely holds a crowd region
    EMPTY = "empty"  # painted but unannotated: empty segments_info, all-zero PNG


# The quirk images of a split, in the order they are written after the ordinary images.
QUIRKS = (
    (Quirk.GRAYSCALE, 2),
    (Quirk.CMYK, 2),
    (Quirk.CROWDED, 1),
    (Quirk.CROWD, 2),
    (Quirk.EMPTY, 2),
)
# Rows x columns of small things in a CROWDED image: 120 things + 1 stuff segment, more
# than COCO's 100-segment mark and than any preset's max_instances - 1.
CROWDED_GRID = (10, 12)
# Smallest cell of that grid, px: the CROWDED image is enlarged to at least 50 x 60 px so
# that every thing keeps its centre pixels (see crowded_scene).
CROWDED_CELL = 5
# A CROWDED thing's half-extent as a fraction of its cell: below 0.5 so things stay in
# their cells (none covers another), at least 0.3 so the centre pixel is inside any shape.
CROWDED_RADIUS = (0.3, 0.5)
JPEG_MODE = {Quirk.GRAYSCALE: "L", Quirk.CMYK: "CMYK"}


def realistic_scene_spec():
    """The default SceneSpec with every look's category id replaced by its COCO id; the
    order of the looks is kept, so scenes are drawn exactly as in the default set."""
    categories = [{**c, "id": COCO_ID_OF_LOOK[c["name"]]} for c in default_coco_categories()]
    return coco_scene_spec(categories)


def make_realistic_coco(out, seed, n_train, n_val, min_size=64, max_size=96):
    """Write the --realistic COCO-panoptic set under `out` (module docstring).

    Each split gets its n ordinary images, then (when n > 0) the quirk images, numbered
    on after them. Returns: (Path(out), {split: {quirk name: [JPEG file names]}}), the
    same record the JSON files keep in info.generator.quirks.
    """
    out = Path(out)
    spec = realistic_scene_spec()
    written = {}
    for split, count in (("train", n_train), ("val", n_val)):
        entries = [
            write_coco_image(out, split, index, seed, min_size, max_size, spec)
            for index in range(count)
        ]
        quirks = {}
        for index, quirk in quirk_plan(count):
            entry = write_quirk_image(out, split, index, seed, min_size, max_size, spec, quirk)
            entries.append(entry)
            quirks.setdefault(quirk.value, []).append(entry[0]["file_name"])
        if quirks:
            written[split] = quirks
        info = coco_info(seed, split, min_size, max_size)
        info["generator"].update(realistic=True, quirks=quirks)
        write_coco_split(out, split, entries, coco_panoptic_categories(), info)
    return out, written


def quirk_plan(count):
    """(image index, Quirk) of the quirk images of a split with `count` ordinary images;
    none when count is 0 (a split asked to be empty stays empty)."""
    if count == 0:
        return []
    kinds = [quirk for quirk, n in QUIRKS for _ in range(n)]
    return list(enumerate(kinds, start=count))


def write_quirk_image(out, split, index, seed, min_size, max_size, spec, quirk):
    """Draw and write quirk image `index` of `split`.

    Returns: (images entry, annotations entry) of the JSON.
    """
    rng = rng_for(seed, "coco-quirk", split, index)
    h, w = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    if quirk is Quirk.CROWDED:
        rows, cols = CROWDED_GRID
        scene = crowded_scene(rng, max(h, rows * CROWDED_CELL), max(w, cols * CROWDED_CELL), spec)
    elif quirk is Quirk.CROWD:
        # no border band, which could cut the crowd away
        scene = make_scene(rng, h, w, replace(spec, crowd_prob=1.0, border_prob=0.0))
    else:
        scene = make_scene(rng, h, w, spec)
    if quirk is Quirk.EMPTY:
        scene.index[:] = 0  # segments without pixels are left out of segments_info
    return write_coco_scene(out, split, index, scene, rng, JPEG_MODE.get(quirk, "RGB"))


def crowded_scene(rng, h, w, spec):
    """One textured stuff region under a CROWDED_GRID of small things of random
    categories, shapes and sizes, one per cell.

    Each thing is centred in its cell with half-extents CROWDED_RADIUS of the cell (cells
    are >= CROWDED_CELL px), so the pixel nearest its centre lies within a third of the
    half-extents and is inside every shape: all rows x cols things keep pixels.
    Returns: Scene with a uint8 image.
    """
    scene = Scene(np.zeros((h, w, 3), np.float32), np.zeros((h, w), np.int32))
    colours = paint_stuff(scene, rng, replace(spec, max_stuff=1), max(h, w) / 64.0)
    rows, cols = CROWDED_GRID
    cell_h, cell_w = h / rows, w / cols
    for r in range(rows):
        for c in range(cols):
            category_id, look = spec.things[rng.integers(len(spec.things))]
            scale = rng.uniform(*CROWDED_RADIUS)
            centre = ((r + 0.5) * cell_h, (c + 0.5) * cell_w)
            mask = shape_mask(look, h, w, *centre, scale * cell_h, scale * cell_w)
            scene.paint(mask, contrasting_colour(rng, colours), Segment(category_id, True))
    noise = rng.normal(0.0, NOISE_SIGMA, size=(h, w, 3))
    scene.image = np.clip(np.rint(scene.image + noise), 0, 255).astype(np.uint8)
    return scene
