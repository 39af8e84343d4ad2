"""DAVIS-2017 unsupervised J&F (docs/davis.md): hand-computed cases, one rule
per test. Boxes are given with inclusive rows/columns; at 24x40 the boundary tolerance is
ceil(0.008 * sqrt(24² + 40²)) = ceil(0.373) = 1 px, so disk(1) is the 4-neighbourhood.

The boundary of a filled box rows a..b, cols c..d (inside the image) is the one-pixel ring
of the box rows a-1..b, cols c-1..d (the half-pixel shift toward the origin)."""

import numpy as np
import pytest
from PIL import Image

from pix2seqd.platform.evaluation.davis_eval import (
    GLOBAL_KEYS,
    MAX_PROPOSALS,
    _frame_scores,
    bound_radius,
    boundary_map,
    db_statistics,
    dilate,
    disk,
    evaluate_davis,
    evaluate_sequence,
    f_measure,
    j_measure,
)

H, W = 24, 40  # tolerance 1 px (module doc)


def box(top, bottom, left, right, shape=(H, W)):
    """bool mask of the box rows top..bottom, cols left..right (inclusive)."""
    m = np.zeros(shape, bool)
    m[top : bottom + 1, left : right + 1] = True
    return m


def ids(*masks, shape=(H, W)):
    """uint8 id map: masks[i] painted with id i + 1 (None = absent)."""
    out = np.zeros(shape, np.uint8)
    for i, m in enumerate(masks):
        if m is not None:
            out[m] = i + 1
    return out


def pixels(mask):
    return set(zip(*map(lambda a: a.tolist(), np.nonzero(mask))))


# 1 ------------------------------------------------------------------------------- J


def test_j_excludes_void_from_intersection_and_union_and_empty_scores_one():
    gt, pred = box(0, 1, 0, 1, (4, 4)), box(0, 1, 0, 2, (4, 4))  # 4 and 6 pixels, overlap 4
    assert j_measure(pred, gt, None) == pytest.approx(4 / 6)  # inter 4, union 6
    void = np.zeros((4, 4), bool)
    void[0, 0] = void[0, 2] = True  # one shared pixel, one prediction-only pixel
    assert j_measure(pred, gt, void) == 0.75  # inter 4 - 1 = 3, union 6 - 2 = 4
    empty = np.zeros((4, 4), bool)
    assert j_measure(empty, empty, None) == 1.0  # empty union
    assert j_measure(box(0, 3, 0, 3, (4, 4)), empty, np.ones((4, 4), bool)) == 1.0  # all void


# 2 ------------------------------------------------------------------- boundary map


def test_boundary_map_of_a_square_is_the_ring_shifted_toward_the_origin():
    b = boundary_map(box(1, 3, 1, 3, (6, 6)))  # 3x3 square in a 6x6 image
    # background just above/left: (0,0..3) and (1..3,0) = 7 pixels; the square's own
    # right column (1..3,3) and bottom row (3,1..2) = 5 pixels: the ring rows 0..3, cols 0..3
    expected = {
        (0, 0),
        (0, 1),
        (0, 2),
        (0, 3),
        (1, 0),
        (2, 0),
        (3, 0),
        (1, 3),
        (2, 3),
        (3, 3),
        (3, 1),
        (3, 2),
    }
    assert pixels(b) == expected and b.sum() == 12


def test_boundary_map_has_nothing_along_the_image_border_nor_at_bottom_right():
    left = box(0, 3, 0, 2, (4, 4))  # touches the top, left and bottom borders
    assert pixels(boundary_map(left)) == {(0, 2), (1, 2), (2, 2), (3, 2)}  # only its right edge
    assert not boundary_map(np.ones((4, 4), bool)).any()  # the whole image: no transition
    corner = box(3, 3, 3, 3, (4, 4))  # only the bottom-right pixel
    # (2,2) via south-east, (2,3) last column via south, (3,2) last row via east; (3,3) never
    assert pixels(boundary_map(corner)) == {(2, 2), (2, 3), (3, 2)}


# 3 --------------------------------------------------------------------- disk, dilate


def test_disk_and_dilation_do_not_wrap_or_reflect_at_the_border():
    d = disk(2)
    assert d.shape == (5, 5) and d.sum() == 13  # 5 + 3 + 3 + 1 + 1 (dx² + dy² <= 4)
    assert not d[0, 1] and d[0, 2] and d[1, 1]  # (2,1): 5 > 4 out; (2,0) and (1,1) in
    centre = np.zeros((5, 5), bool)
    centre[2, 2] = True
    assert np.array_equal(dilate(centre, 2), d)
    corner = np.zeros((5, 5), bool)
    corner[0, 0] = True
    # only the in-image quarter of the disk: (0,0..2), (1,0..1), (2,0) = 6 pixels
    assert pixels(dilate(corner, 2)) == {(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0)}
    assert not dilate(np.zeros((5, 5), bool), 2).any()


# 4 ------------------------------------------------------------------------------- F


def test_f_tolerance_is_ceil_of_0008_diagonal():
    assert bound_radius((120, 160)) == 2  # 0.008 * 200 = 1.6 -> 2
    assert bound_radius((480, 854)) == 8  # 0.008 * 979.65 = 7.84 -> 8
    assert bound_radius((24, 40)) == 1  # 0.008 * 46.65 = 0.37 -> 1


def test_f_shift_within_tolerance_is_perfect_beyond_it_exact_value():
    gt = box(40, 79, 60, 99, (120, 160))
    assert f_measure(np.roll(gt, 2, axis=1), gt) == 1.0  # shift 2 = r at 120x160
    gt = box(10, 13, 10, 13)  # ring rows 9..13, cols 9..13: 16 pixels
    assert f_measure(np.roll(gt, 1, axis=1), gt) == 1.0  # shift 1 = r
    # shift 2: predicted ring rows 9..13, cols 11..15. Within 1 px of the GT ring:
    # top/bottom rows x = 11..14 (8), left column rows 10 and 12 (2) -> 10 of 16;
    # missed: x = 15 column (5) and (11,11). Recall is the mirror image: 10/16.
    # F = 2PR/(P+R) = 10/16 = 0.625
    assert f_measure(np.roll(gt, 2, axis=1), gt) == 0.625


def test_f_edge_cases_of_empty_boundaries():
    empty, square = np.zeros((H, W), bool), box(5, 9, 5, 9)
    assert f_measure(empty, empty) == 1.0  # no boundary on either side: P = R = 1
    assert f_measure(empty, square) == 0.0  # P = 1, R = 0
    assert f_measure(square, empty) == 0.0  # P = 0, R = 1
    full = np.ones((H, W), bool)  # touches every border: no boundary at all
    assert f_measure(full, full) == 1.0


def test_prediction_extending_only_into_void_scores_one():
    gt = box(4, 7, 4, 7)
    void = box(4, 7, 8, 11)  # void band to the right of the object
    pred = box(4, 7, 4, 11)  # the object plus the void band
    assert j_measure(pred, gt, void) == 1.0  # inter 16, union 16 outside void
    assert f_measure(pred, gt, void) == 1.0  # void removed before the boundary
    assert f_measure(pred, gt, None) < 1.0  # (without void the right edge is 4 px off)
    frame = np.where(void, 255, ids(gt)).astype(np.uint8)  # the same through the sequence path
    j, f = evaluate_sequence(frame[None], ids(pred)[None])
    assert j.tolist() == [[1.0]] and f.tolist() == [[1.0]]  # without void: J = 16/32


# 5 ----------------------------------------------------------------------- statistics


def test_decay_overlapping_quarter_bins_and_strict_recall():
    v = np.array([0.9, 0.7, 0.5, 0.6, 0.2, 0.4])
    mean, recall, decay = db_statistics(v)
    assert mean == pytest.approx(3.3 / 6)  # 0.9 + 0.7 + 0.5 + 0.6 + 0.2 + 0.4 = 3.3
    assert recall == 0.5  # 0.9, 0.7, 0.6 > 0.5; 0.5 itself does not count: 3/6
    # T = 6: ids = round([1, 2.25, 3.5, 4.75, 6]) - 1 = [0, 1, 3, 4, 5]
    # D = mean(v0, v1) - mean(v4, v5) = 0.8 - 0.3
    assert decay == pytest.approx(0.5)
    assert db_statistics(np.array([0.3])) == (0.3, 0.0, 0.0)  # T = 1: one bin, D = 0


# 6 --------------------------------------------------------------- matching proposals

O1, O2 = box(2, 7, 2, 9), box(14, 19, 25, 34)  # two objects, boundaries far apart


def test_hungarian_optimum_differs_from_greedy():
    gt = np.stack([ids(O1, O2)] * 10)
    # frames 0-4: p1 = O1; frames 5-7: p1 = O2, p2 = O1; frame 8: p1 = O2; frame 9: none.
    # Every pair scores J = F = 1 (identical) or 0 (empty / disjoint and far), so
    # score = [[p1-O1 5/10, p1-O2 4/10], [p2-O1 3/10, p2-O2 0]]. Greedy per object gives
    # O1 -> p1 (0.5, then O2 -> p2: total 0.5); the optimum is p1 -> O2, p2 -> O1 (0.7).
    pred = np.zeros_like(gt)
    pred[:5] = ids(O1)
    pred[5:8] = ids(O2, O1)
    pred[8] = ids(O2)
    j, f = evaluate_sequence(gt, pred, "seq")
    assert j.tolist() == [[0] * 5 + [1] * 4 + [0], [0] * 5 + [1] * 3 + [0] * 2]
    assert np.array_equal(f, j)
    assert j.mean(1).tolist() == pytest.approx([0.4, 0.3])  # row 0 = O2 (via p1), row 1 = O1


def test_extra_proposals_cost_nothing():
    gt = np.stack([ids(O1, O2)] * 3)
    junk = box(20, 22, 2, 6)  # far from both objects
    pred = np.stack([ids(O1, O2, junk, junk)] * 3)  # 4 proposals for 2 objects
    j, f = evaluate_sequence(gt, pred)
    assert j.shape == (2, 3) and (j == 1).all() and (f == 1).all()


def test_fewer_proposals_are_padded_with_empty_ones():
    gt = np.stack([ids(O1, O2)] * 2)
    j, f = evaluate_sequence(gt, np.stack([ids(O1)] * 2))  # one proposal for two objects
    assert j.tolist() == [[1, 1], [0, 0]] and f.tolist() == [[1, 1], [0, 0]]  # O2: empty pad
    # object 1 empty in every frame (K = 2 from frame 0): the empty pad matches it,
    # J = F = 1 (empty union, no boundaries); p1 -> O2 comes first (proposal order)
    gt = np.stack([ids(None, O2)] * 2)
    j, f = evaluate_sequence(gt, np.stack([ids(O2)] * 2))
    assert j.tolist() == [[1, 1], [1, 1]] and f.tolist() == [[1, 1], [1, 1]]


def test_id_switch_costs_the_frames_after_it():
    gt = np.stack([ids(O1, O2)] * 5)
    pred = np.stack([ids(O1, O2)] * 3 + [ids(O2, O1)] * 2)  # ids swap at frame 3
    j, f = evaluate_sequence(gt, pred)
    assert j.tolist() == [[1, 1, 1, 0, 0]] * 2 and np.array_equal(f, j)  # identity: 0.6 each
    # T = 5: ids = [0, 1, 2, 3, 4], D = mean(v0, v1) - mean(v3, v4) = 1 - 0; recall 3/5
    assert db_statistics(j[0]) == pytest.approx((0.6, 0.6, 1.0))


def test_rows_follow_proposal_order_not_gt_order():
    left_half = box(2, 7, 2, 5)  # 24 of O1's 48 pixels: J = 0.5
    gt = np.stack([ids(O1, O2)] * 2)
    pred = np.stack([ids(O2, left_half)] * 2)  # p1 = O2, p2 = half of O1
    j, f = evaluate_sequence(gt, pred)
    assert j.tolist() == [[1, 1], [0.5, 0.5]]  # row 0 (`<seq>_1`) is GT object 2
    assert f[0].tolist() == [1, 1]


# Matching maximises (mean J + mean F) / 2. A's ring (rows 3..7, cols 3..11) is 24 px.
A = box(4, 7, 4, 11)  # seqA's object (32 px); its prediction is shifted right by 1 px:
A_PRED = box(4, 7, 5, 12)  # J = 4*7 / (32 + 4) = 28/36 = 7/9, F = 1 (shift 1 = tolerance)
WITH_LINE = A | box(18, 18, 20, 27)  # +8 px far away, ring 2x9 = 18 px: J 32/40, F 8/11
WITH_DOT = A | box(18, 18, 30, 30)  # +1 px far away, ring 2x2 = 4 px: J 32/33, F 12/13


def test_matching_uses_the_mean_of_j_and_f():
    # the hand values: P = 24/42 = 4/7, R = 1 -> F = 8/11; P = 24/28 = 6/7, R = 1 -> 12/13
    assert (j_measure(WITH_LINE, A), f_measure(WITH_LINE, A)) == pytest.approx((0.8, 8 / 11))
    assert (j_measure(WITH_DOT, A), f_measure(WITH_DOT, A)) == pytest.approx((32 / 33, 12 / 13))
    assert (j_measure(A_PRED, A), f_measure(A_PRED, A)) == pytest.approx((7 / 9, 1.0))
    gt = np.stack([ids(A)] * 2)
    # p1 in frame 0 only, p2 in frame 1 only; an absent proposal scores J = F = 0.
    # p1 = WITH_LINE has the higher J (0.8 > 7/9), p2 = A_PRED the higher J + F
    # (1.778 > 1.527): a J-only matcher would take p1.
    j, f = evaluate_sequence(gt, np.stack([ids(WITH_LINE), ids(None, A_PRED)]))
    assert j[0].tolist() == pytest.approx([0, 7 / 9]) and f.tolist() == [[0, 1]]
    # p1 = WITH_DOT has the higher J + F (1.893 > 1.778), p2 = A_PRED the higher F:
    # an F-only matcher would take p2.
    j, f = evaluate_sequence(gt, np.stack([ids(WITH_DOT), ids(None, A_PRED)]))
    assert j.shape == (1, 2) and j[0].tolist() == pytest.approx([32 / 33, 0])
    assert f[0].tolist() == pytest.approx([12 / 13, 0])


@pytest.mark.parametrize("shape", [(24, 40), (120, 200), (300, 420)])
def test_per_pair_fast_path_equals_the_per_mask_measures(shape):
    # _frame_scores (one bincount, boundaries on grown boxes, dilation lookups) against
    # j_measure / f_measure mask by mask, with masks on every border, void, empty ids.
    rng = np.random.default_rng(sum(shape))
    height, width = shape
    radius = bound_radius(shape)
    assert radius == {24: 1, 120: 2, 300: 5}[height]
    for _ in range(4):
        gt, pred = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
        for frame, n in ((gt, 4), (pred, 6)):
            for k in range(1, n + 1):
                y0, x0 = rng.integers(-5, height - 2), rng.integers(-5, width - 2)
                dy, dx = rng.integers(2, height // 2), rng.integers(2, width // 2)
                frame[max(y0, 0) : y0 + dy, max(x0, 0) : x0 + dx] = k
        pred[pred == 5] = 0  # proposal 5 absent: an empty mask in the middle
        gt[rng.random(shape) < 0.02] = 255  # scattered void
        gt[:, width - 3 :] = np.where(rng.random((height, 3)) < 0.5, 255, gt[:, width - 3 :])
        n_obj = int(np.where(gt == 255, 0, gt).max())
        j, f = _frame_scores(gt, pred, n_obj, 7, radius)  # proposal 7: padding
        void = gt == 255
        for r in range(7):
            for k in range(n_obj):
                pm, gm = pred == r + 1, gt == k + 1
                assert j[r, k] == j_measure(pm, gm, void), (r, k)
                assert f[r, k] == pytest.approx(f_measure(pm, gm, void), abs=1e-15), (r, k)


# 7 ---------------------------------------------------------------------- GT objects


def test_object_count_is_the_first_frames_max_id_void_excluded():
    o3 = box(20, 22, 30, 35)
    first = ids(O1, O2)
    first[0, :] = 255  # void is not an object
    gt = np.stack([first, ids(O1, O2, o3)])  # object 3 appears in frame 1 only: dropped
    pred = np.stack([ids(O1, O2), ids(O1, O2, o3)])
    j, f = evaluate_sequence(gt, pred)
    assert j.shape == (2, 2) and (j == 1).all() and (f == 1).all()
    gt[0] = ids(O1)  # frame 0 now has only object 1: K = 1, object 2 is dropped too
    assert evaluate_sequence(gt, pred)[0].shape == (1, 2)


def test_sequence_with_an_empty_first_frame_has_no_objects(tmp_path):
    gt = np.stack([ids(), ids(O1)])  # the object appears in frame 1 only: K = 0
    j, f = evaluate_sequence(gt, np.stack([ids(O1)] * 2))
    assert j.shape == f.shape == (0, 2)
    res = write_davis(
        tmp_path, {"empty": (gt, gt), "seqA": (np.stack([ids(A)] * 2), np.stack([ids(A_PRED)] * 2))}
    )
    out = evaluate_davis(tmp_path, res)
    assert list(out["per_object"]) == ["seqA_1"]  # the empty sequence adds no object
    assert out["J-Mean"] == pytest.approx(7 / 9) and out["F-Mean"] == 1.0
    with pytest.raises(ValueError, match="no GT object"):
        evaluate_davis(tmp_path, res, sequences=["empty"])


# 8 -------------------------------------------------------------- permutation of ids


def test_permuted_gt_ids_score_perfectly():
    objs = [box(1, 8, 1, 12), box(0, 23, 20, 27), box(12, 20, 3, 15), box(15, 23, 30, 39)]
    gt = np.stack([ids(*objs)] * 6)
    gt[:, 10:12, :] = 255  # a void band across everything
    gt[3] = ids(*[np.roll(o, 2, axis=1) for o in objs])  # objects move (and wrap) in frame 3
    perm = np.array([0, 3, 1, 4, 2, 5])  # ids 1..4 -> 3, 1, 4, 2; void (255) -> proposal 5
    lut = np.zeros(256, np.uint8)
    lut[:5], lut[255] = perm[:5], 5
    pred = lut[gt]
    assert not np.array_equal(pred[0], gt[0])
    j, f = evaluate_sequence(gt, pred)
    assert j.shape == (4, 6) and (j == 1).all() and (f == 1).all()
    assert all(db_statistics(row) == (1.0, 1.0, 0.0) for row in np.concatenate([j, f]))


# 9-11 ----------------------------------------------------------- data set, files

C1, C2 = box(2, 5, 2, 9), box(12, 17, 20, 29)
C_PRED = ids(C2, box(2, 5, 2, 5))  # p1 = C2 exactly, p2 = left half of C1
# C1 vs p2: J = 16/32 = 0.5. Rings: C1 rows 1..5, cols 1..9 (24 px); p2 rows 1..5,
# cols 1..5 (16 px). Precision: all but (3,5) are within 1 px -> 15/16; recall: top and
# bottom rows x = 1..6 (12) + left column (3) -> 15/24. F = 2 / (16/15 + 24/15) = 0.75


def palette_png(path, array):
    image = Image.fromarray(array.astype(np.uint8))
    image.putpalette([c for i in range(256) for c in (i, 255 - i, (7 * i) % 256)])  # L -> P
    image.save(path)


def write_davis(root, sequences):
    """DAVIS layout under root: {name: (gt (T,H,W), pred (T,H,W))}; results under root/res."""
    for name, (gt, pred) in sequences.items():
        for sub, data in (("Annotations_unsupervised/480p", gt), ("res", pred)):
            (root / sub / name).mkdir(parents=True)
            for t, frame in enumerate(data):
                palette_png(root / sub / name / f"{t:05d}.png", frame)
        (root / "JPEGImages/480p" / name).mkdir(parents=True)
        for t in range(len(gt)):
            Image.new("RGB", (W, H)).save(root / "JPEGImages/480p" / name / f"{t:05d}.jpg")
    (root / "ImageSets/2017").mkdir(parents=True)
    (root / "ImageSets/2017/val.txt").write_text("\n".join(sequences) + "\n")
    return root / "res"


@pytest.fixture()
def davis(tmp_path):
    seqs = {
        "seqA": (np.stack([ids(A)] * 2), np.stack([ids(A_PRED)] * 2)),
        "seqB": (np.stack([ids(O1, O2, box(20, 22, 10, 20))] * 2), np.zeros((2, H, W), np.uint8)),
        "seqC": (np.stack([ids(C1, C2)] * 2), np.stack([C_PRED] * 2)),
    }
    return tmp_path, write_davis(tmp_path, seqs)


def test_global_means_are_over_objects_not_sequences(davis):
    root, res = davis
    out = evaluate_davis(root, res, sequences=["seqA", "seqB"])
    # objects: seqA_1 (J 7/9, F 1) and seqB_1..3 (empty prediction: padded, J = F = 0)
    assert out["J-Mean"] == pytest.approx(7 / 36)  # (7/9 + 0 + 0 + 0) / 4, not (7/9 + 0) / 2
    assert out["F-Mean"] == pytest.approx(1 / 4)
    assert out["J&F-Mean"] == pytest.approx((7 / 36 + 1 / 4) / 2)  # = 2/9
    assert list(out["per_object"]) == ["seqA_1", "seqB_1", "seqB_2", "seqB_3"]


def test_end_to_end_j_json(davis):
    root, res = davis
    out = evaluate_davis(root, res, split="val", resolution="480p")
    assert list(out) == [*GLOBAL_KEYS, "per_object"]
    # J means per object: seqA_1 7/9, seqB 0, 0, 0, seqC_1 1 (C2 via p1), seqC_2 0.5
    # F means per object: 1, 0, 0, 0, 1, 0.75
    expected = {
        "J-Mean": (7 / 9 + 1.5) / 6,
        "F-Mean": 2.75 / 6,
        "J-Recall": 2 / 6,  # 7/9 and 1 count; seqC_2's 0.5 is not > 0.5
        "F-Recall": 3 / 6,
        "J-Decay": 0.0,
        "F-Decay": 0.0,
    }  # frames are constant
    expected["J&F-Mean"] = (expected["J-Mean"] + expected["F-Mean"]) / 2  # 181/432
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, abs=1e-12) and type(out[key]) is float
    per_object = {
        "seqA_1": (7 / 9, 1.0),
        "seqB_1": (0.0, 0.0),
        "seqB_2": (0.0, 0.0),
        "seqB_3": (0.0, 0.0),
        "seqC_1": (1.0, 1.0),  # GT object 2: matched to proposal 1
        "seqC_2": (0.5, 0.75),
    }
    assert list(out["per_object"]) == list(per_object)
    for name, (jm, fm) in per_object.items():
        assert out["per_object"][name] == {"J-Mean": pytest.approx(jm), "F-Mean": pytest.approx(fm)}
    assert evaluate_davis(root, res, workers=1) == evaluate_davis(root, res, workers=3) == out


# 10 ---------------------------------------------------------------------------- errors


def test_more_than_20_proposals_is_an_error():
    assert MAX_PROPOSALS == 20
    gt = np.stack([ids(O1)] * 2)
    pred = gt.copy()
    pred[1, 0, 0] = 21  # the max over all frames counts
    with pytest.raises(ValueError, match=r"'seqX'.*21 proposals.*at most 20"):
        evaluate_sequence(gt, pred, "seqX")
    pred[1, 0, 0] = 20
    assert evaluate_sequence(gt, pred)[0].shape == (1, 2)
    with pytest.raises(ValueError, match="seqX"):
        evaluate_sequence(gt, pred[:, :, :-1], "seqX")  # shapes differ


def test_result_file_errors_name_the_file(davis):
    root, res = davis
    palette_png(res / "seqC/00001.png", np.full((H, W), 21))
    with pytest.raises(ValueError, match=r"'seqC'.*21 proposals.*20"):
        evaluate_davis(root, res)
    Image.new("RGB", (W, H)).save(res / "seqC/00001.png")
    with pytest.raises(ValueError, match=r"seqC/00001\.png.*mode RGB"):
        evaluate_davis(root, res)
    palette_png(res / "seqC/00001.png", np.zeros((H, W + 1)))
    with pytest.raises(ValueError, match=r"seqC/00001\.png.*41x24.*40x24"):
        evaluate_davis(root, res)
    (res / "seqC/00001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"'seqC'.*'00001'.*seqC/00001\.png"):
        evaluate_davis(root, res)
