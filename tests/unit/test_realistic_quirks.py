"""`make_synthetic.py --realistic`: each quirk of real COCO (grayscale and CMYK JPEGs, more
than 100 segments, COCO's 133 categories with ids up to 200, crowd regions, images without
segments) read as COCO's own tools read it, decoded for training and scored for PQ."""

from __future__ import annotations

import filecmp
import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_jobs import load_job
from PIL import Image

from pix2seqd.platform.data.coco_panoptic import (
    decode_label_map,
    load_coco_panoptic,
    read_id_png,
    record_item,
)
from pix2seqd.platform.data.pipeline import TrainDecoder, decode_example, read_rgb
from pix2seqd.platform.data.transforms import void_smallest
from pix2seqd.platform.data.validate import check_row, summarise
from pix2seqd.platform.evaluation.pq import pq_compute
from pix2seqd.platform.presets import tiny
from pix2seqd.platform.synthetic.coco import make_coco
from pix2seqd.platform.synthetic.files import rgb_to_cmyk
from pix2seqd.platform.synthetic.realistic import make_realistic_coco
from pix2seqd.platform.train.step import build_model, to_model_inputs

K = 8  # the tiny preset's max_instances: 7 segments per training example at most
# The gaps of COCO's thing ids below 91 (the detection categories dropped from COCO 2014)
THING_GAPS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("realistic")
    _, quirks = make_realistic_coco(root, seed=3, n_train=2, n_val=2, min_size=40, max_size=56)
    return root, quirks


def _split(root, split="val2017"):
    return json.loads((root / "annotations" / f"panoptic_{split}.json").read_text())


def _records(root, quirks, kind, split="val"):
    """(record, annotation dict) of the quirk images of one kind, in JSON order."""
    names = set(quirks[split][kind])
    recs, cmap = load_coco_panoptic(root, f"{split}2017")
    anns = {a["image_id"]: a for a in _split(root, f"{split}2017")["annotations"]}
    return [(r, anns[r.image_id]) for r in recs if r.image_path.name in names], cmap


def _png_ids(root, ann, split="val2017"):
    rgb = np.array(Image.open(root / "annotations" / f"panoptic_{split}" / ann["file_name"]))
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def _load_reference():
    # pytest runs with --import-mode=importlib and tests/ has no __init__.py.
    spec = importlib.util.spec_from_file_location(
        "pq_reference", Path(__file__).with_name("pq_reference.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- the generated set


def test_ordinary_images_are_the_default_sets(data, tmp_path):
    root, _ = data
    default = make_coco(tmp_path / "default", seed=3, n_train=2, n_val=2, min_size=40, max_size=56)
    for split in ("train2017", "val2017"):
        plain, real = _split(default, split), _split(root, split)
        assert real["images"][:2] == plain["images"]
        for name in [im["file_name"] for im in plain["images"]]:
            assert filecmp.cmp(default / split / name, root / split / name, shallow=False)
        look_of = {c["id"]: c["name"] for c in plain["categories"]}
        coco_of = {c["id"]: c["name"] for c in real["categories"]}
        names = {
            "disc": "sports ball",
            "square": "tv",
            "triangle": "kite",
            "cross": "person",
            "horizontal_stripes": "window-blind",
            "vertical_stripes": "curtain",
            "checkerboard": "rug-merged",
        }
        for p, r in zip(plain["annotations"], real["annotations"][:2]):
            assert [s["id"] for s in p["segments_info"]] == [s["id"] for s in r["segments_info"]]
            for ps, rs in zip(p["segments_info"], r["segments_info"]):
                assert names[look_of[ps["category_id"]]] == coco_of[rs["category_id"]]


def test_quirks_are_recorded_and_numbered_after_the_ordinary_images(data):
    root, quirks = data
    for split, base in (("train", 0), ("val", 1_000_000)):
        info = _split(root, f"{split}2017")["info"]["generator"]
        assert info["realistic"] is True and info["quirks"] == quirks[split]
        assert {k: len(v) for k, v in quirks[split].items()} == {
            "grayscale": 2,
            "cmyk": 2,
            "crowded": 1,
            "crowd": 2,
            "empty": 2,
        }
        names = sorted(n for v in quirks[split].values() for n in v)
        assert names == [f"{base + i:012d}.jpg" for i in range(3, 12)]


def test_realistic_output_is_byte_identical_and_empty_splits_stay_empty(data, tmp_path):
    root, _ = data
    _, quirks = make_realistic_coco(tmp_path / "a", 3, 2, 2, 40, 56)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    match, mismatch, errors = filecmp.cmpfiles(root, tmp_path / "a", files, shallow=False)
    assert not mismatch and not errors and len(match) == len(files)
    _, quirks = make_realistic_coco(tmp_path / "b", 3, 0, 1, 40, 56)
    assert set(quirks) == {"val"}
    assert _split(tmp_path / "b", "train2017")["images"] == []


def test_cli_prints_where_the_quirks_are(tmp_path, capsys):
    job = load_job("make_synthetic")
    args = ["--out", str(tmp_path / "r"), "--seed", "3", "--train", "2", "--val", "2"]
    job.main(args + ["--min-size", "40", "--max-size", "56", "--realistic"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["realistic"] is True and printed["train"] == 2
    # 2 ordinary images, 2 grayscale, 2 CMYK, then the crowded one
    assert printed["quirks"]["val"]["crowded"] == ["000001000007.jpg"]
    for split, kinds in printed["quirks"].items():
        for names in kinds.values():
            assert all((tmp_path / "r" / f"{split}2017" / n).is_file() for n in names)
    with pytest.raises(SystemExit):
        job.parse_args(["--out", "x", "--layout", "davis", "--realistic"])
    job.main(["--out", str(tmp_path / "d"), "--train", "1", "--val", "1"])
    assert "quirks" not in json.loads(capsys.readouterr().out)


# ---------------------------------------------------------------- 133 categories, ids 1..200


def test_categories_are_cocos_133_with_their_ids(data):
    root, _ = data
    cats = _split(root)["categories"]
    ids = [c["id"] for c in cats]
    things = [c["id"] for c in cats if c["isthing"] == 1]
    stuff = [c["id"] for c in cats if c["isthing"] == 0]
    assert len(cats) == 133 and len(set(ids)) == 133 and ids == sorted(ids)
    assert len(things) == 80 and set(things) == set(range(1, 91)) - THING_GAPS
    assert len(stuff) == 53 and min(stuff) == 92 and max(stuff) == 200
    assert {c["name"] for c in cats} >= {"person", "toothbrush", "banner", "rug-merged"}
    assert all(set(c) == {"id", "name", "isthing", "supercategory"} for c in cats)


def test_non_contiguous_ids_round_trip_through_the_category_map(data):
    root, quirks = data
    recs, cmap = load_coco_panoptic(root, "val2017")
    assert cmap.num_classes == 134
    # contiguous class = rank of the id among COCO's ids, counted by hand:
    # 37 follows 11 ids of 1..11, 13 of 13..25 and 27, 28, 31..37 (9)
    assert cmap.class_of(1) == 1 and cmap.class_of(37) == 33
    assert cmap.class_of(109) == 86  # 80 things + 92, 93, 95, 100, 107, 109
    assert cmap.class_of(200) == 133
    assert [c["id"] for c in cmap.to_coco()] == [c["id"] for c in _split(root)["categories"]]
    anns = {a["image_id"]: a for a in _split(root)["annotations"]}
    for rec in recs:
        label = decode_label_map(rec.png_path, rec.segments, cmap)
        ids = _png_ids(root, anns[rec.image_id])
        for s in anns[rec.image_id]["segments_info"]:
            assert (cmap.class_to_category[label[..., 0][ids == s["id"]]] == s["category_id"]).all()


# ---------------------------------------------------------------- grayscale and CMYK JPEGs


@pytest.mark.parametrize("kind, mode", [("grayscale", "L"), ("cmyk", "CMYK")])
def test_jpegs_read_as_pil_converts_them_to_rgb(data, kind, mode):
    root, quirks = data
    pairs, cmap = _records(root, quirks, kind)
    assert len(pairs) == 2
    for rec, _ in pairs:
        with Image.open(rec.image_path) as im:
            assert im.mode == mode
            raw = np.asarray(im).astype(np.int64)
            pil = np.asarray(im.convert("RGB"))
        got = read_rgb(rec.image_path)
        assert got.dtype == np.uint8 and got.shape == (rec.height, rec.width, 3)
        np.testing.assert_array_equal(got, pil)
        if mode == "L":
            expected = np.repeat(raw[..., None], 3, axis=-1)
        else:  # the product rule, rounded: (255 - C)(255 - K) / 255 is never an exact x.5
            expected = np.rint((255 - raw[..., :3]) * (255 - raw[..., 3:]) / 255)
        np.testing.assert_array_equal(got, expected)
        image, label = decode_example(record_item(rec), cmap, "segment")  # the training path
        np.testing.assert_array_equal(image, pil)
        assert label.shape[:2] == image.shape[:2]


def test_cmyk_writer_round_trips_through_pils_conversion():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    rgb[0, :3] = [[0, 0, 0], [255, 255, 255], [10, 200, 10]]
    cmyk = rgb_to_cmyk(rgb)
    assert cmyk[0, 0].tolist() == [255, 255, 255, 255] and cmyk[0, 1].tolist() == [0, 0, 0, 0]
    assert cmyk[0, 2, 3] == 55  # K = 255 - max(R, G, B)
    assert (cmyk[..., 3] > 0).mean() > 0.9  # black is generated, unlike PIL's K = 0
    back = np.asarray(Image.fromarray(cmyk, "CMYK").convert("RGB"))
    np.testing.assert_array_equal(back, rgb)


# ---------------------------------------------------------------- more than 100 segments


def _kept_by_area(ann, k):
    """PNG ids of the k - 1 segments training keeps: largest JSON area first, ties in
    segments_info order."""
    order = sorted(enumerate(ann["segments_info"]), key=lambda e: (-e[1]["area"], e[0]))
    return {s["id"] for _, s in order[: k - 1]}


def test_crowded_image_keeps_its_k_minus_1_largest_segments(data):
    root, quirks = data
    [(rec, ann)], cmap = _records(root, quirks, "crowded")
    ids = _png_ids(root, ann)
    assert len(ann["segments_info"]) == 121 == len(np.unique(ids[ids > 0]))
    image, label = decode_example(record_item(rec), cmap, "segment")
    assert label[..., 1].max() == 121
    out, dropped = void_smallest(label.copy(), K)
    assert dropped == 121 - (K - 1)
    kept = np.isin(ids, list(_kept_by_area(ann, K)))
    assert (out[..., 1][kept] > 0).all() and (out[~kept] == 0).all()
    assert len(np.unique(out[..., 1][kept])) == K - 1
    np.testing.assert_array_equal(out[..., 0][kept], label[..., 0][kept])
    check = check_row(record_item(rec), cmap, "segment")
    assert check.problem == "" and check.segments == 121
    assert summarise("val2017", [check], K).voided_segments == 121 - (K - 1)


def _write_prediction(tmp, root, anns, keep_ids):
    """A prediction per GT annotation: its PNG with only `keep_ids` kept, same ids."""
    pred_dir = tmp / "pred"
    pred_dir.mkdir()
    out = []
    for ann in anns:
        ids = np.where(np.isin(_png_ids(root, ann), list(keep_ids)), _png_ids(root, ann), 0)
        rgb = np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], -1).astype(np.uint8)
        Image.fromarray(rgb).save(pred_dir / ann["file_name"])
        segs = [
            {"id": s["id"], "category_id": s["category_id"]}
            for s in ann["segments_info"]
            if s["id"] in keep_ids
        ]
        out.append(
            {"image_id": ann["image_id"], "file_name": ann["file_name"], "segments_info": segs}
        )
    pred_json = tmp / "pred.json"
    pred_json.write_text(json.dumps({"annotations": out}))
    return pred_json, pred_dir


def _gt_subset(tmp, root, anns):
    gt = _split(root)
    gt["annotations"] = anns
    ids = {a["image_id"] for a in anns}
    gt["images"] = [im for im in gt["images"] if im["id"] in ids]
    path = tmp / "gt.json"
    path.write_text(json.dumps(gt))
    return path, root / "annotations" / "panoptic_val2017"


def test_crowded_image_scores_the_voided_segments_as_false_negatives(data, tmp_path):
    root, quirks = data
    [(_, ann)], _ = _records(root, quirks, "crowded")
    kept = _kept_by_area(ann, K)
    gt_json, gt_dir = _gt_subset(tmp_path, root, [ann])
    pred_json, pred_dir = _write_prediction(tmp_path, root, [ann], kept)
    result = pq_compute(gt_json, pred_json, gt_dir, pred_dir)
    # by hand: every kept segment a perfect match (IoU 1), every other one a false negative
    tp, fn = {}, {}
    for s in ann["segments_info"]:
        bucket = tp if s["id"] in kept else fn
        bucket[s["category_id"]] = bucket.get(s["category_id"], 0) + 1
    cats = set(tp) | set(fn)
    pq = {c: tp.get(c, 0) / (tp.get(c, 0) + fn.get(c, 0) / 2) for c in cats}
    assert result["All"]["n"] == len(cats)
    assert result["All"]["pq"] == pytest.approx(sum(pq.values()) / len(cats), abs=1e-12)
    for c, v in pq.items():
        assert result["per_class"][str(c)]["pq"] == pytest.approx(v, abs=1e-12)


# ---------------------------------------------------------------- crowd regions


def test_crowd_regions_are_segments_or_void_as_data_crowd_says(data):
    root, quirks = data
    pairs, cmap = _records(root, quirks, "crowd")
    for rec, ann in pairs:
        crowds = [s for s in ann["segments_info"] if s["iscrowd"] == 1]
        assert len(crowds) == 1
        ids = _png_ids(root, ann)
        region = ids == crowds[0]["id"]
        assert region.sum() == crowds[0]["area"] > 0
        _, as_segment = decode_example(record_item(rec), cmap, "segment")
        _, as_void = decode_example(record_item(rec), cmap, "void")
        assert (as_segment[..., 0][region] == cmap.class_of(crowds[0]["category_id"])).all()
        assert len(np.unique(as_segment[..., 1][region])) == 1 and as_segment[region][0, 1] > 0
        assert (as_void[region] == 0).all()
        np.testing.assert_array_equal(as_void[~region][..., 0], as_segment[~region][..., 0])


def _scores(tmp, root, anns, keep):
    """(pq_compute, the reference) of a prediction keeping the PNG ids `keep`."""
    tmp.mkdir()
    gt_json, gt_dir = _gt_subset(tmp, root, anns)
    pred_json, pred_dir = _write_prediction(tmp, root, anns, keep)
    got = pq_compute(gt_json, pred_json, gt_dir, pred_dir)
    want = _load_reference().pq_compute_reference(gt_json, pred_json, gt_dir, pred_dir)
    for split in ("All", "Things", "Stuff"):
        assert got[split]["n"] == want[split]["n"] > 0
        for k in ("pq", "sq", "rq"):
            assert got[split][k] == pytest.approx(want[split][k], abs=1e-9)
    return got


def test_every_quirk_scores_like_panopticapi_and_crowd_predictions_are_excused(data, tmp_path):
    """The whole val split, quirks included, against a prediction that keeps each image's
    K - 1 largest segments: PQ as the independent re-implementation of panopticapi
    (tests/unit/pq_reference.py) computes it. Predicting the crowd regions as well, as
    ordinary segments of their category, changes nothing: COCO ignores them."""
    root, _ = data
    anns = _split(root)["annotations"]
    crowd = {s["id"] for a in anns for s in a["segments_info"] if s["iscrowd"]}
    keep = set().union(*(_kept_by_area(a, K) for a in anns)) - crowd
    assert len(crowd) >= 2
    without = _scores(tmp_path / "without", root, anns, keep)
    with_crowd = _scores(tmp_path / "with", root, anns, keep | crowd)
    assert without["All"]["sq"] == pytest.approx(1.0)  # every match exact
    assert 0.0 < without["All"]["pq"] < 1.0  # the voided segments are false negatives
    for split in ("All", "Things", "Stuff"):
        assert with_crowd[split] == without[split]


# ---------------------------------------------------------------- images without segments


def test_empty_images_train_to_a_finite_loss(data):
    root, quirks = data
    pairs, cmap = _records(root, quirks, "empty", split="train")
    assert len(pairs) == 2
    rows = []
    for rec, ann in pairs:
        assert ann["segments_info"] == []
        assert (read_id_png(rec.png_path) == 0).all()
        assert check_row(record_item(rec), cmap, "segment").problem == ""
        rows.append(record_item(rec))
    cfg = tiny()
    cfg = replace(
        cfg,
        model=replace(cfg.model, num_classes=cmap.num_classes),
        data=replace(cfg.data, image_size=32),
    )
    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    out = TrainDecoder(cfg, cmap)(batch)
    assert out["mask"].shape[0] == 2 and (out["mask"] == 0).all()
    torch.manual_seed(0)
    model = build_model(cfg)
    images, masks, _ = to_model_inputs(
        {k: torch.from_numpy(v) for k, v in out.items()}, "cpu", cfg.data.pad_value
    )
    loss = model.loss(images, masks)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_empty_images_score_with_no_gt_segment(data, tmp_path):
    root, quirks = data
    pairs, _ = _records(root, quirks, "empty")
    anns = [ann for _, ann in pairs]
    gt_json, gt_dir = _gt_subset(tmp_path, root, anns)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    # one predicted segment over the whole image: all of it on GT VOID, so it is ignored
    preds = []
    for ann in anns:
        full = np.zeros(_png_ids(root, ann).shape + (3,), np.uint8)
        full[..., 0] = 1
        Image.fromarray(full).save(pred_dir / ann["file_name"])
        segs = [{"id": 1, "category_id": 200}]
        preds.append(
            {"image_id": ann["image_id"], "file_name": ann["file_name"], "segments_info": segs}
        )
    pred_json = tmp_path / "pred.json"
    pred_json.write_text(json.dumps({"annotations": preds}))
    result = pq_compute(gt_json, pred_json, gt_dir, pred_dir)
    assert result["All"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
    assert result["per_class"]["200"]["pq"] == 0.0
