"""Instance weights (p) and the three x_0 losses on hand-made cases."""

import math

import pytest
import torch

from pix2seqd.models.bits import int_to_analog_bits
from pix2seqd.models.config import LossKind
from pix2seqd.models.losses import (
    instance_weights,
    l2_loss,
    mask_loss,
    sigmoid_ce_loss,
    softmax_ce_loss,
)

# 4x4 ids, K = 16: id 0 has 4 pixels, id 1 has 4, id 2 has 7; id 20 >= K (weight 0).
IDS = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 20]])


def test_instance_weights_p02_hand_computed():
    # w = (1/(c+1))^0.2: ids 0, 1 -> 5^-0.2 = 0.724780, id 2 -> 8^-0.2 = 0.659754; then scaled
    # by 16 / (8·0.724780 + 7·0.659754) = 16 / 10.416515.
    w = instance_weights(IDS[None], 0.2, 16)[0]
    a, b = 1.1132777730403995, 1.0133968308109722
    expected = torch.tensor([[a, a, a, a], [a, a, a, a], [b, b, b, b], [b, b, b, 0.0]])
    torch.testing.assert_close(w, expected)
    assert w.sum().item() == pytest.approx(16.0)


def test_instance_weights_p0_uniform_over_valid_ids():
    w = instance_weights(IDS[None], 0.0, 16)[0]
    expected = torch.full((4, 4), 16 / 15)
    expected[3, 3] = 0.0
    torch.testing.assert_close(w, expected)


def test_instance_weights_per_image_counts_with_batch():
    ids = torch.stack([IDS, torch.zeros(4, 4, dtype=torch.long), torch.full((4, 4), 3)])
    w = instance_weights(ids, 0.2, 16)
    torch.testing.assert_close(w[0], instance_weights(IDS[None], 0.2, 16)[0])
    torch.testing.assert_close(w[1:], torch.ones(2, 4, 4))  # one region per image -> uniform


def test_instance_weights_all_ids_out_of_range_gives_zero_not_nan():
    w = instance_weights(torch.full((1, 2, 2), 99), 0.2, 16)
    assert torch.equal(w, torch.zeros(1, 2, 2))


def test_softmax_ce_hand_made():
    # B=1, 1x2 pixels. Pixel 0 class group: target 3 gets logit ln 255, so p = 255/510 = 1/2.
    masks = torch.tensor([[[[3, 7]], [[1, 0]]]])  # (1, 2, 1, 2)
    logits = torch.zeros(1, 1, 2, 2, 256)  # channels-last (B, H, W, G, 256)
    logits[0, 0, 0, 0, 3] = math.log(255.0)
    weights = torch.tensor([[[1.5, 0.5]]])
    expected = (1.5 * (math.log(2) + math.log(256)) + 0.5 * 2 * math.log(256)) / 4
    assert softmax_ce_loss(logits, masks, weights).item() == pytest.approx(expected, rel=1e-6)


def test_softmax_ce_perfect_logits_via_mask_loss_layout():
    masks = torch.tensor([[[[3, 7]], [[1, 0]]]])
    out = torch.full((1, 1, 2, 512), -30.0)  # (B, H, W, 2·256): class logits first
    for j, (c, i) in enumerate([(3, 1), (7, 0)]):
        out[0, 0, j, c] = 30.0
        out[0, 0, j, 256 + i] = 30.0
    x0 = int_to_analog_bits(masks, 0.1)
    loss = mask_loss(LossKind.SOFTMAX_CE, out, masks, x0, torch.ones(1, 1, 2), 0.1)
    assert loss.item() < 1e-20


def test_l2_hand_made():
    x0 = torch.full((1, 16, 1, 2), 0.1)
    x0_hat = torch.zeros(1, 16, 1, 2)
    x0_hat[0, :, 0, 1] = 0.3  # error 0.1 at pixel 0, 0.2 at pixel 1
    weights = torch.tensor([[[2.0, 0.0]]])
    assert l2_loss(x0_hat, x0, weights).item() == pytest.approx((2.0 * 0.01 + 0.0) / 2, rel=1e-5)
    channels_last = x0_hat.permute(0, 2, 3, 1)
    masks = torch.zeros(1, 2, 1, 2, dtype=torch.long)
    loss = mask_loss(LossKind.L2, channels_last, masks, x0, weights, 0.1)
    assert loss.item() == pytest.approx(0.01, rel=1e-5)


def test_sigmoid_ce_hand_made():
    x0 = torch.full((1, 16, 1, 1), 0.1)
    x0[0, 8:] = -0.1
    out = torch.zeros(1, 16, 1, 1)
    out[0, :8] = 2.0  # right sign: softplus(-2); others: ln 2
    expected = (8 * math.log1p(math.exp(-2.0)) + 8 * math.log(2.0)) / 16 * 0.5
    loss = sigmoid_ce_loss(out, x0, 0.1, torch.full((1, 1, 1), 0.5))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("groups", [2, 4, 8, 16])
def test_softmax_ce_of_uniform_logits_is_log_of_group_size(groups):
    # weights w' average 1 per image, so the loss of all-zero logits is ln 2^(16/G)
    masks = torch.stack([torch.full((4, 4), 5), IDS.clamp(max=15)])[None]
    weights = instance_weights(masks[:, 1], 0.2, 16)
    n = 2 ** (16 // groups)
    out = torch.zeros(1, 4, 4, groups * n)
    loss = mask_loss(
        LossKind.SOFTMAX_CE, out, masks, int_to_analog_bits(masks, 0.1), weights, 0.1, groups
    )
    assert loss.item() == pytest.approx(math.log(n), rel=1e-6)


def test_softmax_ce_four_groups_hand_made():
    # class 181 = groups (5, 11), id 11 = groups (11, 0); group 0's target 5 gets p = 1/2
    masks = torch.tensor([181, 11]).view(1, 2, 1, 1)
    logits = torch.zeros(1, 1, 1, 4, 16)
    logits[0, 0, 0, 0, 5] = math.log(15.0)
    expected = (math.log(2) + 3 * math.log(16)) / 4
    assert softmax_ce_loss(logits, masks, torch.ones(1, 1, 1)).item() == pytest.approx(
        expected, rel=1e-6
    )
