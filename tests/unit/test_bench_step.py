"""`benchmark.py gpu` times the training loop's own step: the same function on a state built
the loop's way with the config's options, and a DDP step whose gradients have their
parameters' layout (no bucket copy)."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
import torch.distributed as dist
from helpers_ckpt import tiny_at_64

from pix2seqd.platform.benchmarks import gpu_bench
from pix2seqd.platform.benchmarks.model_bench import make_batches
from pix2seqd.platform.config import override
from pix2seqd.platform.presets import davis
from pix2seqd.platform.train import loop
from pix2seqd.platform.train.progress import Meter
from pix2seqd.platform.train.state import build_state
from pix2seqd.platform.train.step import LossModule, optimizer_step

CPU = torch.device("cpu")
OPTIONS = {
    "train.compile": "true",
    "train.compile_backend": "eager",
    "model.grad_checkpoint": "true",
    "loss.fused": "true",
}


def _cfg(**changes: str):
    return override(tiny_at_64(), {"train.batch_size": "4", **changes})


def test_the_benchmark_and_the_loop_share_one_step_function():
    assert gpu_bench.optimizer_step is loop.optimizer_step is optimizer_step


@pytest.mark.parametrize("changes", [{}, OPTIONS], ids=["preset", "options"])
def test_the_benchmark_step_is_the_loops_step_with_the_configs_options(changes, monkeypatch):
    cfg = _cfg(**changes)
    seen = []

    def spy(state, cfg_, batches, device, meter, decay_frac=0.0):
        seen.append(cfg_)
        return optimizer_step(state, cfg_, batches, device, meter, decay_frac)

    monkeypatch.setattr(gpu_bench, "optimizer_step", spy)
    bench = gpu_bench.build_trainer(cfg, CPU)
    torch.manual_seed(5)
    gpu_bench.make_step(bench, cfg, 2, CPU)()
    assert seen == [cfg]
    # the options reached the state the step trains
    compiled = cfg.train.compile
    assert isinstance(bench.ddp, torch._dynamo.eval_frame.OptimizedModule) == compiled
    assert bench.model.decoder.remat == cfg.model.grad_checkpoint
    assert bench.model.loss_cfg.fused == cfg.loss.fused

    # the loop's side: its state builder, one worker, the same batch and random draws
    torch.manual_seed(0)
    ref = build_state(cfg, CPU, 1, lambda module, kwargs: module)
    torch.manual_seed(5)
    optimizer_step(ref, cfg, iter(make_batches(cfg, 2, 1, seed=0)), CPU, Meter())
    assert bench.step == ref.step == 1
    for a, b in zip(bench.model.parameters(), ref.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(bench.ema.parameters(), ref.ema.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("preset", [tiny_at_64, davis], ids=["image", "video"])
def test_a_ddp_step_has_no_gradient_stride_copies(preset, tmp_path):
    """DDP copies a gradient into its bucket, with a warning, when the gradient's strides
    are not its parameter's: the permuted NHWC batch and the token maps used to cause it."""
    cfg = preset()
    if preset is davis:  # the paper-sized video model is slow on CPU: the tiny one's widths
        t = tiny_at_64()
        cfg = dataclasses.replace(
            cfg,
            model=dataclasses.replace(
                t.model,
                decoder=dataclasses.replace(t.model.decoder, cond_frames=2),
                max_instances=cfg.model.max_instances,
            ),
            data=dataclasses.replace(cfg.data, image_size=t.data.image_size),
        )
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        state = build_state(
            cfg,
            CPU,
            1,
            lambda m, kw: torch.nn.parallel.DistributedDataParallel(m, **kw),
        )
        assert isinstance(state.ddp.module, LossModule)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            optimizer_step(state, cfg, iter(make_batches(cfg, 2, 1, seed=0)), CPU, Meter())
    finally:
        dist.destroy_process_group()
    assert not [w for w in caught if "strides" in str(w.message)]
    for name, p in state.model.named_parameters():
        if p.grad is not None:
            assert p.grad.stride() == p.stride(), name
