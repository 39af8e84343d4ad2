"""Nearest resizing back to the original image and the majority vote (docs/model.md,
"Post-processing")."""

import pytest
import torch

from pix2seqd.models.postprocess import majority_vote, resize_nearest, to_original

CLS = torch.tensor([[1, 1, 2, 0], [1, 1, 2, 4], [3, 3, 3, 3], [0, 0, 5, 5]])
IDS = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 2], [2, 2, 2, 2], [7, 7, 3, 3]])


def test_majority_vote_hand_made():
    # id 1: classes {1: 4, 2: 2} -> 1.  id 2: {4: 1, 3: 4} -> 3.  id 3: {5: 2} -> 5.
    # id 7: {0: 2} -> majority class 0 -> void.  id 0 pixel -> void.
    out = majority_vote(torch.stack([CLS, IDS]), num_classes=8, max_instances=16, min_pixels=2)
    expected_cls = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 3], [3, 3, 3, 3], [0, 0, 5, 5]])
    expected_ids = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 2], [2, 2, 2, 2], [0, 0, 3, 3]])
    assert torch.equal(out, torch.stack([expected_cls, expected_ids]))


def test_majority_vote_min_pixels_removes_small_ids():
    out = majority_vote(torch.stack([CLS, IDS]), num_classes=8, max_instances=16, min_pixels=3)
    assert out[:, 3, 2:].tolist() == [[0, 0], [0, 0]]  # id 3 has 2 pixels < 3 -> void
    assert out[1].unique().tolist() == [0, 1, 2]
    out = majority_vote(torch.stack([CLS, IDS]), num_classes=8, max_instances=16, min_pixels=6)
    assert out[1].unique().tolist() == [0, 1]  # id 2 has 5 pixels, id 1 has 6


def test_majority_vote_ties_take_lowest_class_and_clips():
    cls = torch.tensor([[4, 2, 2, 4, 9]])  # 9 is clipped to class 7
    ids = torch.tensor([[1, 1, 1, 1, 1]])
    out = majority_vote(torch.stack([cls, ids]), num_classes=8, max_instances=16, min_pixels=1)
    assert out.tolist() == [[[2, 2, 2, 2, 2]], [[1, 1, 1, 1, 1]]]


def test_resize_nearest_half_pixel_rule():
    x = torch.arange(4).view(1, 4)
    assert resize_nearest(x, (1, 2)).tolist() == [[1, 3]]  # TF2 half-pixel: floor((i+.5)·2)
    assert resize_nearest(x, (1, 8)).tolist() == [[0, 0, 1, 1, 2, 2, 3, 3]]
    assert resize_nearest(x, (2, 4)).tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]


def test_to_original_places_each_mask_pixel_at_its_sample_point():
    pred = torch.tensor([[[1, 2], [3, 4]], [[5, 6], [7, 8]]])  # (2, 2, 2) at mask size
    # canvas 4 x 4 (padded), unpadded region 4 rows x 2 cols, original image 8 x 4. Mask row
    # i holds canvas row floor((i + .5)·2) = 1, 3 (centres 1.5, 3.5; midpoint 2.5). Original
    # row y lies at canvas (y + .5)·4/8 = .25, .75, ..., 3.75: rows 0-4 take mask row 0, rows
    # 5-7 mask row 1. Columns: x at (x + .5)·2/4 <= 1.75, nearer 1.5 than 3.5: mask column 0.
    out = to_original(pred, image_hw=(4, 4), unpadded_hw=(4, 2), original_hw=(8, 4))
    assert out.shape == (2, 8, 4)
    assert out[0].tolist() == [[1, 1, 1, 1]] * 5 + [[3, 3, 3, 3]] * 3
    assert out[1].tolist() == [[5, 5, 5, 5]] * 5 + [[7, 7, 7, 7]] * 3
    # stride 1, same size: the identity
    x = torch.arange(12).view(3, 4)
    assert torch.equal(to_original(x, (3, 4), (3, 4), (3, 4)), x)


def _official_to_original(pred, image_hw, unpadded_hw, original_hw):
    """The official output path: nearest to the canvas, crop, nearest to the original size."""
    full = resize_nearest(pred, image_hw)
    return resize_nearest(full[..., : unpadded_hw[0], : unpadded_hw[1]], original_hw)


def _mean_round_trip_shift(upsample, n):
    """Mean centroid shift (y, x) in original pixels of 32 discs drawn on an n x n image at
    sub-pixel positions, sent through the targets' geometry (nearest to the 64 canvas, then
    to the 32 x 32 mask) and back with `upsample`."""
    yy, xx = torch.meshgrid(torch.arange(float(n)), torch.arange(float(n)), indexing="ij")
    shifts = []
    for k in range(32):
        disc = (((yy - n / 2 - 0.37 * k) ** 2 + (xx - n / 2 + 3 - 0.29 * k) ** 2) < 11**2).long()
        back = upsample(
            resize_nearest(resize_nearest(disc, (64, 64)), (32, 32)), (64, 64), (64, 64), (n, n)
        )
        shifts.append(
            [float((back * g).sum() / back.sum() - (disc * g).sum() / disc.sum()) for g in (yy, xx)]
        )
    return torch.tensor(shifts).mean(0)


@pytest.mark.parametrize("n", [72, 80, 96])
def test_ground_truth_round_trip_is_not_shifted(n):
    # the official path moves masks 0.65-1.0 px up and left at stride 2 (half a canvas pixel);
    # what is left comes from the original -> canvas step, whose phase varies along the image
    assert (_mean_round_trip_shift(_official_to_original, n) < -0.6).all()
    assert _mean_round_trip_shift(to_original, n).abs().max() < 0.3
