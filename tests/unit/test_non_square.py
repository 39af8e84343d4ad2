"""Non-square canvases through the model (the cityscapes preset's 1024 x 2048): the token
grid and both transformers' position codes follow H != W, and loss and sampling run."""

from __future__ import annotations

import torch

from pix2seqd.models.transformer import position_codes_2d
from pix2seqd.platform.config import override
from pix2seqd.platform.presets import tiny
from pix2seqd.platform.train.step import build_model


def test_position_codes_tell_rows_from_columns_on_a_wide_grid():
    codes = position_codes_2d(2, 4, 8, torch.device("cpu"))  # (h * w, dim), row-major
    assert codes.shape == (8, 8)
    grid = codes.view(2, 4, 8)
    # moving along a row changes the code, and differently from moving down a column
    assert not torch.equal(grid[0, 0], grid[0, 1]) and not torch.equal(grid[0, 0], grid[1, 0])
    assert not torch.equal(grid[0, 1], grid[1, 0])


def test_a_wide_canvas_trains_and_samples():
    cfg = override(tiny(), {"data.image_size": 32, "data.image_width": 64})
    torch.manual_seed(0)
    model = build_model(cfg)
    images = torch.rand(2, 3, 32, 64)
    (hm, wm) = (32 // cfg.model.mask_stride, 64 // cfg.model.mask_stride)
    masks = torch.zeros(2, 2, hm, wm, dtype=torch.long)
    masks[:, :, :, wm // 2 :] = 1
    encoded = model.encode(images)
    assert encoded.fused.shape[-2:] == (hm, wm) and encoded.tokens.shape[1] == 2 * 4
    loss = model.loss(images, masks)
    loss.backward()
    assert torch.isfinite(loss)
    pred = model.eval().sample(images, 2, 1.0)
    assert pred.shape == (2, 2, hm, wm)
