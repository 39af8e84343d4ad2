"""benchmark.py train-overhead: the shared batches, the plain DDP side, the whole run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers_ckpt import tiny_at_64

from pix2seqd.platform.benchmarks.model_bench import make_batches
from pix2seqd.platform.benchmarks.train_overhead import micro_batch, run_plain, torch_threads
from pix2seqd.platform.config import override
from pix2seqd.platform.presets import davis
from pix2seqd.platform.train.step import to_model_inputs


def test_batches_have_the_pipeline_layout_and_feed_to_model_inputs():
    cfg = tiny_at_64()
    batches = make_batches(cfg, batch=3, n=2, seed=5)
    assert len(batches) == 2
    b = batches[0]
    assert set(b) == {"image", "hw", "mask"}
    assert (b["image"].shape, b["image"].dtype) == ((3, 64, 64, 3), torch.uint8)
    assert (b["hw"].shape, b["hw"].dtype) == ((3, 2), torch.int32)
    assert (b["mask"].shape, b["mask"].dtype) == ((3, 16, 16, 2), torch.uint8)
    assert int(b["hw"].min()) >= 48 and int(b["hw"].max()) <= 64
    assert int(b["mask"][..., 0].max()) < cfg.model.num_classes
    assert int(b["mask"][..., 1].max()) < cfg.model.max_instances
    images, masks, cond = to_model_inputs(b, torch.device("cpu"), cfg.data.pad_value)
    assert images.shape == (3, 3, 64, 64) and masks.shape == (3, 2, 16, 16) and cond is None
    again = make_batches(cfg, batch=3, n=2, seed=5)
    assert all(bool((a[k] == b2[k]).all()) for a, b2 in zip(batches, again) for k in a)


def test_video_batches_carry_the_previous_frames_masks():
    cfg = override(davis(), {"data.image_size": 32, "data.image_width": 64})
    b = make_batches(cfg, batch=2, n=1, seed=0)[0]
    assert b["image"].shape == (2, 32, 64, 3)
    assert b["mask"].shape == (2, 16, 32, 2)
    assert (b["cond_mask"].shape, b["cond_mask"].dtype) == ((2, 2, 16, 32, 2), torch.uint8)
    _, _, cond = to_model_inputs(b, torch.device("cpu"), 0.3)
    assert cond.shape == (2, 2, 2, 16, 32)


def test_micro_batch_and_threads_follow_the_training_loop():
    assert micro_batch(tiny_at_64()) == 8  # 16 // (2 workers x 1 accum)
    assert micro_batch(override(tiny_at_64(), {"train.accum": 2})) == 4
    with pytest.raises(ValueError, match="smaller than"):
        micro_batch(override(tiny_at_64(), {"train.batch_size": 1}))
    assert torch_threads(tiny_at_64()) == 1
    assert (
        torch_threads(
            override(tiny_at_64(), {"train.torch_threads": 0, "train.cpus_per_worker": 3.5})
        )
        == 3
    )


def test_plain_ddp_side_times_each_step():
    times = run_plain(tiny_at_64(), warmup=1, steps=2, world=2)
    assert len(times) == 2 and all(t > 0 and math.isfinite(t) for t in times)


@pytest.mark.ray
def test_quick_benchmark_writes_the_contract_keys(ray_session, tmp_path):
    from pix2seqd.jobs import benchmark

    out = tmp_path / "overhead.json"
    result = benchmark.main(
        ["train-overhead", "--preset", "tiny", "--quick", "--steps", "3", "--json", str(out)]
    )
    assert json.loads(out.read_text()) == result
    for key in ("device", "versions", "ray_train_step_s", "plain_step_s", "ratio"):
        assert key in result
    assert result["ray_train_step_s"] > 0 and result["plain_step_s"] > 0
    assert math.isfinite(result["ratio"]) and result["ratio"] > 0
    assert result["ratio"] == pytest.approx(result["ray_train_step_s"] / result["plain_step_s"])
    assert (result["workers"], result["micro_batch"]) == (2, 8)
    assert (result["timed_steps"], result["rounds"]) == (3, 1)
    assert len(result["ray_step_s_by_round"]) == len(result["plain_step_s_by_round"]) == 1
    assert result["ray_startup_s"] > 0
