"""int <-> analog bits: layout, scale, round trip, clipping, expected bits."""

import pytest
import torch

from pix2seqd.models.bits import (
    analog_bits_to_int,
    bit_table,
    expected_analog_bits,
    group_bits,
    group_values,
    int_to_analog_bits,
)

B_SCALE = 0.1


def test_round_trip_every_class_and_id():
    values = torch.arange(256).view(16, 16)
    masks = torch.stack([values, values.flip(0)])[None]  # every class and every id 0..255
    x = int_to_analog_bits(masks, B_SCALE)
    assert x.shape == (1, 16, 16, 16)
    assert torch.equal(analog_bits_to_int(x, 256, 256), masks)


def test_layout_lsb_first_class_then_id_scaled_to_b():
    masks = torch.tensor([5, 130]).view(1, 2, 1, 1)  # class 5 = 0b101, id 130 = 0b10000010
    x = int_to_analog_bits(masks, B_SCALE).flatten().tolist()
    b = B_SCALE
    assert x == pytest.approx([b, -b, b, -b, -b, -b, -b, -b] + [-b, b, -b, -b, -b, -b, -b, b])


def test_decode_clips_class_and_id():
    masks = torch.tensor([200, 250]).view(1, 2, 1, 1)
    x = int_to_analog_bits(masks, B_SCALE)
    assert analog_bits_to_int(x, 134, 101).flatten().tolist() == [133, 100]
    assert analog_bits_to_int(x, 256, 256).flatten().tolist() == [200, 250]


def test_decode_thresholds_at_zero():
    x = torch.full((1, 16, 1, 1), -1e-6)
    x[0, 0] = 1e-6  # class bit 0 only
    x[0, 9] = 0.0  # exactly 0 is a 0 bit
    assert analog_bits_to_int(x, 256, 256).flatten().tolist() == [1, 0]


def test_video_stack_is_frames_oldest_first_class_then_id():
    cond = torch.tensor([[[1, 2]], [[3, 4]]]).view(1, 2, 2, 1, 1)  # (B, T, 2, H, W)
    x = int_to_analog_bits(cond, B_SCALE)
    assert x.shape == (1, 32, 1, 1)
    decoded = [
        analog_bits_to_int(x[:, 16 * f : 16 * f + 16], 256, 256).flatten().tolist()
        for f in range(2)
    ]
    assert decoded == [[1, 2], [3, 4]]


def test_bit_table():
    table = bit_table()
    assert table.shape == (256, 8)
    assert table[5].tolist() == [1, 0, 1, 0, 0, 0, 0, 0]
    assert table[255].sum() == 8 and table.sum() == 1024


def test_expected_bits_one_hot_and_uniform():
    logits = torch.full((1, 1, 1, 2, 256), -1e4)  # channels-last (B, H, W, G, 256)
    logits[0, 0, 0, 0, 5] = 1e4
    logits[0, 0, 0, 1, 130] = 1e4
    sharp = expected_analog_bits(logits, B_SCALE)
    target = int_to_analog_bits(torch.tensor([5, 130]).view(1, 2, 1, 1), B_SCALE)
    torch.testing.assert_close(sharp, target)
    uniform = expected_analog_bits(torch.zeros(1, 1, 1, 2, 256), B_SCALE)
    torch.testing.assert_close(uniform, torch.zeros(1, 16, 1, 1))


def test_group_values_cut_class_then_id_bits_lsb_first():
    masks = torch.tensor([181, 11]).view(1, 2, 1, 1)  # class 0b1011_0101, id 0b0000_1011
    assert group_values(masks, 2).flatten().tolist() == [181, 11]
    assert group_values(masks, 4).flatten().tolist() == [5, 11, 11, 0]
    assert group_values(masks, 8).flatten().tolist() == [1, 1, 3, 2, 3, 2, 0, 0]
    assert group_values(masks, 16).flatten().tolist() == [
        1,
        0,
        1,
        0,
        1,
        1,
        0,
        1,
        1,
        1,
        0,
        1,
        0,
        0,
        0,
        0,
    ]
    assert [group_bits(g) for g in (2, 4, 8, 16)] == [8, 4, 2, 1]
    assert bit_table(n_bits=4)[11].tolist() == [1, 1, 0, 1]


@pytest.mark.parametrize("groups", [1, 3, 32])
def test_group_count_must_cut_each_channel_evenly(groups):
    with pytest.raises(
        ValueError, match=f"model.decoder.softmax_groups={groups}: must be 2, 4, 8 or 16"
    ):
        group_bits(groups)


@pytest.mark.parametrize("groups", [2, 4, 8, 16])
def test_expected_bits_of_sharp_groups_are_the_mask_bits(groups):
    g = torch.Generator().manual_seed(groups)
    masks = torch.randint(0, 256, (2, 2, 3, 5), generator=g)
    values = group_values(masks, groups)  # (2, 3, 5, G)
    logits = 40.0 * torch.nn.functional.one_hot(values, 2 ** group_bits(groups)).float()
    torch.testing.assert_close(
        expected_analog_bits(logits, B_SCALE), int_to_analog_bits(masks, B_SCALE)
    )
