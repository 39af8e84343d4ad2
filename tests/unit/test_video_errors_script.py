"""scripts/video_errors.py: first-frame error kinds worked out by hand, and the script run
on the ground truth itself (every measure perfect)."""

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from pix2seqd.platform.synthetic.davis import make_davis

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "video_errors.py"


@pytest.fixture(scope="module")
def errors():
    return runpy.run_path(str(SCRIPT))["first_frame_errors"]


def test_hand_case(errors):
    gt = np.zeros((4, 6), np.uint8)
    gt[:2, :2] = 1  # object 1: 4 px
    gt[2:, 4:] = 2  # object 2: 4 px, missed
    gt[0, 5] = 255  # void: neither object nor background
    pred = np.zeros_like(gt)
    pred[:2, :3] = 7  # object 1 found, spilling 2 px onto the background
    pred[3, 0] = 9  # a false object on 1 background px
    rows, false_fg = errors(gt, pred)
    assert rows[0] == pytest.approx((1.0, 4 / 6, 4 / 6))  # recall, IoU 4/6, purity 4/6
    assert rows[1][:2] == (0.0, 0.0) and np.isnan(rows[1][2])
    # background: 24 - 8 object px - 1 void = 15 px, of which 2 + 1 are predicted objects
    assert false_fg == pytest.approx(3 / 15)


def test_script_on_the_ground_truth(tmp_path, monkeypatch, capsys):
    root = make_davis(tmp_path / "davis", 2, 0, 2, 32, 48)
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "video_errors.py",
            "--data-root",
            str(root),
            "--results-dir",
            str(root / "Annotations_unsupervised" / "480p"),
            "--frames",
            "5",
        ],
    )
    runpy.run_path(str(SCRIPT), run_name="__main__")
    first, curve = capsys.readouterr().out.splitlines()
    assert "fg recall 1.000 (< 0.3: 0.000), best-id IoU 1.000, its purity 1.000" in first
    assert first.endswith("background predicted as object 0.000")
    assert curve.endswith(": " + " ".join(["1.000"] * 5))
