"""Cityscapes-panoptic layout writer, as cityscapesscripts' createPanopticImgs.py leaves it:

    leftImg8bit/{split}/<city>/<city>_<seq:06d>_<frame:06d>_leftImg8bit.png
    gtFine/{split}/<city>/<stem>_gtFine_{labelIds,instanceIds}.png   (the script's input)
    gtFine/cityscapes_panoptic_{split}.json
    gtFine/cityscapes_panoptic_{split}/<stem>_gtFine_panoptic.png     (RGB segment ids)

Segment ids follow cityscapesscripts: stuff id = label id; thing instance id =
label id * 1000 + instance index (from 0); thing pixels without an instance (a crowd)
id = label id with iscrowd 1; VOID = 0. Image ids are the file stems (strings).
"""

from pathlib import Path

import numpy as np

from pix2seqd.platform.synthetic.files import (
    ids_to_rgb,
    rng_for,
    save_png,
    segment_stats,
    write_json,
)
from pix2seqd.platform.synthetic.scene import SceneSpec, make_scene

# The 19 evaluated labels of cityscapesscripts/helpers/labels.py:
# (id, name, category, hasInstances, color).
CITYSCAPES_LABELS = (
    (7, "road", "flat", 0, (128, 64, 128)),
    (8, "sidewalk", "flat", 0, (244, 35, 232)),
    (11, "building", "construction", 0, (70, 70, 70)),
    (12, "wall", "construction", 0, (102, 102, 156)),
    (13, "fence", "construction", 0, (190, 153, 153)),
    (17, "pole", "object", 0, (153, 153, 153)),
    (19, "traffic light", "object", 0, (250, 170, 30)),
    (20, "traffic sign", "object", 0, (220, 220, 0)),
    (21, "vegetation", "nature", 0, (107, 142, 35)),
    (22, "terrain", "nature", 0, (152, 251, 152)),
    (23, "sky", "sky", 0, (70, 130, 180)),
    (24, "person", "human", 1, (220, 20, 60)),
    (25, "rider", "human", 1, (255, 0, 0)),
    (26, "car", "vehicle", 1, (0, 0, 142)),
    (27, "truck", "vehicle", 1, (0, 0, 70)),
    (28, "bus", "vehicle", 1, (0, 60, 100)),
    (31, "train", "vehicle", 1, (0, 80, 100)),
    (32, "motorcycle", "vehicle", 1, (0, 0, 230)),
    (33, "bicycle", "vehicle", 1, (119, 11, 32)),
)
# The labels the generator draws, each with the look that defines it.
CITYSCAPES_LOOKS = {
    "road": "horizontal_stripes",
    "sidewalk": "checkerboard",
    "building": "vertical_stripes",
    "vegetation": "blotches",
    "sky": "smooth",
    "person": "cross",
    "rider": "triangle",
    "car": "square",
    "bicycle": "disc",
}
CITIES = {"train": ("aachen", "bochum", "bremen"), "val": ("frankfurt", "lindau", "munster")}
# Cityscapes' fine annotations are the 20th frame of each 30-frame snippet.
FRAME = 19


def cityscapes_categories():
    """The JSON categories, as cityscapesscripts writes them (label ids, not train ids)."""
    return [
        {"id": i, "name": n, "color": list(c), "supercategory": s, "isthing": t}
        for i, n, s, t, c in CITYSCAPES_LABELS
    ]


def make_cityscapes(out, seed, n_train, n_val, min_size=64, max_size=96):
    """Write a synthetic Cityscapes-panoptic data set under `out`; byte-identical for
    equal args. Images are spread over three cities per split. Returns: Path(out)."""
    out = Path(out)
    categories = cityscapes_categories()
    ids = {c["name"]: c["id"] for c in categories}
    things = tuple((ids[n], CITYSCAPES_LOOKS[n]) for n in ("person", "rider", "car", "bicycle"))
    stuff = tuple(
        (ids[n], CITYSCAPES_LOOKS[n]) for n in ("road", "sidewalk", "building", "vegetation", "sky")
    )
    spec = SceneSpec(things=things, stuff=stuff)
    for split, count in (("train", n_train), ("val", n_val)):
        entries = [
            write_cityscapes_image(out, split, index, seed, min_size, max_size, spec)
            for index in range(count)
        ]
        write_json(
            out / "gtFine" / f"cityscapes_panoptic_{split}.json",
            {
                "images": [e[0] for e in entries],
                "annotations": [e[1] for e in entries],
                "categories": categories,
            },
            sort_keys=True,
            indent=4,
        )
    return out


def write_cityscapes_image(out, split, index, seed, min_size, max_size, spec):
    """Draw and write one image with its label, instance and panoptic PNGs.

    Returns: (images entry, annotations entry) of the panoptic JSON.
    """
    rng = rng_for(seed, "cityscapes", split, index)
    h, w = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    scene = make_scene(rng, h, w, spec)
    segment_ids = cityscapes_segment_ids(scene)
    id_map = np.concatenate([[0], segment_ids])[scene.index]
    label_map = np.where(id_map >= 1000, id_map // 1000, id_map)
    cities = CITIES[split]
    city = cities[index % len(cities)]
    stem = f"{city}_{index // len(cities):06d}_{FRAME:06d}"
    gt = out / "gtFine" / split / city
    save_png(out / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", scene.image)
    save_png(gt / f"{stem}_gtFine_labelIds.png", label_map.astype(np.uint8))
    save_png(gt / f"{stem}_gtFine_instanceIds.png", id_map.astype(np.uint16))
    panoptic_name = f"{stem}_gtFine_panoptic.png"
    save_png(out / "gtFine" / f"cityscapes_panoptic_{split}" / panoptic_name, ids_to_rgb(id_map))
    segments_info = [
        {
            "id": i,
            "category_id": i // 1000 if i >= 1000 else i,
            "area": area,
            "bbox": bbox,
            "iscrowd": int(i < 1000 and i in _crowd_ids(scene)),
        }
        for i, (area, bbox) in sorted(segment_stats(id_map).items())
    ]
    image = {"id": stem, "width": w, "height": h, "file_name": f"{stem}_leftImg8bit.png"}
    return image, {"image_id": stem, "file_name": panoptic_name, "segments_info": segments_info}


def cityscapes_segment_ids(scene):
    """Cityscapes id of every scene segment; instances numbered per label from 0 in paint
    order, counting only segments that kept pixels. Returns: int64 (n_segments,)."""
    areas = np.bincount(scene.index.ravel(), minlength=len(scene.segments) + 1)[1:]
    counts, ids = {}, []
    for segment, area in zip(scene.segments, areas):
        if segment.isthing and not segment.iscrowd:
            k = counts.get(segment.category_id, 0)
            # a segment left without pixels hands its number on, keeping 0..n-1 dense
            counts[segment.category_id] = k + 1 if area else k
            ids.append(segment.category_id * 1000 + k)
        else:
            ids.append(segment.category_id)
    return np.array(ids, np.int64)


def _crowd_ids(scene):
    return {s.category_id for s in scene.segments if s.iscrowd}
