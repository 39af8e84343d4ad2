"""PQ scoring (pq.py) and the results writer (panoptic_io.py).

Hand-built 4x4 cases pin panopticapi's rules with hand-computed values; a random set is
checked against the numpy oracle in pq_reference.py. Case files are written here with
plain PIL/json, independently of panoptic_io, so a writer bug cannot hide a scorer bug.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pix2seqd.platform.data.coco_panoptic import CategoryMap, decode_label_map, parse_segments
from pix2seqd.platform.evaluation.panoptic_io import (
    write_groundtruth,
    write_prediction,
    write_predictions_json,
)
from pix2seqd.platform.evaluation.pq import pq_compute


def _load_reference():
    # pytest runs with --import-mode=importlib and tests/ has no __init__.py.
    spec = importlib.util.spec_from_file_location(
        "pq_reference", Path(__file__).with_name("pq_reference.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PERSON, CAR, SKY, GRASS, UNUSED = 1, 2, 5, 7, 9
CATEGORIES = [
    {"id": PERSON, "name": "person", "isthing": 1},
    {"id": CAR, "name": "car", "isthing": 1},
    {"id": SKY, "name": "sky", "isthing": 0},
    {"id": GRASS, "name": "grass", "isthing": 0},
    {"id": UNUSED, "name": "unused", "isthing": 1},
]


def _png(path: Path, ids) -> None:
    ids = np.asarray(ids, dtype=np.uint32)
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def write_set(tmp: Path, images, categories=CATEGORIES) -> tuple[Path, Path, Path, Path]:
    """images: [(gt_ids, gt_segments, pred_ids, pred_segments)], ids as nested lists.

    gt_segments: [(id, category, iscrowd)] or [(id, category, iscrowd, json_area)];
    GT areas default to the PNG pixel counts. pred_segments: [(id, category)].
    """
    (tmp / "gt").mkdir(exist_ok=True)
    (tmp / "pred").mkdir(exist_ok=True)
    gt_anns, pred_anns = [], []
    for k, (gt_ids, gt_segs, pred_ids, pred_segs) in enumerate(images):
        image_id, name = 3 + k, f"img{k}.png"
        _png(tmp / "gt" / name, gt_ids)
        _png(tmp / "pred" / name, pred_ids)
        counts = dict(zip(*np.unique(np.asarray(gt_ids), return_counts=True)))
        gt_anns.append(
            {
                "image_id": image_id,
                "file_name": name,
                "segments_info": [
                    {
                        "id": s[0],
                        "category_id": s[1],
                        "iscrowd": s[2],
                        "bbox": [0, 0, 1, 1],
                        "area": int(s[3] if len(s) > 3 else counts.get(s[0], 0)),
                    }
                    for s in gt_segs
                ],
            }
        )
        pred_anns.append(
            {
                "image_id": image_id,
                "file_name": name,
                "segments_info": [{"id": i, "category_id": c} for i, c in pred_segs],
            }
        )
    gt_json, pred_json = tmp / "gt.json", tmp / "pred.json"
    gt_json.write_text(json.dumps({"images": [], "annotations": gt_anns, "categories": categories}))
    pred_json.write_text(json.dumps({"annotations": pred_anns}))
    return gt_json, pred_json, tmp / "gt", tmp / "pred"


def assert_split(result, split, pq, sq, rq, n):
    got = result[split]
    assert got["n"] == n
    assert got["pq"] == pytest.approx(pq, abs=1e-12), split
    assert got["sq"] == pytest.approx(sq, abs=1e-12), split
    assert got["rq"] == pytest.approx(rq, abs=1e-12), split


TWO_ROWS = [[1, 1, 1, 1], [1, 1, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]]  # person 1 over sky 2
ABOVE = [[1, 1, 1, 1], [1, 2, 2, 2], [1, 2, 2, 2], [2, 2, 2, 2]]  # person 6 px over sky 10 px
EXACT_HALF = [[1, 1, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2], [2, 2, 2, 2]]  # person 4 px of TWO_ROWS' 8


# ---------------------------------------------------------------- hand-computed cases


def test_match_needs_iou_strictly_above_half(tmp_path):
    # Image 3: person IoU 5/(6+8-5) = 5/9 (TP), sky 7/(10+8-7) = 7/11 (TP).
    # Image 4: person IoU 4/8 = 0.5 exactly -> FN + FP, sky 8/12 (TP).
    segs = [(1, PERSON, 0), (2, SKY, 0)]
    preds = [(1, PERSON), (2, SKY)]
    r = pq_compute(
        *write_set(tmp_path, [(TWO_ROWS, segs, ABOVE, preds), (TWO_ROWS, segs, EXACT_HALF, preds)])
    )
    person_pq, sky_pq = (5 / 9) / 2, (7 / 11 + 8 / 12) / 2  # person tp1 fp1 fn1; sky tp2
    assert r["per_class"][str(PERSON)] == pytest.approx({"pq": person_pq, "sq": 5 / 9, "rq": 0.5})
    assert r["per_class"][str(SKY)] == pytest.approx({"pq": sky_pq, "sq": sky_pq, "rq": 1.0})
    assert_split(r, "All", (person_pq + sky_pq) / 2, (5 / 9 + sky_pq) / 2, 0.75, 2)
    assert_split(r, "Things", person_pq, 5 / 9, 0.5, 1)
    assert_split(r, "Stuff", sky_pq, sky_pq, 1.0, 1)


def test_void_pixels_leave_the_union(tmp_path):
    # Person pred: 5 on person, 4 on VOID -> IoU 5/(9+8-5-4) = 0.625 (5/12 if VOID stayed).
    gt = [[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0], [2, 2, 2, 2]]
    pred = [[1, 1, 1, 1], [1, 2, 2, 2], [1, 1, 1, 1], [2, 2, 2, 2]]
    r = pq_compute(
        *write_set(tmp_path, [(gt, [(1, PERSON, 0), (2, SKY, 0)], pred, [(1, PERSON), (2, SKY)])])
    )
    assert_split(r, "All", (0.625 + 4 / 7) / 2, (0.625 + 4 / 7) / 2, 1.0, 2)
    assert_split(r, "Things", 0.625, 0.625, 1.0, 1)
    assert_split(r, "Stuff", 4 / 7, 4 / 7, 1.0, 1)


def test_false_positive_mostly_on_void_is_ignored(tmp_path):
    # person pred 2/3 on VOID -> ignored (person excluded); car pred 1/2 on VOID -> FP;
    # grass unmatched -> FN; sky exact -> TP.
    gt = [[1, 1, 1, 1], [2, 2, 2, 2], [0, 0, 0, 0], [0, 0, 0, 0]]
    pred = [[1, 1, 1, 1], [2, 3, 0, 0], [2, 2, 3, 0], [0, 0, 0, 0]]
    r = pq_compute(
        *write_set(
            tmp_path, [(gt, [(1, SKY, 0), (2, GRASS, 0)], pred, [(1, SKY), (2, PERSON), (3, CAR)])]
        )
    )
    assert_split(r, "All", 1 / 3, 1 / 3, 1 / 3, 3)
    assert_split(r, "Things", 0.0, 0.0, 0.0, 1)  # car: only predictions, still counted
    assert_split(r, "Stuff", 0.5, 0.5, 0.5, 2)
    assert r["per_class"][str(PERSON)] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}


def test_crowd_and_void_add_up_for_the_ignore_rule(tmp_path):
    # Person pred (4 px): 2 on person crowd + 1 on VOID = 3/4 > 0.5 -> ignored, although
    # neither alone is > 0.5. Car pred on the person crowd is not excused -> FP.
    gt = [[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0], [2, 2, 2, 2]]
    pred = [[3, 3, 3, 3], [1, 1, 0, 0], [1, 3, 0, 0], [1, 2, 2, 2]]
    r = pq_compute(
        *write_set(
            tmp_path, [(gt, [(1, PERSON, 1), (2, SKY, 0)], pred, [(1, PERSON), (2, SKY), (3, CAR)])]
        )
    )
    assert_split(r, "All", 0.375, 0.375, 0.5, 2)
    assert_split(r, "Things", 0.0, 0.0, 0.0, 1)
    assert_split(r, "Stuff", 0.75, 0.75, 1.0, 1)


def test_only_the_last_crowd_segment_of_a_category_excuses(tmp_path):
    gt = [[1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3], [3, 3, 3, 3]]
    r = pq_compute(
        *write_set(
            tmp_path,
            [
                (
                    gt,
                    [(1, PERSON, 1), (2, PERSON, 1), (3, SKY, 0)],
                    gt,
                    [(1, PERSON), (2, PERSON), (3, SKY)],
                )
            ],
        )
    )
    assert_split(r, "All", 0.5, 0.5, 0.5, 2)  # the pred on crowd 1 is a FP
    assert_split(r, "Things", 0.0, 0.0, 0.0, 1)


def test_gt_area_is_taken_from_json(tmp_path):
    # As in the first case but the JSON says the person has 10 pixels: 5/(6+10-5) < 0.5.
    r = pq_compute(
        *write_set(
            tmp_path,
            [(TWO_ROWS, [(1, PERSON, 0, 10), (2, SKY, 0)], ABOVE, [(1, PERSON), (2, SKY)])],
        )
    )
    assert_split(r, "Things", 0.0, 0.0, 0.0, 1)


def test_empty_split_and_excluded_categories_report_zero(tmp_path):
    person = [[1] * 4] * 4
    r = pq_compute(*write_set(tmp_path, [(person, [(1, PERSON, 0)], person, [(1, PERSON)])]))
    assert_split(r, "All", 1.0, 1.0, 1.0, 1)
    assert r["Stuff"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
    assert list(r["per_class"]) == ["1", "2", "5", "7", "9"]
    assert r["per_class"]["9"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    assert json.loads(json.dumps(r)) == r
    assert all(type(v) is float for s in r["per_class"].values() for v in s.values())
    assert type(r["All"]["n"]) is int and type(r["All"]["pq"]) is float


def test_crowd_pixels_stay_in_the_union(tmp_path):
    # Person pred (6 px): 4 on the person, 2 on a person crowd -> IoU 4/(6+4-4) = 2/3
    # (4/4 = 1 if crowd pixels left the union as VOID does). Sky pred (10 px, 2 on the
    # crowd): 8/(10+8-8) = 0.8. The unmatched crowd is no FN.
    gt = [[1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3], [3, 3, 3, 3]]
    pred = [[1, 1, 1, 1], [1, 1, 2, 2], [2, 2, 2, 2], [2, 2, 2, 2]]
    r = pq_compute(
        *write_set(
            tmp_path,
            [(gt, [(1, PERSON, 0), (2, PERSON, 1), (3, SKY, 0)], pred, [(1, PERSON), (2, SKY)])],
        )
    )
    assert_split(r, "All", (2 / 3 + 0.8) / 2, (2 / 3 + 0.8) / 2, 1.0, 2)
    assert_split(r, "Things", 2 / 3, 2 / 3, 1.0, 1)


@pytest.mark.parametrize("crowd_order, excused", [((1, 2), False), ((2, 1), True)])
def test_the_crowd_segment_listed_last_is_the_one_remembered(tmp_path, crowd_order, excused):
    # Two person crowds (rows 0 and 1); one person pred, wholly on crowd 1; sky pred rows
    # 1-3: 8/12 = 2/3 (TP). Crowd 1 excuses the person pred only when listed last.
    gt = [[1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3], [3, 3, 3, 3]]
    pred = [[1, 1, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2], [2, 2, 2, 2]]
    segs = [(i, PERSON, 1) for i in crowd_order] + [(3, SKY, 0)]
    r = pq_compute(*write_set(tmp_path, [(gt, segs, pred, [(1, PERSON), (2, SKY)])]))
    if excused:  # person pred ignored: person has no TP/FP/FN and leaves the averages
        assert_split(r, "All", 2 / 3, 2 / 3, 1.0, 1)
        assert r["Things"]["n"] == 0
    else:  # person pred is a FP: person PQ 0 counts
        assert_split(r, "All", 1 / 3, 1 / 3, 0.5, 2)
        assert_split(r, "Things", 0.0, 0.0, 0.0, 1)


def test_prediction_area_field_is_recounted_from_the_png(tmp_path):
    paths = write_set(
        tmp_path, [(TWO_ROWS, [(1, PERSON, 0), (2, SKY, 0)], ABOVE, [(1, PERSON), (2, SKY)])]
    )
    pred = json.loads(paths[1].read_text())
    for seg, area in zip(pred["annotations"][0]["segments_info"], (1, 1000)):
        seg["area"] = area  # a stale area would give person IoU 5/(1+8-5) or 5/1003
    paths[1].write_text(json.dumps(pred))
    r = pq_compute(*paths)
    assert_split(r, "Things", 5 / 9, 5 / 9, 1.0, 1)  # 5/(6+8-5)
    assert_split(r, "Stuff", 7 / 11, 7 / 11, 1.0, 1)  # 7/(10+8-7)


def test_images_pair_by_image_id_each_side_with_its_own_file_name(tmp_path):
    # image 3 exact; image 4: person IoU exactly 0.5 (FN + FP), sky 8/12.
    segs, preds = [(1, PERSON, 0), (2, SKY, 0)], [(1, PERSON), (2, SKY)]
    gt_json, pred_json, gt_dir, pred_dir = write_set(
        tmp_path, [(TWO_ROWS, segs, TWO_ROWS, preds), (TWO_ROWS, segs, EXACT_HALF, preds)]
    )
    pred = json.loads(pred_json.read_text())
    (pred_dir / "img0.png").rename(pred_dir / "b.png")  # names no longer match the GT's
    (pred_dir / "img1.png").rename(pred_dir / "a.png")
    pred["annotations"][0]["file_name"], pred["annotations"][1]["file_name"] = "b.png", "a.png"
    pred["annotations"].reverse()  # order no longer matches either
    pred["annotations"].append(
        {
            "image_id": 99,
            "file_name": "absent.png",  # not a GT image:
            "segments_info": [{"id": 1, "category_id": 1234}],
        }
    )  # ignored
    pred_json.write_text(json.dumps(pred))
    r = pq_compute(gt_json, pred_json, gt_dir, pred_dir)
    # person: tp 1 (IoU 1), fp 1, fn 1 -> PQ 1/2, SQ 1, RQ 1/2; sky: tp 2, IoU 1 + 2/3
    assert_split(r, "Things", 0.5, 1.0, 0.5, 1)
    assert_split(r, "Stuff", 5 / 6, 5 / 6, 1.0, 1)


@pytest.mark.parametrize("first, last, person_tp", [(CAR, PERSON, True), (PERSON, CAR, False)])
def test_duplicate_prediction_segment_id_last_entry_wins(tmp_path, first, last, person_tp):
    r = pq_compute(
        *write_set(
            tmp_path,
            [
                (
                    TWO_ROWS,
                    [(1, PERSON, 0), (2, SKY, 0)],
                    TWO_ROWS,
                    [(1, first), (1, last), (2, SKY)],
                )
            ],
        )
    )
    if person_tp:
        assert_split(r, "All", 1.0, 1.0, 1.0, 2)
    else:  # segment 1 is a car: car FP, person FN, both PQ 0; sky 1
        assert_split(r, "All", 1 / 3, 1 / 3, 1 / 3, 3)
        assert_split(r, "Things", 0.0, 0.0, 0.0, 2)


def test_gt_segment_listed_but_absent_from_the_png_is_a_false_negative(tmp_path):
    # Person 3 (JSON area 5) and car crowd 4 have no pixel: person FN (tp 1, fn 1 ->
    # PQ 2/3, SQ 1, RQ 2/3); an absent crowd is no FN (car stays out of the averages).
    segs = [(1, PERSON, 0), (2, SKY, 0), (3, PERSON, 0, 5), (4, CAR, 1, 3)]
    r = pq_compute(*write_set(tmp_path, [(TWO_ROWS, segs, TWO_ROWS, [(1, PERSON), (2, SKY)])]))
    assert_split(r, "All", 5 / 6, 1.0, 5 / 6, 2)
    assert_split(r, "Things", 2 / 3, 1.0, 2 / 3, 1)


def test_orphan_gt_pixels_are_neither_void_nor_a_segment(tmp_path):
    # GT id 9 (row 0) is in no segments_info. Person pred (6 px, 2 on the orphans):
    # 4/(6+4-4) = 2/3 (VOID would give 4/4). Car pred (2 px, all orphan): a FP (VOID would
    # excuse it). Sky exact.
    gt = [[9, 9, 9, 9], [1, 1, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]]
    pred = [[3, 3, 1, 1], [1, 1, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]]
    r = pq_compute(
        *write_set(
            tmp_path, [(gt, [(1, PERSON, 0), (2, SKY, 0)], pred, [(1, PERSON), (2, SKY), (3, CAR)])]
        )
    )
    assert_split(r, "All", 5 / 9, 5 / 9, 2 / 3, 3)  # (2/3 + 0 + 1) / 3; RQ (1 + 0 + 1) / 3
    assert_split(r, "Things", 1 / 3, 1 / 3, 0.5, 2)


def test_gt_segment_of_an_unknown_category_is_dropped(tmp_path):
    # GT segment 3 has category 4, not in the categories: not a FN anywhere. The car pred
    # on it does not match (categories differ) and is not excused: a FP.
    gt = [[3, 3, 3, 3], [1, 1, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]]
    pred = [[3, 3, 3, 3], [1, 1, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]]
    r = pq_compute(
        *write_set(
            tmp_path,
            [
                (
                    gt,
                    [(3, 4, 0), (1, PERSON, 0), (2, SKY, 0)],
                    pred,
                    [(1, PERSON), (2, SKY), (3, CAR)],
                )
            ],
        )
    )
    assert_split(r, "All", 2 / 3, 2 / 3, 2 / 3, 3)  # person 1, car 0, sky 1
    assert_split(r, "Things", 0.5, 0.5, 0.5, 2)
    assert "4" not in r["per_class"]


def test_empty_frames(tmp_path):
    # image 3 exact; image 4: GT all VOID (no segment), a person pred over it is ignored;
    # image 5: no prediction at all (all VOID, empty segments_info): person and sky FN.
    void, person = [[0] * 4] * 4, [[1] * 4] * 4
    segs, preds = [(1, PERSON, 0), (2, SKY, 0)], [(1, PERSON), (2, SKY)]
    r = pq_compute(
        *write_set(
            tmp_path,
            [
                (TWO_ROWS, segs, TWO_ROWS, preds),
                (void, [], person, [(1, PERSON)]),
                (TWO_ROWS, segs, void, []),
            ],
        )
    )
    # each of person, sky: tp 1 (IoU 1), fn 1 -> PQ 2/3, SQ 1, RQ 2/3
    assert_split(r, "All", 2 / 3, 1.0, 2 / 3, 2)
    assert_split(r, "Things", 2 / 3, 1.0, 2 / 3, 1)


def test_a_category_list_without_stuff_reports_stuff_n_zero(tmp_path):
    things = [c for c in CATEGORIES if c["id"] in (PERSON, CAR)]
    person = [[1] * 4] * 4
    r = pq_compute(
        *write_set(tmp_path, [(person, [(1, PERSON, 0)], person, [(1, PERSON)])], categories=things)
    )
    assert_split(r, "All", 1.0, 1.0, 1.0, 1)
    assert r["Stuff"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
    assert list(r["per_class"]) == ["1", "2"]


def test_rgba_prediction_png_scores_like_rgb(tmp_path):
    paths = write_set(
        tmp_path, [(TWO_ROWS, [(1, PERSON, 0), (2, SKY, 0)], ABOVE, [(1, PERSON), (2, SKY)])]
    )
    rgb = np.asarray(Image.open(paths[3] / "img0.png"))
    alpha = np.full(rgb.shape[:2] + (1,), 17, np.uint8)  # only the first three channels count
    Image.fromarray(np.concatenate([rgb, alpha], axis=-1), "RGBA").save(paths[3] / "img0.png")
    assert_split(pq_compute(*paths), "Things", 5 / 9, 5 / 9, 1.0, 1)


# ---------------------------------------------------------------- errors


def _mutate_prediction(gt_json, pred_json, gt_dir, pred_dir, case):
    pred = json.loads(pred_json.read_text())
    segs = pred["annotations"][0]["segments_info"]
    if case == "no prediction":
        pred["annotations"] = []
    elif case == "png id not in json":
        segs.pop()
    elif case == "json id not in png":
        segs.append({"id": 77, "category_id": PERSON})
    elif case == "unknown category":
        segs[0]["category_id"] = 4
    elif case == "missing png":
        pred["annotations"][0]["file_name"] = "nope.png"
    elif case == "shape":
        _png(pred_dir / "img0.png", np.ones((4, 5)))
    elif case == "absent segment of unknown category":  # checked only with pixels
        segs.append({"id": 77, "category_id": 4})
    elif case == "first error in id order":  # id 1 unknown category, then id 2 unlisted
        segs[0]["category_id"] = 4
        segs.pop()
    elif case == "segment id 0":
        segs.append({"id": 0, "category_id": PERSON})
    elif case == "grey png":
        Image.fromarray(np.ones((4, 4), np.uint8), "L").save(pred_dir / "img0.png")
    elif case == "malformed segments_info":
        segs[0].pop("category_id")
    elif case == "missing gt png":
        (gt_dir / "img0.png").unlink()
    elif case == "missing folder":
        for f in pred_dir.iterdir():
            f.unlink()
        pred_dir.rmdir()
    elif case == "category without isthing":
        gt = json.loads(gt_json.read_text())
        gt["categories"][0].pop("isthing")
        gt_json.write_text(json.dumps(gt))
    elif case == "not json":
        pred_json.write_text("{")
        return
    pred_json.write_text(json.dumps(pred))


@pytest.mark.parametrize(
    "case, words",
    [
        ("no prediction", ["image 3", "no prediction"]),
        ("png id not in json", ["image 3", "img0.png", "segment 2", "not in segments_info"]),
        ("json id not in png", ["image 3", "img0.png", "[77]", "not in the PNG"]),
        ("unknown category", ["image 3", "img0.png", "segment 1", "category_id 4"]),
        ("missing png", ["image 3", "nope.png"]),
        ("shape", ["image 3", "img0.png", "4x5", "4x4"]),
        ("absent segment of unknown category", ["image 3", "[77]", "not in the PNG"]),
        ("first error in id order", ["image 3", "segment 1", "category_id 4"]),
        ("segment id 0", ["image 3", "img0.png", "[0]", "not in the PNG", "VOID"]),
        ("grey png", ["image 3", "img0.png", "RGB or RGBA", "mode L"]),
        ("malformed segments_info", ["image 3", "img0.png", "malformed segments_info"]),
        ("missing gt png", ["image 3", "gt", "img0.png", "not found"]),
        ("missing folder", ["folder not found", "pred"]),
        ("category without isthing", ["gt.json", "isthing"]),
        ("not json", ["pred.json", "not valid JSON"]),
    ],
)
def test_broken_predictions_raise_value_error_naming_image_and_segment(tmp_path, case, words):
    paths = write_set(
        tmp_path, [(TWO_ROWS, [(1, PERSON, 0), (2, SKY, 0)], TWO_ROWS, [(1, PERSON), (2, SKY)])]
    )
    _mutate_prediction(*paths, case)
    with pytest.raises(ValueError) as err:
        pq_compute(*paths)
    for word in words:
        assert word in str(err.value)


# ---------------------------------------------------------------- parity with the oracle


def _random_gt(rng, h, w):
    ids = np.zeros((h, w), dtype=np.int64)
    segs = []
    for _ in range(rng.integers(3, 9)):
        cat = int(rng.choice([PERSON, CAR, SKY, GRASS]))
        seg_id = int(rng.integers(1, 2**24))  # spans all three PNG channels
        y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
        ids[y : y + rng.integers(2, h), x : x + rng.integers(2, w)] = seg_id
        crowd = int(cat in (PERSON, CAR) and rng.random() < 0.2)
        segs.append([seg_id, cat, crowd])
    if rng.random() < 0.2:  # orphan GT pixels: neither VOID nor a segment
        ids[:2, :2] = 2**24 - 1
    counts = dict(zip(*np.unique(ids, return_counts=True)))
    for s in segs:  # stale JSON areas sometimes, as real files may have
        area = counts.get(s[0], 0)
        stale = area > 0 and rng.random() < 0.2
        s.append(int(max(1, area + rng.integers(-3, 4)) if stale else area))
    return ids, segs


def _perturb(rng, gt_ids, gt_segs):
    pred = np.roll(gt_ids, tuple(rng.integers(-2, 3, size=2)), axis=(0, 1))
    cats = {s[0]: s[1] for s in gt_segs} | {2**24 - 1: SKY}
    for _ in range(rng.integers(0, 3)):  # new segments and VOID patches
        y, x = rng.integers(0, pred.shape[0] - 2), rng.integers(0, pred.shape[1] - 2)
        new = int(rng.integers(1, 2**24)) if rng.random() < 0.7 else 0
        pred[y : y + rng.integers(2, 8), x : x + rng.integers(2, 8)] = new
        cats[new] = int(rng.choice([PERSON, CAR, SKY, GRASS]))
    present = [int(i) for i in np.unique(pred) if i != 0]
    flip = {i: int(rng.choice([PERSON, CAR, SKY, GRASS])) for i in present if rng.random() < 0.15}
    return pred, [(i, flip.get(i, cats[i])) for i in present]


def test_matches_numpy_reference_on_random_set(tmp_path):
    rng = np.random.default_rng(0)
    images = []
    for _ in range(20):
        gt_ids, gt_segs = _random_gt(rng, int(rng.integers(12, 40)), int(rng.integers(12, 40)))
        images.append((gt_ids, gt_segs, *_perturb(rng, gt_ids, gt_segs)))
    paths = write_set(tmp_path, images)
    got, want = pq_compute(*paths), _load_reference().pq_compute_reference(*paths)
    for split in ("All", "Things", "Stuff"):
        assert got[split]["n"] == want[split]["n"] > 0
        for k in ("pq", "sq", "rq"):
            assert abs(got[split][k] - want[split][k]) < 1e-9, (split, k)
    assert set(got["per_class"]) == {str(c) for c in want["per_class"]}
    for cat_id, w in want["per_class"].items():
        for k in ("pq", "sq", "rq"):
            assert abs(got["per_class"][str(cat_id)][k] - w[k]) < 1e-9, (cat_id, k)
    assert 0.05 < got["All"]["pq"] < 0.95  # the set is neither trivial nor hopeless


# ---------------------------------------------------------------- panoptic_io


# Contiguous classes of CATEGORIES: 1 person, 2 car, 3 sky, 4 grass, 5 unused.
CLASSES = np.array([[3, 3, 1, 1], [3, 3, 1, 1], [0, 3, 2, 2], [4, 4, 2, 1]])
INSTANCES = np.array([[1, 1, 1, 1], [2, 2, 1, 1], [5, 5, 7, 7], [3, 0, 7, 9]])


@pytest.mark.parametrize("layout", ["hw2", "2hw"])
def test_write_prediction_merges_stuff_and_keeps_things_apart(tmp_path, layout):
    label_map = np.stack([CLASSES, INSTANCES], axis=-1 if layout == "hw2" else 0)
    ann = write_prediction(label_map, CategoryMap.from_coco(CATEGORIES), 42, tmp_path, "000042")
    assert ann["image_id"] == 42 and ann["file_name"] == "000042.png"
    assert ann["segments_info"] == [
        {"id": 1, "category_id": PERSON, "area": 4, "bbox": [2, 0, 2, 2], "iscrowd": 0},
        {"id": 2, "category_id": PERSON, "area": 1, "bbox": [3, 3, 1, 1], "iscrowd": 0},
        {"id": 3, "category_id": CAR, "area": 3, "bbox": [2, 2, 2, 2], "iscrowd": 0},
        {"id": 4, "category_id": SKY, "area": 5, "bbox": [0, 0, 2, 3], "iscrowd": 0},  # ids 1, 2, 5
        {"id": 5, "category_id": GRASS, "area": 1, "bbox": [0, 3, 1, 1], "iscrowd": 0},
    ]
    rgb = np.asarray(Image.open(tmp_path / "000042.png"))
    assert rgb.shape == (4, 4, 3)
    ids = rgb[..., 0] + 256 * rgb[..., 1].astype(int) + 65536 * rgb[..., 2].astype(int)
    np.testing.assert_array_equal(ids, [[4, 4, 1, 1], [4, 4, 1, 1], [0, 4, 3, 3], [5, 0, 3, 2]])


def test_written_files_decode_back_and_score_perfectly(tmp_path):
    cmap = CategoryMap.from_coco(CATEGORIES)
    label_map = np.stack([CLASSES, INSTANCES], axis=-1)
    (tmp_path / "gt").mkdir(), (tmp_path / "pred").mkdir()
    gt = write_groundtruth(
        label_map, cmap, 7, tmp_path / "gt", "a", crowd_instances=[9], merge_stuff=True
    )
    pred = write_prediction(label_map, cmap, 7, tmp_path / "pred", "a")
    decoded = decode_label_map(
        tmp_path / "pred" / "a.png", parse_segments(pred["segments_info"], "a"), cmap
    )
    void = (CLASSES == 0) | (INSTANCES == 0)
    np.testing.assert_array_equal(decoded[..., 0], np.where(void, 0, CLASSES))
    np.testing.assert_array_equal(
        decoded[..., 1], [[4, 4, 1, 1], [4, 4, 1, 1], [0, 4, 3, 3], [5, 0, 3, 2]]
    )
    write_predictions_json(
        tmp_path / "gt.json", [gt], cmap, images=[{"id": 7, "file_name": "a.jpg"}]
    )
    write_predictions_json(tmp_path / "pred.json", [pred], cmap)
    r = pq_compute(tmp_path / "gt.json", tmp_path / "pred.json", tmp_path / "gt", tmp_path / "pred")
    # The crowd person (id 9) is not matched; its prediction lies wholly on it -> ignored.
    assert_split(r, "All", 1.0, 1.0, 1.0, 4)
    assert [s["iscrowd"] for s in gt["segments_info"]] == [0, 1, 0, 0, 0]


def test_write_prediction_rejects_out_of_range_classes(tmp_path):
    cmap = CategoryMap.from_coco(CATEGORIES)
    bad = np.stack([np.full((3, 4), 6), np.ones((3, 4), int)], axis=-1)  # C = 5
    with pytest.raises(ValueError, match="img9: classes must lie in 0..5"):
        write_prediction(bad, cmap, 9, tmp_path, "img9")
    with pytest.raises(ValueError, match="img9: .* ambiguous"):
        write_prediction(np.ones((2, 3, 2), int), cmap, 9, tmp_path, "img9")


# ---------------------------------------------------------------- MLflow names and table


def test_pq_metrics_and_per_class_table(tmp_path):
    from pix2seqd.platform.evaluation.tracked import pq_metrics, pq_table

    r = pq_compute(
        *write_set(
            tmp_path, [(TWO_ROWS, [(1, PERSON, 0), (2, SKY, 0)], ABOVE, [(1, PERSON), (2, SKY)])]
        )
    )
    m = pq_metrics(r)
    assert m["val/pq"] == pytest.approx((5 / 9 + 7 / 11) / 2) and m["val/rq"] == 1.0
    assert (m["val/pq_th"], m["val/pq_st"]) == pytest.approx((5 / 9, 7 / 11))
    assert {k: v for k, v in m.items() if k.startswith("eval/pq_class/")} == pytest.approx(
        {
            "eval/pq_class/1": 5 / 9,
            "eval/pq_class/2": 0.0,
            "eval/pq_class/5": 7 / 11,
            "eval/pq_class/7": 0.0,
            "eval/pq_class/9": 0.0,
        }
    )
    assert pq_table(r).splitlines() == [
        "| category | PQ | SQ | RQ |",
        "|---|---|---|---|",
        "| 1 | 0.5556 | 0.5556 | 1.0000 |",
        "| 2 | 0.0000 | 0.0000 | 0.0000 |",
        "| 5 | 0.6364 | 0.6364 | 1.0000 |",
        "| 7 | 0.0000 | 0.0000 | 0.0000 |",
        "| 9 | 0.0000 | 0.0000 | 0.0000 |",
    ]
