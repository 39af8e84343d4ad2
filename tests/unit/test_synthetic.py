"""The synthetic data sets: official layouts, consistent ids, determinism, and the
property that makes them learnable (class from shape / texture, not from colour)."""

import filecmp
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from pix2seqd.platform.synthetic.cityscapes import make_cityscapes
from pix2seqd.platform.synthetic.coco import default_coco_categories, make_coco
from pix2seqd.platform.synthetic.davis import make_davis

REPO = Path(__file__).resolve().parents[2]
MIN_SIZE, MAX_SIZE = 48, 80


def read_ids(path):
    """RGB panoptic PNG -> int64 (H, W), id = R + 256 G + 256^2 B."""
    rgb = np.array(Image.open(path).convert("RGB")).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def tree_files(root):
    return sorted(p.relative_to(root) for p in Path(root).rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    make_coco(root, seed=7, n_train=60, n_val=6, min_size=MIN_SIZE, max_size=MAX_SIZE)
    return root


def load_split(root, split):
    return json.loads((root / "annotations" / f"panoptic_{split}2017.json").read_text())


def segments_with_pixels(root, split):
    """Yields (segment, bool mask (H, W), uint8 image (H, W, 3)) for every segment."""
    data = load_split(root, split)
    for image, ann in zip(data["images"], data["annotations"]):
        rgb = np.array(Image.open(root / f"{split}2017" / image["file_name"]))
        ids = read_ids(root / "annotations" / f"panoptic_{split}2017" / ann["file_name"])
        for segment in ann["segments_info"]:
            yield segment, ids == segment["id"], rgb


# ---------------------------------------------------------------- COCO panoptic layout


def test_coco_layout_files(coco):
    for split, count in (("train", 60), ("val", 6)):
        data = load_split(coco, split)
        assert len(data["images"]) == len(data["annotations"]) == count
        for image, ann in zip(data["images"], data["annotations"]):
            assert image["id"] == ann["image_id"]
            assert (coco / f"{split}2017" / image["file_name"]).is_file()
            assert (coco / "annotations" / f"panoptic_{split}2017" / ann["file_name"]).is_file()
        assert len(list((coco / f"{split}2017").glob("*.jpg"))) == count


def test_coco_json_schema(coco):
    data = load_split(coco, "train")
    assert {"info", "licenses", "images", "annotations", "categories"} <= set(data)
    assert {"id", "file_name", "width", "height"} <= set(data["images"][0])
    assert {"image_id", "file_name", "segments_info"} <= set(data["annotations"][0])
    for ann in data["annotations"]:
        for s in ann["segments_info"]:
            assert set(s) == {"id", "category_id", "area", "bbox", "iscrowd"}
    for c in data["categories"]:
        assert set(c) == {"id", "name", "supercategory", "isthing", "color"}
    assert data["categories"] == default_coco_categories()


def test_coco_png_ids_match_segments_info(coco):
    for split in ("train", "val"):
        data = load_split(coco, split)
        for image, ann in zip(data["images"], data["annotations"]):
            ids = read_ids(coco / "annotations" / f"panoptic_{split}2017" / ann["file_name"])
            assert ids.shape == (image["height"], image["width"])
            listed = {s["id"]: s for s in ann["segments_info"]}
            assert len(listed) == len(ann["segments_info"])
            assert set(np.unique(ids)) - {0} == set(listed)
            for sid, s in listed.items():
                ys, xs = np.nonzero(ids == sid)
                assert s["area"] == len(ys)
                assert s["bbox"] == [
                    xs.min(),
                    ys.min(),
                    xs.max() - xs.min() + 1,
                    ys.max() - ys.min() + 1,
                ]


def test_coco_categories(coco):
    categories = default_coco_categories()
    ids = sorted(c["id"] for c in categories)
    assert ids != list(range(ids[0], ids[0] + len(ids))), "ids should be non-contiguous"
    assert {c["isthing"] for c in categories} == {0, 1}
    used = {
        s["category_id"]
        for a in load_split(coco, "train")["annotations"]
        for s in a["segments_info"]
    }
    assert used == set(ids), "every category occurs in 60 images"


def test_coco_has_crowd_and_void(coco):
    data = load_split(coco, "train")
    things = {c["id"] for c in data["categories"] if c["isthing"]}
    crowds = [s for a in data["annotations"] for s in a["segments_info"] if s["iscrowd"]]
    assert crowds and all(s["category_id"] in things for s in crowds)
    crowd_images = sum(any(s["iscrowd"] for s in a["segments_info"]) for a in data["annotations"])
    assert crowd_images < len(data["annotations"]) / 2, "crowds are a minority"
    void_images = sum(
        (read_ids(coco / "annotations" / "panoptic_train2017" / a["file_name"]) == 0).any()
        for a in data["annotations"]
    )
    assert 0 < void_images < len(data["annotations"])


def test_coco_image_sizes_vary_within_bounds(coco):
    data = load_split(coco, "train")
    sizes = [(i["height"], i["width"]) for i in data["images"]]
    assert all(MIN_SIZE <= v <= MAX_SIZE for hw in sizes for v in hw)
    assert len({h for h, _ in sizes}) > 5 and len({w for _, w in sizes}) > 5
    for image in data["images"][:10]:
        with Image.open(coco / "train2017" / image["file_name"]) as im:
            assert im.size == (image["width"], image["height"]) and im.mode == "RGB"


# ---------------------------------------------------------------- learnability


def test_colour_alone_does_not_identify_the_class(coco):
    """Nearest-class-mean on a segment's mean RGB is no better than chance + 0.15."""
    feats, labels = [], []
    for segment, mask, rgb in segments_with_pixels(coco, "train"):
        if not segment["iscrowd"]:
            feats.append(rgb[mask].mean(axis=0))
            labels.append(segment["category_id"])
    feats, labels = np.array(feats), np.array(labels)
    classes = np.unique(labels)
    means = np.stack([feats[labels == c].mean(axis=0) for c in classes])
    predicted = classes[np.argmin(((feats[:, None] - means[None]) ** 2).sum(-1), axis=1)]
    accuracy = (predicted == labels).mean()
    chance = np.bincount(np.searchsorted(classes, labels)).max() / len(labels)
    assert len(labels) > 200
    assert accuracy <= chance + 0.15, (accuracy, chance)


def test_shape_separates_things(coco):
    """Fill ratio of the bbox: squares ~1, triangles ~0.5, whatever their colour."""
    names = {c["id"]: c["name"] for c in default_coco_categories()}
    ratios = {"square": [], "triangle": []}
    for segment, _, _ in segments_with_pixels(coco, "train"):
        name = names[segment["category_id"]]
        if name in ratios and not segment["iscrowd"]:
            w, h = segment["bbox"][2:]
            ratios[name].append(segment["area"] / (w * h))
    correct = sum(r > 0.75 for r in ratios["square"]) + sum(r <= 0.75 for r in ratios["triangle"])
    assert min(map(len, ratios.values())) > 10
    assert correct / sum(map(len, ratios.values())) > 0.9


def test_texture_separates_stuff(coco):
    """Horizontal stripes vary along y, vertical stripes along x."""
    names = {c["id"]: c["name"] for c in default_coco_categories()}
    votes = []
    for segment, mask, rgb in segments_with_pixels(coco, "train"):
        name = names[segment["category_id"]]
        if name not in ("horizontal_stripes", "vertical_stripes"):
            continue
        grey = rgb.astype(np.float64).mean(-1)
        inner = ndimage.binary_erosion(mask, iterations=2)
        energy_y = (np.diff(grey, axis=0) ** 2 * (inner[1:] & inner[:-1])).sum()
        energy_x = (np.diff(grey, axis=1) ** 2 * (inner[:, 1:] & inner[:, :-1])).sum()
        votes.append((energy_y > energy_x) == (name == "horizontal_stripes"))
    assert len(votes) > 20 and np.mean(votes) > 0.9


# ---------------------------------------------------------------- determinism and CLI


@pytest.mark.parametrize("make", [make_coco, make_cityscapes, make_davis])
def test_same_arguments_give_identical_bytes(make, tmp_path):
    make(tmp_path / "a", 11, 4, 2, min_size=40, max_size=56)
    make(tmp_path / "b", 11, 4, 2, min_size=40, max_size=56)
    files = tree_files(tmp_path / "a")
    assert files and files == tree_files(tmp_path / "b")
    _, mismatch, errors = filecmp.cmpfiles(
        tmp_path / "a", tmp_path / "b", [str(f) for f in files], shallow=False
    )
    assert not mismatch and not errors
    make(tmp_path / "c", 12, 4, 2, min_size=40, max_size=56)
    _, mismatch, _ = filecmp.cmpfiles(
        tmp_path / "a", tmp_path / "c", [str(f) for f in files], shallow=False
    )
    assert mismatch, "another seed gives other data"


def test_images_do_not_depend_on_split_size(tmp_path):
    make_coco(tmp_path / "a", 5, 3, 1, min_size=40, max_size=56)
    make_coco(tmp_path / "b", 5, 6, 2, min_size=40, max_size=56)
    for name in (
        "train2017/000000000001.jpg",
        "train2017/000000000003.jpg",
        "annotations/panoptic_val2017/000001000001.png",
    ):
        assert filecmp.cmp(tmp_path / "a" / name, tmp_path / "b" / name, shallow=False)


def test_cli_runs_from_any_folder(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "jobs" / "make_synthetic.py"),
            "--out",
            "data",
            "--seed",
            "1",
            "--train",
            "2",
            "--val",
            "1",
            "--min-size",
            "40",
            "--max-size",
            "48",
            "--layout",
            "coco",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["train"] == 2
    assert len(list((tmp_path / "data" / "train2017").glob("*.jpg"))) == 2


# ---------------------------------------------------------------- DAVIS


def test_davis_layout_and_ids(tmp_path):
    make_davis(tmp_path, seed=3, n_train=4, n_val=3, min_size=MIN_SIZE, max_size=MAX_SIZE)
    names = {
        s: (tmp_path / "ImageSets" / "2017" / f"{s}.txt").read_text().split()
        for s in ("train", "val")
    }
    assert len(names["train"]) == 4 and len(names["val"]) == 3
    assert not set(names["train"]) & set(names["val"])
    for seq in names["train"] + names["val"]:
        jpgs = sorted((tmp_path / "JPEGImages" / "480p" / seq).glob("*.jpg"))
        pngs = sorted((tmp_path / "Annotations_unsupervised" / "480p" / seq).glob("*.png"))
        assert (
            [p.stem for p in jpgs]
            == [p.stem for p in pngs]
            == [f"{i:05d}" for i in range(len(jpgs))]
        )
        assert 10 <= len(jpgs) <= 16
        check_davis_sequence(jpgs, pngs)


def check_davis_sequence(jpgs, pngs):
    sizes = {Image.open(p).size for p in jpgs + pngs}
    assert len(sizes) == 1
    assert all(MIN_SIZE <= v <= MAX_SIZE for v in sizes.pop())
    labels = []
    for p in pngs:
        with Image.open(p) as im:
            assert im.mode == "P"
            labels.append(np.array(im))
    present = sorted(set(np.unique(np.stack(labels))) - {0})
    n = len(present)
    assert 1 <= n <= 4 and present == list(range(1, n + 1))
    first = [next(f for f, lab in enumerate(labels) if (lab == k).any()) for k in present]
    assert first == sorted(first), "ids in order of first appearance"
    frame0 = sorted(set(np.unique(labels[0])) - {0})
    assert frame0 == list(range(1, len(frame0) + 1))


# ---------------------------------------------------------------- Cityscapes


def test_cityscapes_layout_and_id_convention(tmp_path):
    make_cityscapes(tmp_path, seed=2, n_train=30, n_val=4, min_size=MIN_SIZE, max_size=MAX_SIZE)
    data = json.loads((tmp_path / "gtFine" / "cityscapes_panoptic_train.json").read_text())
    assert set(data) == {"images", "annotations", "categories"}
    cats = {c["id"]: c for c in data["categories"]}
    assert {cats[7]["name"], cats[23]["name"], cats[26]["name"]} == {"road", "sky", "car"}
    assert cats[7]["isthing"] == 0 and cats[24]["isthing"] == cats[26]["isthing"] == 1
    kinds = set()
    for image, ann in zip(data["images"], data["annotations"]):
        stem = image["id"]
        city = stem.split("_")[0]
        assert re.fullmatch(r"[a-z]+_\d{6}_\d{6}", stem) and ann["image_id"] == stem
        assert image["file_name"] == f"{stem}_leftImg8bit.png"
        assert (tmp_path / "leftImg8bit" / "train" / city / image["file_name"]).is_file()
        assert ann["file_name"] == f"{stem}_gtFine_panoptic.png"
        ids = read_ids(tmp_path / "gtFine" / "cityscapes_panoptic_train" / ann["file_name"])
        instance = np.array(
            Image.open(tmp_path / "gtFine" / "train" / city / f"{stem}_gtFine_instanceIds.png")
        )
        assert (instance == ids).all()
        assert set(np.unique(ids)) - {0} == {s["id"] for s in ann["segments_info"]}
        for s in ann["segments_info"]:
            kinds.add(check_cityscapes_segment(s, cats, ids))
    assert kinds == {"stuff", "thing", "crowd"}


def check_cityscapes_segment(s, cats, ids):
    ys, xs = np.nonzero(ids == s["id"])
    assert s["area"] == len(ys) and s["bbox"][:2] == [xs.min(), ys.min()]
    if not cats[s["category_id"]]["isthing"]:
        assert s["id"] == s["category_id"] and s["iscrowd"] == 0
        return "stuff"
    if s["iscrowd"]:
        assert s["id"] == s["category_id"]
        return "crowd"
    assert s["id"] // 1000 == s["category_id"] and s["id"] % 1000 < 100
    return "thing"


def test_the_held_out_family_is_deterministic_and_unlike_the_default_set(tmp_path):
    from pix2seqd.platform.synthetic.heldout import make_heldout
    from pix2seqd.platform.synthetic.shapes import HELDOUT_SHAPES, SHAPES

    a = make_heldout(tmp_path / "a", 4, 6, 2)
    b = make_heldout(tmp_path / "b", 4, 6, 2)
    assert tree_files(a) == tree_files(b)
    match, mismatch, errors = filecmp.cmpfiles(a, b, tree_files(a), shallow=False)
    assert not mismatch and not errors
    data = json.loads((a / "annotations" / "panoptic_train2017.json").read_text())
    things = [c["name"] for c in data["categories"] if c["isthing"]]
    assert things == list(HELDOUT_SHAPES) and not set(things) & set(SHAPES)
    for im in data["images"]:
        long_side, short = max(im["height"], im["width"]), min(im["height"], im["width"])
        assert 64 <= long_side <= 640 and long_side / short <= 2.0 + 1.0 / short
    for ann in data["annotations"]:  # areas are the PNG's pixel counts
        ids = read_ids(a / "annotations" / "panoptic_train2017" / ann["file_name"])
        for s in ann["segments_info"]:
            assert s["area"] == int((ids == s["id"]).sum())


def test_held_out_shapes():
    from pix2seqd.platform.synthetic.shapes import shape_mask

    ring = shape_mask("ring", 41, 41, 20.5, 20.5, 20, 20)
    assert (
        not ring[20, 20]
        and ring[20, 2]
        and ring.sum() == pytest.approx(np.pi * 400 * (1 - 0.55**2), rel=0.03)
    )
    diamond = shape_mask("diamond", 41, 41, 20.5, 20.5, 20, 20)
    assert diamond.sum() == pytest.approx(2 * 400, rel=0.06) and not diamond[1, 1]
    bar = shape_mask("bar", 41, 41, 20.5, 20.5, 20, 20)
    # 41 columns (|x - 20| <= 20), 15 rows (|y - 20| <= 0.35 * 20)
    assert bar.any(axis=0).sum() == 41 and bar.any(axis=1).sum() == 15
    assert (shape_mask("bar", 41, 41, 20.5, 20.5, 20, 20, flip=True) == bar.T).all()
    half = shape_mask("half_disc", 41, 41, 20.5, 20.5, 20, 20)
    assert half.sum() == pytest.approx(np.pi * 400, rel=0.03)  # half of a disc of radii 40, 20
    assert half[39].sum() > half[1].sum()  # the flat side at the bottom
