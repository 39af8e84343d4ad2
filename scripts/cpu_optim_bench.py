"""AdamW and EMA update time per training step of a preset's model on one CPU thread:
the per-tensor AdamW loop (the default on CPU) against foreach and fused AdamW, and the
per-tensor EMA loop against one foreach lerp. Prints ms and ratios to the baseline.

    python scripts/cpu_optim_bench.py [--preset tiny] [--reps 20]
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from pix2seqd.platform.presets import get_preset
from pix2seqd.platform.train.schedule import ema_update
from pix2seqd.platform.train.step import build_model


def per_call_ms(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps * 1e3


@torch.no_grad()
def ema_loop(ema: torch.nn.Module, online: torch.nn.Module, decay: float) -> None:
    """The per-tensor update that schedule.ema_update replaced (the baseline)."""
    params = dict(ema.named_parameters())
    for name, p in online.named_parameters():
        params[name].lerp_(p, 1.0 - decay)
    bufs = dict(ema.named_buffers())
    for name, b in online.named_buffers():
        if b.is_floating_point():
            bufs[name].lerp_(b, 1.0 - decay)
        else:
            bufs[name].copy_(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = build_model(get_preset(args.preset))
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    print(f"{args.preset}: {len(list(model.parameters()))} parameter tensors, torch {torch.__version__}")
    base = None
    for name, kw in (("loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        opt = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.05, **kw)
        ms = per_call_ms(opt.step, args.reps)
        base = base or ms
        print(f"AdamW {name:8s} {ms:7.2f} ms/step  ratio to loop {ms / base:.2f}")
    ema = copy.deepcopy(model)
    loop = per_call_ms(lambda: ema_loop(ema, model, 0.99), args.reps)
    fast = per_call_ms(lambda: ema_update(ema, model, 0.99), args.reps)
    print(f"EMA   loop     {loop:7.2f} ms/step")
    print(f"EMA   foreach  {fast:7.2f} ms/step  ratio to loop {fast / loop:.2f}")


if __name__ == "__main__":
    main()
