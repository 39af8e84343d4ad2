"""scripts/mask_oracle.py and scripts/thing_errors.py: the ground truth through an identity
geometry scores PQ 1 (J&F 1) and through a coarse one less; thing matches worked out by hand."""

import runpy
from pathlib import Path

import numpy as np
import pytest

from pix2seqd.platform.synthetic.coco import make_coco
from pix2seqd.platform.synthetic.davis import make_davis

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def oracle():
    return runpy.run_path(str(SCRIPTS / "mask_oracle.py"))


@pytest.fixture(scope="module")
def errors():
    return runpy.run_path(str(SCRIPTS / "thing_errors.py"))


def test_the_identity_geometry_keeps_the_ground_truth(oracle, tmp_path):
    root = make_coco(tmp_path / "coco", 0, 1, 4, min_size=32, max_size=32)
    exact = oracle["oracle_pq"](root, "val2017", 32, 1, 0)
    assert [exact[k]["pq"] for k in ("All", "Things", "Stuff")] == [1.0, 1.0, 1.0]
    coarse = oracle["oracle_pq"](root, "val2017", 32, 8, 0)
    assert coarse["All"]["pq"] < 0.9


def test_the_identity_geometry_keeps_the_davis_ground_truth(oracle, tmp_path):
    root = make_davis(tmp_path / "davis", 2, 0, 2, 32, 48)  # 32 x 48 frames
    assert oracle["oracle_jf"](root, "val", 48, 1)["J&F-Mean"] == 1.0
    assert oracle["oracle_jf"](root, "val", 48, 8)["J&F-Mean"] < 0.9


def test_round_trip_of_a_block_at_stride_two(oracle):
    # mask pixel i holds canvas pixel 2i + 1 (the half-pixel nearest rule), and each image
    # pixel j takes the mask pixel whose sample is nearest (ties: the lower one)
    label = np.zeros((8, 8, 2), np.int32)
    label[3:7, 3:7] = (1, 1)  # rows 3-6: samples 3 and 5 (mask 1, 2), back to rows 3-6
    label[0, 0] = (2, 2)  # no mask pixel samples row 0: lost
    back = oracle["round_trip"](label, 8, 2).numpy()
    assert (back == label.transpose(2, 0, 1) * (label[..., 0] == 1)).all()


def test_thing_matches_by_hand(errors):
    gt = np.zeros((4, 6), np.int64)
    gt[:2, :2] = 5  # thing 5 (category 1): 4 px
    gt[2:, 4:] = 6  # thing 6 (category 2): 4 px, missed
    gt[:, 2] = 7  # stuff 7 (category 9): not scored
    pred = np.zeros_like(gt)
    pred[:2, :3] = 11  # category 2 over thing 5 and 2 px of stuff: IoU 4 / 6
    gt_segments = [
        {"id": 5, "category_id": 1},
        {"id": 6, "category_id": 2},
        {"id": 7, "category_id": 9},
        {"id": 8, "category_id": 1, "iscrowd": 1},
    ]
    rows = errors["thing_matches"](gt, gt_segments, pred, [{"id": 11, "category_id": 2}], {1, 2})
    assert rows == [(5, pytest.approx(4 / 6), False), (6, 0.0, False)]


def test_size_bins(errors):
    lines = errors["size_bins"](
        np.array([2.0, 10.0, 12.0, 40.0]),
        np.array([0.2, 0.6, 0.7, 0.9]),
        np.array([False, True, False, True]),
    )
    assert (
        lines[0]
        == "  0-4 mask px: 1 things, found 0.00, right category nan of those, mean best IoU 0.20"
    )
    assert (
        lines[1]
        == "  8-16 mask px: 2 things, found 1.00, right category 0.50 of those, mean best IoU 0.65"
    )
    assert lines[-1].startswith("  0-inf mask px: 4 things, found 0.75, right category 0.67")
