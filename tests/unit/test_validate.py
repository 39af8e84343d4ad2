"""Validation of raw panoptic records: every bad-input case is caught before training, with
a message naming the file and the problem; --skip-bad leaves the records out and counts them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers_bad_data import CASES, corrupt, crowded, first_image_id
from helpers_ckpt import tiny_at_64

from pix2seqd.platform.data.coco_panoptic import load_coco_panoptic, record_item
from pix2seqd.platform.data.pipeline import TrainDecoder
from pix2seqd.platform.data.validate import check_row, summarise, validate_records
from pix2seqd.platform.synthetic.coco import make_coco


@pytest.fixture()
def coco(tmp_path):
    return make_coco(tmp_path / "coco", seed=3, n_train=4, n_val=1, min_size=32, max_size=40)


def _checks(root):
    recs, cmap = load_coco_panoptic(root, "train2017")
    return recs, cmap, [check_row(record_item(r), cmap, "segment") for r in recs]


def test_generated_records_pass(coco):
    _, _, checks = _checks(coco)
    assert [c.problem for c in checks] == [""] * 4
    assert all(c.segments > 0 for c in checks)


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_bad_input_is_named(coco, case):
    name, phrase = corrupt(coco, case)
    recs, cmap, checks = _checks(coco)
    bad = [c for c in checks if c.problem]
    assert len(bad) == 1 and bad[0].image_id == str(first_image_id(coco))
    assert name in bad[0].problem and phrase in bad[0].problem, bad[0].problem
    # the training decoder never turns the same record into a label silently
    cfg = tiny_at_64()
    dec = TrainDecoder(cfg, cmap)
    with pytest.raises((ValueError, FileNotFoundError)):
        dec.example(record_item(recs[0]), 16)


def test_skip_bad_in_the_decoder_drops_the_example(coco):
    corrupt(coco, "truncated_jpeg")
    recs, cmap = load_coco_panoptic(coco, "train2017")
    cfg = tiny_at_64()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, skip_bad=True))
    rows = [record_item(r) for r in recs]
    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    assert TrainDecoder(cfg, cmap)(batch)["image"].shape[0] == 3


def test_segments_beyond_k_minus_1_are_counted_not_errors(coco):
    crowded(coco, n=12)
    _, _, checks = _checks(coco)
    assert checks[0].problem == "" and checks[0].segments == 12
    report = summarise("train2017", checks, max_instances=8)
    assert report.images_with_voided >= 1
    others = sum(max(0, c.segments - 7) for c in checks[1:])
    assert report.voided_segments == 5 + others
    assert report.metrics()["data/voided_segments"] == report.voided_segments


@pytest.mark.ray
def test_validate_records_with_ray_stops_or_skips(ray_session, coco):
    corrupt(coco, "unknown_category")
    corrupt(coco, "missing_file")  # both hit the first record: one bad record
    recs, cmap = load_coco_panoptic(coco, "train2017")
    with pytest.raises(ValueError, match=r"1 of 4 records of split 'train2017' are bad") as err:
        validate_records(recs, cmap, "segment", 8, "train2017")
    assert "--skip-bad" in str(err.value)
    good, report = validate_records(recs, cmap, "segment", 8, "train2017", skip_bad=True)
    assert [r.image_id for r in good] == [r.image_id for r in recs[1:]]
    assert report.to_json()["n_bad"] == 1 and report.metrics()["data/bad_records"] == 1
