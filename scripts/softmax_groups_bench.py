"""Training-step time of the tiny image and video models with the paper's 2 softmax groups
(2 x 256 logits per mask pixel) against `--groups` (default 4: 4 x 16 logits), in this
process, one torch thread (as each of the tiny preset's 2 CPU workers).

A step is forward, backward and the fused AdamW update on a batch of `--batch` random
images and masks (the per-worker batch of the tiny preset: 16 over 2 workers). The two
settings alternate `--rounds` times; prints the median ms per step of each and the ratio.

    python scripts/softmax_groups_bench.py [--groups 4] [--rounds 3] [--steps 15]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from pix2seqd.platform.benchmarks.model_bench import dummy_batch
from pix2seqd.platform.config import override
from pix2seqd.platform.presets import as_video, tiny
from pix2seqd.platform.train.step import build_model, make_optimizer


def step_times(cfg, batch: int, steps: int) -> list[float]:
    """Seconds per training step of `cfg`'s model, after 3 warm-up steps."""
    torch.manual_seed(0)
    model = build_model(cfg).train()
    opt = make_optimizer(model, cfg, torch.device("cpu"))
    images, masks, cond = dummy_batch(cfg, batch, torch.device("cpu"))
    times = []
    for i in range(steps + 3):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model.loss(images, masks, cond).backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name, base in (("image", tiny()), ("video", as_video(tiny()))):
        cfgs = {g: override(base, {"model.decoder.softmax_groups": g}) for g in (2, args.groups)}
        times: dict[int, list[float]] = {g: [] for g in cfgs}
        for _ in range(args.rounds):
            for g, cfg in cfgs.items():
                times[g] += step_times(cfg, args.batch, args.steps)
        med = {g: 1000 * statistics.median(t) for g, t in times.items()}
        print(f"{name}: {med[2]:.1f} ms/step with 2 groups, {med[args.groups]:.1f} ms with "
              f"{args.groups}; ratio {med[args.groups] / med[2]:.2f} "
              f"({args.batch / med[2] * 1000:.1f} -> {args.batch / med[args.groups] * 1000:.1f} img/s)")


if __name__ == "__main__":
    main()
