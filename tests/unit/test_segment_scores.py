"""The per-segment confidence score of eval_coco's predictions (platform/evaluation/
segment_scores.py): p_i where the sampled class agrees with the segment's class, 0 where
the majority vote overruled it, averaged over the segment; written into segments_info."""

import numpy as np
import pytest
import torch
from helpers_ckpt import image_config

from pix2seqd.platform.data.coco_panoptic import CategoryMap, read_id_png
from pix2seqd.platform.evaluation.panoptic_io import write_prediction
from pix2seqd.platform.evaluation.predict import predict_label_maps, predict_scored_label_maps
from pix2seqd.platform.evaluation.segment_scores import agreement_map, segment_scores
from pix2seqd.platform.train.step import build_model

CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 5, "name": "sky", "isthing": 0},
    {"id": 9, "name": "car", "isthing": 1},
]


def test_agreement_keeps_the_probability_where_the_vote_kept_the_class():
    sampled = np.array([[1, 1, 2], [1, 3, 3]])
    final = np.array([[1, 1, 1], [1, 3, 0]])  # (0, 2) outvoted, (1, 2) made void
    prob = np.array([[0.9, 0.5, 0.8], [0.7, 0.6, 0.2]])
    got = agreement_map(sampled, final, prob)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [[0.9, 0.5, 0.0], [0.7, 0.6, 0.0]])
    # segment 1 = the four class-1 pixels, segment 2 = the class-3 pixel
    seg_ids = np.array([[1, 1, 1], [1, 2, 0]])
    np.testing.assert_allclose(segment_scores(seg_ids, got, 2), [2.1 / 4, 0.6], rtol=1e-6)


def test_a_segment_without_pixels_scores_zero_and_shapes_must_agree():
    np.testing.assert_allclose(
        segment_scores(np.array([[2, 2]]), np.array([[0.5, 1.0]]), 3), [0, 0.75, 0]
    )
    with pytest.raises(ValueError, match="differ"):
        segment_scores(np.zeros((2, 2), int), np.zeros((2, 3)), 1)
    with pytest.raises(ValueError, match="shapes differ"):
        agreement_map(np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((1, 2)))


def test_written_segments_carry_the_mean_over_their_pixels(tmp_path):
    cmap = CategoryMap.from_coco(CATEGORIES)  # classes 1 person, 2 sky (stuff), 3 car
    cls = np.array([[1, 1, 2], [2, 2, 0]])
    ids = np.array([[1, 1, 3], [4, 4, 0]])  # sky under two ids: one merged stuff segment
    scores = np.array([[0.2, 0.4, 0.9], [0.6, 0.3, 0.0]])
    ann = write_prediction(np.stack([cls, ids]), cmap, 3, tmp_path, "a", score_map=scores)
    png = read_id_png(tmp_path / "a.png")
    by_category = {s["category_id"]: s for s in ann["segments_info"]}
    assert by_category[1]["score"] == pytest.approx((0.2 + 0.4) / 2)
    assert by_category[5]["score"] == pytest.approx((0.9 + 0.6 + 0.3) / 3)
    assert (png == by_category[5]["id"]).sum() == 3
    plain = write_prediction(np.stack([cls, ids]), cmap, 3, tmp_path, "b")
    assert all("score" not in s for s in plain["segments_info"])


def test_scored_prediction_has_the_labels_of_plain_prediction():
    cfg = image_config(4)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)]
    images.append(rng.integers(0, 256, (30, 24, 3), dtype=np.uint8))
    plain = predict_label_maps(model, cfg, images, 2, 1.0, 0, seed=5)
    scored = predict_scored_label_maps(model, cfg, images, 2, 1.0, 0, seed=5)
    for label, (same, score) in zip(plain, scored):
        assert np.array_equal(label, same)
        assert score.shape == label.shape[1:] and score.dtype == np.float32
        assert score.min() >= 0.0 and score.max() <= 1.0
