"""mIoU and AP^Th_pan of panoptic result files (platform/evaluation/beside_pq.py,
semantic.py, instance_ap.py) on tiny hand-built images; every expected number is worked
out in the comments from the rules of docs/pq.md ("Beside PQ: mIoU and AP^Th_pan")."""

import json
import logging

import numpy as np
import pytest

from pix2seqd.platform.evaluation.beside_pq import beside_pq
from pix2seqd.platform.evaluation.panoptic_io import write_id_png
from pix2seqd.platform.evaluation.semantic import VOID, miou, semantic_counts, semantic_map
from pix2seqd.platform.evaluation.tracked import pq_metrics, pq_table

A, B, C, D = 1, 5, 7, 9  # A, C things; B, D stuff
CATEGORIES = [
    {"id": A, "name": "a", "isthing": 1},
    {"id": B, "name": "b", "isthing": 0},
    {"id": C, "name": "c", "isthing": 1},
    {"id": D, "name": "d", "isthing": 0},
]


def seg(seg_id, category, score=None, crowd=0):
    s = {"id": seg_id, "category_id": category, "iscrowd": crowd}
    return s if score is None else {**s, "score": score}


def write_set(tmp_path, images):
    """images: [(GT ids (H, W), GT segments, prediction ids, prediction segments)] ->
    (gt_json, pred_json, gt_dir, pred_dir) in the COCO-panoptic format."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_anns, pred_anns = [], []
    for k, (gt_ids, gt_segs, pred_ids, pred_segs) in enumerate(images):
        write_id_png(gt_dir / f"{k}.png", np.asarray(gt_ids, dtype=np.uint32))
        write_id_png(pred_dir / f"{k}.png", np.asarray(pred_ids, dtype=np.uint32))
        gt_anns.append({"image_id": k, "file_name": f"{k}.png", "segments_info": gt_segs})
        pred_anns.append({"image_id": k, "file_name": f"{k}.png", "segments_info": pred_segs})
    gt_json, pred_json = tmp_path / "gt.json", tmp_path / "pred.json"
    gt_json.write_text(json.dumps({"annotations": gt_anns, "categories": CATEGORIES}))
    pred_json.write_text(json.dumps({"annotations": pred_anns, "categories": CATEGORIES}))
    return gt_json, pred_json, gt_dir, pred_dir


# ---------------------------------------------------------------- mIoU

# image 0: GT  A A B B      prediction  A B B B      (0 = void)
#              A A B 0                  0 A B A
#   labelled pixels only (GT (1, 3) is void: the predicted A there is ignored)
#   A: GT 4, predicted 2, both 2 -> I 2, U 4;   B: GT 3, predicted 4, both 3 -> I 3, U 4
# image 1: GT  B B B B      prediction  C B B 0
#   B: GT 4, predicted 2, both 2 -> I 2, U 4;   C: predicted 1, GT 0 -> I 0, U 1
# split: IoU_A = 2/4, IoU_B = (3 + 2)/(4 + 4) = 5/8, IoU_C = 0/1, D absent everywhere
# mIoU = (1/2 + 5/8 + 0)/3 = 3/8 (detectron2's rule, GT categories only: (1/2 + 5/8)/2)
MIOU_IMAGES = [
    (
        [[1, 1, 2, 2], [1, 1, 2, 0]],
        [seg(1, A), seg(2, B)],
        [[3, 4, 4, 4], [0, 3, 4, 3]],
        [seg(3, A), seg(4, B)],
    ),
    ([[1, 1, 1, 1]], [seg(1, B)], [[1, 2, 2, 0]], [seg(1, C), seg(2, B)]),
]


def test_miou_sums_intersections_and_unions_over_the_split(tmp_path):
    r = beside_pq(*write_set(tmp_path, MIOU_IMAGES))
    assert r["miou"] == pytest.approx(3 / 8)
    assert r["iou_per_class"] == pytest.approx(
        {str(A): 0.5, str(B): 5 / 8, str(C): 0.0, str(D): None}
    )
    assert r["ap_th_pan"] is None  # no segment has a score


def test_semantic_map_counts_and_mean_by_hand():
    ids = np.array([[3, 0, 8], [8, 4, 3]])  # 4 is not listed: void like 0
    sem = semantic_map(ids, [seg(3, C), seg(8, A)], {A: 0, B: 1, C: 2}, "img")
    assert sem.tolist() == [[2, VOID, 0], [0, VOID, 2]]
    pred = np.array([[2, 2, 1], [0, 0, 2]])
    counts = semantic_counts(sem, pred, 3)
    # labelled pixels (0,0) C->C, (0,2) A->B, (1,0) A->A, (1,2) C->C
    assert counts.tolist() == [[1, 0, 2], [2, 0, 2], [1, 1, 2]]
    # IoU_A = 1/(2+1-1) = 1/2, IoU_B = 0/1, IoU_C = 2/2
    value, per_class = miou(counts, [A, B, C])
    assert value == pytest.approx(0.5) and per_class == {"1": 0.5, "5": 0.0, "7": 1.0}
    with pytest.raises(ValueError, match="img: segment 3 has unknown category_id 7"):
        semantic_map(ids, [seg(3, C)], {A: 0}, "img")
    # on the GT side such a segment is void, as PQ drops it; a repeated id: the last wins
    gt = semantic_map(ids, [seg(3, C), seg(8, C), seg(8, A)], {A: 0}, "img", ground_truth=True)
    assert gt.tolist() == [[VOID, VOID, 0], [0, VOID, VOID]]


def test_miou_is_none_without_labelled_pixels():
    assert miou(np.zeros((3, 2), dtype=np.int64), [A, B]) == (None, {"1": None, "5": None})


# ---------------------------------------------------------------- AP^Th_pan

# One 4x4 image; the GT has one A object (segment 1, the left 2 columns: 8 pixels).
GT_A = [[1, 1, 0, 0]] * 4
GT_A_SEGMENTS = (seg(1, A),)


def ap_of(tmp_path, pred_ids, pred_segs, gt_ids=GT_A, gt_segs=GT_A_SEGMENTS):
    return beside_pq(*write_set(tmp_path, [(gt_ids, list(gt_segs), pred_ids, pred_segs)]))[
        "ap_th_pan"
    ]


def test_one_perfect_detection_is_ap_1(tmp_path):
    assert ap_of(tmp_path, GT_A, [seg(1, A, 0.3)]) == pytest.approx(1.0)


def test_a_higher_scored_false_positive_halves_ap(tmp_path):
    # ranked: FP (0.9) then TP (0.6): recall (0, 1), precision (0, 1/2); the precision
    # envelope is 1/2 at both, so each of the 101 recall points reads 1/2, at every IoU
    # threshold (the TP has IoU 1)
    pred = [[1, 1, 2, 2]] * 4  # segment 2: an A object where the GT has none
    assert ap_of(tmp_path, pred, [seg(1, A, 0.6), seg(2, A, 0.9)]) == pytest.approx(0.5)
    # ranked TP then FP: recall reaches 1 at precision 1 -> AP 1
    assert ap_of(tmp_path, pred, [seg(1, A, 0.9), seg(2, A, 0.6)]) == pytest.approx(1.0)


def test_partial_overlap_counts_at_the_thresholds_it_passes(tmp_path):
    # the detection covers 5 of the 8 GT pixels and nothing else: IoU 5/8 = 0.625 passes
    # 0.50, 0.55, 0.60 of the ten thresholds 0.50:0.05:0.95 -> AP (1+1+1+0·7)/10
    pred = [[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert ap_of(tmp_path, pred, [seg(1, A, 0.5)]) == pytest.approx(0.3)


def test_ap_averages_thing_categories_with_gt(tmp_path):
    # GT: A (left half) and C (right half); prediction: A perfect, no C -> AP_A 1, AP_C 0;
    # stuff B is predicted but is no thing, so it is no detection
    gt = [[1, 1, 2, 2]] * 4
    pred = [[1, 1, 3, 3]] * 4
    got = ap_of(tmp_path, pred, [seg(1, A, 0.8), seg(3, B, 0.9)], gt, [seg(1, A), seg(2, C)])
    assert got == pytest.approx(0.5)


def test_detections_inside_a_crowd_region_are_ignored(tmp_path):
    # GT: A object (left columns) and an A crowd region (right columns); detection 2 covers
    # 2 pixels of the crowd region, scored above the true positive
    gt = [[1, 1, 2, 2]] * 4
    pred = [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 2, 0], [1, 1, 2, 0]]
    segs = [seg(1, A, 0.5), seg(2, A, 0.9)]
    # crowd: detection 2 lies inside it (COCO's crowd IoU = 2/2) -> ignored; AP 1
    assert ap_of(tmp_path, pred, segs, gt, [seg(1, A), seg(2, A, crowd=1)]) == pytest.approx(1.0)
    # not crowd: detection 2 has IoU 2/8 with it -> FP ranked first; 2 GT objects:
    # recall (0, 1/2), precision (0, 1/2) -> envelope 1/2 up to recall 1/2, 0 above:
    # 51 of the 101 recall points (0, 0.01, ..., 0.50) read 1/2 -> AP 25.5/101
    got = ap_of(tmp_path / "plain", pred, segs, gt, [seg(1, A), seg(2, A)])
    assert got == pytest.approx(25.5 / 101)


def test_ap_is_null_without_scores_and_none_without_thing_gt(tmp_path, caplog):
    with caplog.at_level(logging.INFO, "pix2seqd.platform.evaluation.beside_pq"):
        assert ap_of(tmp_path, GT_A, [seg(1, A)]) is None
    assert "AP^Th_pan skipped" in caplog.text and "no 'score'" in caplog.text
    stuff_only = [[1, 1, 1, 1]] * 4
    assert ap_of(tmp_path / "s", stuff_only, [seg(1, B, 0.5)], stuff_only, [seg(1, B)]) is None


def test_no_detection_scores_zero(tmp_path):
    assert ap_of(tmp_path, [[0, 0, 0, 0]] * 4, []) == 0.0


def test_a_bad_score_names_the_image_and_segment(tmp_path):
    with pytest.raises(ValueError, match="image 0: segment 1 has score 'high'"):
        ap_of(tmp_path, GT_A, [seg(1, A, "high")])


# ---------------------------------------------------------------- MLflow names and table


def test_metrics_and_table_carry_miou_and_ap():
    result = {
        "All": {"pq": 0.5, "sq": 0.75, "rq": 0.6},
        "Things": {"pq": 0.4},
        "Stuff": {"pq": 0.6},
        "per_class": {
            "1": {"pq": 0.5, "sq": 1.0, "rq": 0.5},
            "5": {"pq": 0.0, "sq": 0.0, "rq": 0.0},
        },
        "miou": 0.25,
        "iou_per_class": {"1": 0.5, "5": None},
        "ap_th_pan": 0.125,
    }
    m = pq_metrics(result, "final/")
    assert (m["final/miou"], m["final/ap_th_pan"]) == (0.25, 0.125)
    assert "val/ap_th_pan" not in pq_metrics({**result, "ap_th_pan": None})
    assert pq_table(result).splitlines() == [
        "| category | PQ | SQ | RQ | IoU |",
        "|---|---|---|---|---|",
        "| 1 | 0.5000 | 1.0000 | 0.5000 | 0.5000 |",
        "| 5 | 0.0000 | 0.0000 | 0.0000 | - |",
    ]
