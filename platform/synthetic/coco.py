"""COCO-panoptic layout writer:

train2017/*.jpg  val2017/*.jpg
annotations/panoptic_{train,val}2017.json
annotations/panoptic_{train,val}2017/*.png   (RGB, id = R + 256 G + 256^2 B, 0 = VOID)
"""

from pathlib import Path

import numpy as np

from pix2seqd.platform.synthetic.files import (
    ids_to_rgb,
    rng_for,
    save_jpeg,
    save_png,
    segment_stats,
    write_json,
)
from pix2seqd.platform.synthetic.scene import SceneSpec, make_scene

# Image ids of the two splits never collide, as in COCO.
IMAGE_ID_BASE = {"train": 0, "val": 1_000_000}


def default_coco_categories():
    """The categories as written to the JSON. The name is the look that defines the class:
    a shape (things) or a texture (stuff). Ids are non-contiguous, stuff after things,
    as in COCO. Returns: list of dicts (id, name, supercategory, isthing, color)."""
    return [
        {"id": 2, "name": "disc", "supercategory": "shape", "isthing": 1, "color": [220, 20, 60]},
        {"id": 5, "name": "square", "supercategory": "shape", "isthing": 1, "color": [0, 0, 142]},
        {
            "id": 9,
            "name": "triangle",
            "supercategory": "shape",
            "isthing": 1,
            "color": [250, 170, 30],
        },
        {"id": 17, "name": "cross", "supercategory": "shape", "isthing": 1, "color": [0, 130, 70]},
        {
            "id": 102,
            "name": "horizontal_stripes",
            "supercategory": "texture",
            "isthing": 0,
            "color": [128, 64, 128],
        },
        {
            "id": 118,
            "name": "vertical_stripes",
            "supercategory": "texture",
            "isthing": 0,
            "color": [70, 70, 70],
        },
        {
            "id": 131,
            "name": "checkerboard",
            "supercategory": "texture",
            "isthing": 0,
            "color": [152, 251, 152],
        },
    ]


def coco_scene_spec(categories):
    """SceneSpec whose looks are the category names."""
    things = tuple((c["id"], c["name"]) for c in categories if c["isthing"])
    stuff = tuple((c["id"], c["name"]) for c in categories if not c["isthing"])
    return SceneSpec(things=things, stuff=stuff)


def make_coco(out, seed, n_train, n_val, min_size=64, max_size=96):
    """Write a synthetic COCO-panoptic data set under `out`; byte-identical for equal args.

    Image sides are drawn independently in [min_size, max_size]. Returns: Path(out).
    """
    out = Path(out)
    categories = default_coco_categories()
    spec = coco_scene_spec(categories)
    for split, count in (("train", n_train), ("val", n_val)):
        entries = [
            write_coco_image(out, split, index, seed, min_size, max_size, spec)
            for index in range(count)
        ]
        write_coco_split(
            out, split, entries, categories, coco_info(seed, split, min_size, max_size)
        )
    return out


def write_coco_split(out, split, entries, categories, info):
    """Write `annotations/panoptic_{split}2017.json`.

    entries: (images entry, annotations entry) pairs, as write_coco_scene returns them.
    """
    write_json(
        out / "annotations" / f"panoptic_{split}2017.json",
        {
            "info": info,
            "licenses": [{"id": 1, "name": "CC0 1.0", "url": ""}],
            "images": [image for image, _ in entries],
            "annotations": [annotation for _, annotation in entries],
            "categories": categories,
        },
    )


def write_coco_image(out, split, index, seed, min_size, max_size, spec):
    """Draw and write one image and its panoptic PNG.

    Returns: (images entry, annotations entry) of the JSON.
    """
    rng = rng_for(seed, "coco", split, index)
    h, w = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    scene = make_scene(rng, h, w, spec)
    return write_coco_scene(out, split, index, scene, rng)


def write_coco_scene(out, split, index, scene, rng, jpeg_mode="RGB"):
    """Write a drawn scene as image `index` of `split`: its JPEG (stored in PIL mode
    `jpeg_mode`), its panoptic PNG, and random segment ids drawn from `rng`.

    Returns: (images entry, annotations entry) of the JSON.
    """
    h, w = scene.index.shape
    # random 24-bit ids, like panopticapi's colour-derived ones: readers must decode all
    # three channels
    ids = _distinct_ids(rng, len(scene.segments))
    id_map = np.concatenate([[0], ids])[scene.index]
    stats = segment_stats(id_map)
    segments_info = [
        {
            "id": int(i),
            "category_id": s.category_id,
            "area": stats[i][0],
            "bbox": stats[i][1],
            "iscrowd": int(s.iscrowd),
        }
        for i, s in zip(ids.tolist(), scene.segments)
        if i in stats
    ]
    image_id = IMAGE_ID_BASE[split] + index + 1
    stem = f"{image_id:012d}"
    save_jpeg(out / f"{split}2017" / f"{stem}.jpg", scene.image, jpeg_mode)
    save_png(out / "annotations" / f"panoptic_{split}2017" / f"{stem}.png", ids_to_rgb(id_map))
    image = {"id": image_id, "file_name": f"{stem}.jpg", "width": w, "height": h, "license": 1}
    annotation = {"image_id": image_id, "file_name": f"{stem}.png", "segments_info": segments_info}
    return image, annotation


def _distinct_ids(rng, n):
    """n distinct ids in [1, 2^24). Returns int64 (n,)."""
    ids = rng.integers(1, 2**24, size=n)
    while len(np.unique(ids)) < n:
        ids = rng.integers(1, 2**24, size=n)
    return ids


def coco_info(seed, split, min_size, max_size):
    """The JSON's `info` entry; `generator` records the arguments."""
    return {
        "description": f"pix2seqd synthetic COCO-panoptic ({split}): shapes are things, "
        "textures are stuff, colours are random",
        "version": "1.0",
        "year": 2017,
        "contributor": "pix2seqd make_synthetic",
        "url": "",
        "date_created": "2017/09/01",
        "generator": {"seed": seed, "min_size": min_size, "max_size": max_size},
    }
