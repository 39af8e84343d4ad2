"""The training stream's object-store budget (`data.ahead_steps`, `read_ahead`)."""

from dataclasses import replace

import pytest
import ray.data
from helpers_ckpt import tiny_at_64

from pix2seqd.platform.data.read_ahead import example_bytes, ingest_options, stream_budget_bytes
from pix2seqd.platform.presets import as_video


def _ahead(cfg, steps):
    return replace(cfg, data=replace(cfg.data, ahead_steps=steps))


def test_example_bytes_count_canvas_masks_and_size():
    cfg = tiny_at_64()  # 64 x 64 canvas, masks 16 x 16
    assert example_bytes(cfg) == 64 * 64 * 3 + 16 * 16 * 2 + 8 == 12_808
    video = as_video(cfg)  # stride 2: masks 32 x 32, the frame's and two history masks
    assert example_bytes(video) == 64 * 64 * 3 + 3 * 32 * 32 * 2 + 8 == 18_440


def test_budget_is_the_steps_ahead_and_at_least_four_map_tasks():
    cfg = tiny_at_64()  # batch 16; map tasks of 1,024 examples at 64 px
    assert stream_budget_bytes(_ahead(cfg, 2_000)) == 2_000 * 16 * 12_808
    assert stream_budget_bytes(_ahead(cfg, 200)) == 4 * 1_024 * 12_808  # the floor
    assert stream_budget_bytes(_ahead(cfg, 0)) is None
    with pytest.raises(ValueError, match=r"data.ahead_steps=-1 must be >= 0"):
        stream_budget_bytes(_ahead(cfg, -1))


def test_ingest_options_keep_the_context_and_set_the_budget():
    ctx = ray.data.DataContext.get_current()
    before = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    try:
        options = ingest_options(_ahead(tiny_at_64(), 2_000))
        assert options.preserve_order is True
        assert options.resource_limits.object_store_memory == 2_000 * 16 * 12_808
        assert options.resource_limits.cpu == ctx.execution_options.resource_limits.cpu
        unbounded = ingest_options(_ahead(tiny_at_64(), 0)).resource_limits
        assert (
            unbounded.object_store_memory
            == ctx.execution_options.resource_limits.object_store_memory
        )
    finally:
        ctx.execution_options.preserve_order = before
