"""Nearest resizing back to the original image and the majority vote (spec §4.2)."""
import torch

from pix2seqd.models.postprocess import majority_vote, resize_nearest, to_original

CLS = torch.tensor([[1, 1, 2, 0],
                    [1, 1, 2, 4],
                    [3, 3, 3, 3],
                    [0, 0, 5, 5]])
IDS = torch.tensor([[1, 1, 1, 0],
                    [1, 1, 1, 2],
                    [2, 2, 2, 2],
                    [7, 7, 3, 3]])


def test_majority_vote_hand_made():
    # id 1: classes {1: 4, 2: 2} -> 1.  id 2: {4: 1, 3: 4} -> 3.  id 3: {5: 2} -> 5.
    # id 7: {0: 2} -> majority class 0 -> void.  id 0 pixel -> void.
    out = majority_vote(torch.stack([CLS, IDS]), num_classes=8, max_instances=16, min_pixels=2)
    expected_cls = torch.tensor([[1, 1, 1, 0],
                                 [1, 1, 1, 3],
                                 [3, 3, 3, 3],
                                 [0, 0, 5, 5]])
    expected_ids = torch.tensor([[1, 1, 1, 0],
                                 [1, 1, 1, 2],
                                 [2, 2, 2, 2],
                                 [0, 0, 3, 3]])
    assert torch.equal(out, torch.stack([expected_cls, expected_ids]))


def test_majority_vote_min_pixels_removes_small_ids():
    out = majority_vote(torch.stack([CLS, IDS]), num_classes=8, max_instances=16, min_pixels=3)
    assert out[:, 3, 2:].tolist() == [[0, 0], [0, 0]]       # id 3 has 2 pixels < 3 -> void
    assert out[1].unique().tolist() == [0, 1, 2]
    out = majority_vote(torch.stack([CLS, IDS]), num_classes=8, max_instances=16, min_pixels=6)
    assert out[1].unique().tolist() == [0, 1]               # id 2 has 5 pixels, id 1 has 6


def test_majority_vote_ties_take_lowest_class_and_clips():
    cls = torch.tensor([[4, 2, 2, 4, 9]])                     # 9 is clipped to class 7
    ids = torch.tensor([[1, 1, 1, 1, 1]])
    out = majority_vote(torch.stack([cls, ids]), num_classes=8, max_instances=16, min_pixels=1)
    assert out.tolist() == [[[2, 2, 2, 2, 2]], [[1, 1, 1, 1, 1]]]


def test_resize_nearest_half_pixel_rule():
    x = torch.arange(4).view(1, 4)
    assert resize_nearest(x, (1, 2)).tolist() == [[1, 3]]   # TF2 half-pixel: floor((i+.5)·2)
    assert resize_nearest(x, (1, 8)).tolist() == [[0, 0, 1, 1, 2, 2, 3, 3]]
    assert resize_nearest(x, (2, 4)).tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]


def test_to_original_upsample_crop_resize():
    pred = torch.tensor([[[1, 2], [3, 4]], [[5, 6], [7, 8]]])  # (2, 2, 2) at mask size
    # image 4x4 (padded), unpadded region 4 rows x 2 cols, original image 8 x 4.
    out = to_original(pred, image_hw=(4, 4), unpadded_hw=(4, 2), original_hw=(8, 4))
    assert out.shape == (2, 8, 4)
    assert out[0].tolist() == [[1, 1, 1, 1]] * 4 + [[3, 3, 3, 3]] * 4
    assert out[1].tolist() == [[5, 5, 5, 5]] * 4 + [[7, 7, 7, 7]] * 4
