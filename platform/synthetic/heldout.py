"""`make_synthetic.py --family heldout`: a COCO-panoptic set unlike the default one, written
to check that settings chosen on the default set (the tiny preset, `data.image_size=auto`)
carry over to data they were not chosen on. It is for evaluation only: nothing in the
project is tuned on it (docs/data_report.md).

How it differs from the default set (coco.py), its rules being the same (a thing's class is
its outline, a stuff region's its texture; colours are drawn alike for every class):
* image sizes: the long side log-uniform in [min_size, max_size] (default 64-640 px), the
  aspect w / h log-uniform in [1/2, 2] (the default set: both sides in 64-96 px);
* things: rings, diamonds, bars and half discs (shapes.HELDOUT_SHAPES), none of the default
  set's outlines, told apart by shape alone; diameters 12-40 % of the shorter side (the
  default set: 22-45 %), so on a 64-pixel canvas most things cover a few mask pixels;
* category ids and names of its own.
"""

from pathlib import Path

import numpy as np

from pix2seqd.platform.synthetic.coco import coco_info, write_coco_scene, write_coco_split
from pix2seqd.platform.synthetic.files import rng_for
from pix2seqd.platform.synthetic.scene import SceneSpec, make_scene
from pix2seqd.platform.synthetic.shapes import HELDOUT_SHAPES
from pix2seqd.platform.synthetic.textures import TEXTURES

THING_SIZE = (0.12, 0.40)
ASPECT = (0.5, 2.0)


def heldout_categories() -> list[dict]:
    """Things (ids 3, 8, 21, 44) then stuff (ids 150-154), names the looks."""
    things = [
        {"id": i, "name": look, "supercategory": "shape", "isthing": 1, "color": [40 * k, 90, 200]}
        for k, (i, look) in enumerate(zip((3, 8, 21, 44), HELDOUT_SHAPES))
    ]
    stuff = [
        {"id": 150 + k, "name": look, "supercategory": "texture", "isthing": 0,
         "color": [90, 40 * k, 60]}
        for k, look in enumerate(TEXTURES)
    ]  # fmt: skip
    return things + stuff


def image_size(rng: np.random.Generator, min_size: int, max_size: int) -> tuple[int, int]:
    """(h, w): the long side and the aspect drawn log-uniformly."""
    long_side = float(np.exp(rng.uniform(np.log(min_size), np.log(max_size))))
    aspect = float(np.exp(rng.uniform(np.log(ASPECT[0]), np.log(ASPECT[1]))))
    short = max(8, int(round(long_side / max(aspect, 1 / aspect))))
    long_px = int(round(long_side))
    return (short, long_px) if aspect >= 1 else (long_px, short)


def make_heldout(out, seed: int, n_train: int, n_val: int, min_size=64, max_size=640) -> Path:
    """Write the held-out family under `out`; byte-identical for equal args. Returns out."""
    out = Path(out)
    categories = heldout_categories()
    spec = SceneSpec(
        things=tuple((c["id"], c["name"]) for c in categories if c["isthing"]),
        stuff=tuple((c["id"], c["name"]) for c in categories if not c["isthing"]),
        thing_size=THING_SIZE,
    )
    for split, count in (("train", n_train), ("val", n_val)):
        entries = []
        for index in range(count):
            rng = rng_for(seed, "heldout", split, index)
            h, w = image_size(rng, min_size, max_size)
            entries.append(write_coco_scene(out, split, index, make_scene(rng, h, w, spec), rng))
        info = coco_info(seed, split, min_size, max_size)
        info["description"] = f"pix2seqd held-out family ({split}): {__doc__.splitlines()[0]}"
        write_coco_split(out, split, entries, categories, info)
    return out
