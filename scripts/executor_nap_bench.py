"""CPU of Ray Data's SplitCoordinator and the consumers' speed, with and without the pause
of `data.executor_nap`, on a stream longer than its consumers read (as the training
stream is: it is sized by the step upper bound).

Two Ray tasks stand for the training workers: each reads its split and does a fixed
amount of numpy work per batch for `--seconds`. The sides alternate for `--rounds`;
printed: the coordinator's CPU (fraction of one core, from /proc) and the batches the
consumers finished, per side and round, and the ratios of the medians (nap / none).
Linux only (/proc); starts its own local Ray.

    python scripts/executor_nap_bench.py [--seconds 20] [--rounds 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import ray
import ray.data

from pix2seqd.platform.data.executor_nap import NapWhenAhead


def _stream(nap: bool):
    ctx = ray.data.DataContext.get_current()
    ctx.custom_execution_callback_classes = [NapWhenAhead] if nap else []
    return ray.data.range(2_000_000, override_num_blocks=2000).map_batches(
        lambda b: {"x": np.zeros((len(b["id"]), 3, 64, 64), np.float32)}, batch_size=100)


@ray.remote(num_cpus=0.5)
def _consume(split, seconds: float, warmup: float) -> int:
    w = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    start, done = time.perf_counter(), 0
    for batch in split.iter_batches(batch_size=16):
        for _ in range(8):  # the "training step"
            w = np.tanh(w @ w * 1e-2)
        elapsed = time.perf_counter() - start
        done += elapsed > warmup
        if elapsed > warmup + seconds:
            break
    return done


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _coordinator_pid(split) -> int:
    """The pid of the SplitCoordinator actor behind a `streaming_split` iterator."""
    return ray.get(split._coord_actor.__ray_call__.remote(lambda self: os.getpid()))


def one_round(nap: bool, seconds: float, warmup: float = 8.0) -> tuple[float, int]:
    """(coordinator CPU as a fraction of one core, batches done by both consumers)."""
    splits = _stream(nap).streaming_split(2, equal=True)
    pid = _coordinator_pid(splits[0])
    refs = [_consume.remote(s, seconds, warmup) for s in splits]
    time.sleep(warmup)
    c0, t0 = _cpu_s(pid), time.perf_counter()
    time.sleep(seconds)
    frac = (_cpu_s(pid) - c0) / (time.perf_counter() - t0)
    done = sum(ray.get(refs))
    del splits
    time.sleep(2)  # let the finished coordinator go before the next round
    return frac, done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    res = {False: [], True: []}
    for r in range(args.rounds):
        for nap in (False, True):
            frac, done = one_round(nap, args.seconds)
            res[nap].append((frac, done))
            print(f"round {r} {'nap ' if nap else 'none'}: coordinator cpu {frac:.3f} of a core, "
                  f"consumers {done} batches in {args.seconds:g} s", flush=True)
    med = {k: (statistics.median(f for f, _ in v), statistics.median(d for _, d in v))
           for k, v in res.items()}
    print(f"median coordinator cpu: none {med[False][0]:.3f}, nap {med[True][0]:.3f} "
          f"(ratio {med[True][0] / max(med[False][0], 1e-9):.2f})")
    print(f"median consumer batches: none {med[False][1]:g}, nap {med[True][1]:g} "
          f"(ratio {med[True][1] / max(med[False][1], 1):.2f})")
    ray.shutdown()


if __name__ == "__main__":
    main()
