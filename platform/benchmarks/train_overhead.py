"""`benchmark.py train-overhead`: seconds per training step under Ray Train vs plain DDP.

Both sides run the production step, `step.optimizer_step`, on the same in-memory batches
with the training state built by the loop's own `state.build_state` (model, optimizer, EMA),
the same process count (`train.num_workers`), threads per process and micro-batch
(`train.batch_size // (num_workers * accum)`):

- Ray Train: a `TorchTrainer` (Train V2) whose workers wrap the model with the loop's
  `loop.ray_ddp` (`ray.train.torch.prepare_model`), so Ray's DDP set-up is what is timed.
  Rank 0 hands its step times back in a one-file checkpoint (V2's `Result.metrics` is empty
  without one, and a checkpoint also travels on a cluster with shared storage).
- Plain: `torch.multiprocessing.spawn` of the same number of processes, gloo (nccl on cuda)
  on a free local port, `DistributedDataParallel` with the same kwargs; rank 0 writes its
  step times to a file.

Data loading is not measured: each rank cycles through a few batches generated with a fixed
seed, shaped as the Ray Data pipeline yields them. Each side does `warmup` steps, a
`dist.barrier()`, then `steps` timed steps (wall clock per step, rank 0). The sides
alternate (plain, ray, plain, ray, ...) so machine noise hits both; the result is the median
step over all timed steps of all rounds. Ray is started once (`ray_init_s`); the time from
`fit()` to the first line of the workers' loop (worker group and process group start-up) is
reported apart as `ray_startup_s`, not in the step time.

The plain side runs on the driver's machine, so the comparison is meant for a single-node
Ray (a local one, or a one-node cluster). `device="cuda"` (nccl, one GPU per process,
`use_gpu=True` on the Ray side) follows the same code path but was only run on CPU here.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import socket
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ray.train.torch import TorchTrainer
from torch.nn.parallel import DistributedDataParallel

from pix2seqd.platform.benchmarks.model_bench import make_batches
from pix2seqd.platform.config import Config, flatten, from_flat
from pix2seqd.platform.ray_env import init_ray, sigint_handler_kept

# The loop's own state, step and meter: the per-step work timed here is the production one.
from pix2seqd.platform.train.loop import ray_ddp
from pix2seqd.platform.train.progress import Meter
from pix2seqd.platform.train.state import TrainState, build_state
from pix2seqd.platform.train.step import optimizer_step

DISTINCT_BATCHES = 4  # per rank; cycled, so a step never waits for data


@dataclass(frozen=True)
class OverheadPlan:
    """Untimed steps per side and round, timed steps per side and round, rounds."""

    warmup: int
    steps: int
    rounds: int


QUICK = OverheadPlan(warmup=3, steps=10, rounds=1)
FULL = OverheadPlan(warmup=10, steps=60, rounds=2)


# ---------------------------------------------------------------- what both sides share


def micro_batch(cfg: Config) -> int:
    """Examples per rank per forward pass, as the training loop computes it."""
    t = cfg.train
    micro = t.batch_size // (t.num_workers * t.accum)
    if micro < 1:
        raise ValueError(
            f"train.batch_size={t.batch_size} is smaller than num_workers x accum "
            f"= {t.num_workers * t.accum}"
        )
    return micro


def torch_threads(cfg: Config) -> int:
    """Threads per process: `train.torch_threads`, or with 0 what Ray gives a worker
    (OMP_NUM_THREADS = its whole CPUs, at least 1); set explicitly on both sides, since a
    spawned process would otherwise use every core."""
    return cfg.train.torch_threads or max(1, math.floor(cfg.train.cpus_per_worker))


def setup_process(cfg: Config, rank: int) -> None:
    """Threads and seed as the training loop sets them (threads: see `torch_threads`)."""
    torch.set_num_threads(torch_threads(cfg))
    torch.manual_seed(cfg.train.seed * 1000 + rank)


def timed_steps(
    state: TrainState,
    cfg: Config,
    batches: list[dict],
    device: torch.device,
    warmup: int,
    steps: int,
) -> list[float]:
    """`warmup` untimed steps, a barrier (ranks start the clock together), then the wall
    time of each of `steps` optimizer steps. On CUDA each step ends with a synchronize, so
    the time covers the kernels, not only their launch."""
    meter, stream = Meter(), itertools.cycle(batches)
    for _ in range(warmup):
        optimizer_step(state, cfg, stream, device, meter)
    _sync(device)
    if dist.is_initialized():
        dist.barrier()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        optimizer_step(state, cfg, stream, device, meter)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _worker_batches(cfg: Config, rank: int) -> list[dict[str, torch.Tensor]]:
    """Rank `rank`'s batches: its own seed, as ranks see different examples in training."""
    return make_batches(cfg, micro_batch(cfg), DISTINCT_BATCHES, seed=cfg.train.seed * 1000 + rank)


# ---------------------------------------------------------------- plain PyTorch DDP


def free_port() -> int:
    """A TCP port free on this machine now (the plain side's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plain_worker(
    rank: int,
    world: int,
    port: int,
    flat: dict[str, Any],
    warmup: int,
    steps: int,
    device_kind: str,
    out: str,
) -> None:
    """One spawned process: process group, state, timed steps; rank 0 writes its step
    times (a JSON list of seconds) to `out`."""
    cfg = from_flat(flat)
    device = torch.device(f"cuda:{rank}" if device_kind == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        rank=rank,
        world_size=world,
        init_method=f"tcp://127.0.0.1:{port}",
    )
    try:
        setup_process(cfg, rank)
        state = build_state(cfg, device, world, _plain_wrap(device, world))
        times = timed_steps(state, cfg, _worker_batches(cfg, rank), device, warmup, steps)
        if rank == 0:
            Path(out).write_text(json.dumps(times))
    finally:
        dist.destroy_process_group()


def _plain_wrap(device: torch.device, world: int):
    """DDP as `prepare_model` builds it: only for several processes, with the device ids
    on CUDA."""

    def wrap(module: torch.nn.Module, kwargs: dict) -> torch.nn.Module:
        if world == 1:
            return module
        if device.type == "cuda":
            kwargs = {"device_ids": [device], "output_device": device, **kwargs}
        return DistributedDataParallel(module, **kwargs)

    return wrap


def run_plain(
    cfg: Config, warmup: int, steps: int, device: str = "cpu", world: int | None = None
) -> list[float]:
    """Spawn `world` (default `train.num_workers`) processes; rank 0's seconds per step."""

    world = world or cfg.train.num_workers
    with tempfile.TemporaryDirectory(prefix="pix2seqd-plain-") as d:
        out = Path(d) / "step_s.json"
        mp.spawn(
            plain_worker,
            nprocs=world,
            join=True,
            args=(world, free_port(), flatten(cfg), warmup, steps, device, str(out)),
        )
        return json.loads(out.read_text())


# ---------------------------------------------------------------- Ray Train


def ray_worker_loop(config: dict[str, Any]) -> None:
    """TorchTrainer loop. config: {'config': flattened Config, 'warmup', 'steps'}."""

    entered = time.time()  # wall clock: the driver compares it with its own
    cfg = from_flat(config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    setup_process(cfg, rank)
    device = ray.train.torch.get_device()
    state = build_state(cfg, device, world, ray_ddp)
    times = timed_steps(
        state, cfg, _worker_batches(cfg, rank), device, config["warmup"], config["steps"]
    )
    _report_times(rank, {"step_s": times, "loop_entered": entered})


def _report_times(rank: int, payload: dict[str, Any]) -> None:
    """Every rank reports once; rank 0 attaches `payload` as step_s.json in a checkpoint."""

    metrics = {"median_step_s": statistics.median(payload["step_s"])}
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "step_s.json").write_text(json.dumps(payload))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def run_ray(
    cfg: Config, warmup: int, steps: int, device: str, storage: str
) -> tuple[list[float], float]:
    """One TorchTrainer fit: (rank 0's seconds per step, seconds from `fit()` to the
    workers' loop). `storage` holds the run's one checkpoint."""

    t, gpu = cfg.train, device == "cuda"
    trainer = TorchTrainer(
        ray_worker_loop,
        train_loop_config={"config": flatten(cfg), "warmup": warmup, "steps": steps},
        scaling_config=ray.train.ScalingConfig(
            num_workers=t.num_workers,
            use_gpu=gpu,
            resources_per_worker={"CPU": t.cpus_per_worker, **({"GPU": 1} if gpu else {})},
        ),
        # a fresh name per fit: V2 resumes a run whose name and storage it finds again
        run_config=ray.train.RunConfig(
            name=f"train-overhead-{uuid.uuid4().hex[:8]}", storage_path=storage
        ),
    )
    started = time.time()
    with sigint_handler_kept():
        result = trainer.fit()
    with result.checkpoint.as_directory() as d:
        payload = json.loads((Path(d) / "step_s.json").read_text())
    return payload["step_s"], payload["loop_entered"] - started


# ---------------------------------------------------------------- the benchmark


def benchmark_train_overhead(
    cfg: Config, device: str = "cpu", quick: bool = False, steps: int = 0, rounds: int = 0
) -> dict[str, Any]:
    """Ray Train vs plain DDP seconds per step for `cfg` (docs/cli.md keys, plus what was run).

    steps / rounds: timed steps per side and round / rounds (0: the QUICK or FULL plan)."""

    plan = QUICK if quick else FULL
    plan = dataclasses.replace(plan, steps=steps or plan.steps, rounds=rounds or plan.rounds)
    _check_device(cfg, device)
    t0 = time.perf_counter()
    started = _start_ray(cfg)
    ray_init_s = time.perf_counter() - t0
    try:
        with tempfile.TemporaryDirectory(prefix="pix2seqd-train-overhead-") as storage:
            runs = _rounds(cfg, plan, device, storage)
    finally:
        if started:
            ray.shutdown()
    return _summary(cfg, plan, runs, ray_init_s)


def _check_device(cfg: Config, device: str) -> None:
    micro_batch(cfg)  # fails early on a batch too small for the workers
    if device == "cuda" and torch.cuda.device_count() < cfg.train.num_workers:
        raise RuntimeError(
            f"--device cuda needs one GPU per process: train.num_workers="
            f"{cfg.train.num_workers}, this machine has {torch.cuda.device_count()}"
        )


def _start_ray(cfg: Config) -> bool:
    """`init_ray` with room for the workers; True if Ray was started here."""

    if not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private, short-lived local Ray
    return init_ray(train_cpus=cfg.train.num_workers * cfg.train.cpus_per_worker)


def _rounds(cfg: Config, plan: OverheadPlan, device: str, storage: str) -> dict[str, list]:
    """Alternate plain and Ray `plan.rounds` times: {'plain': [[s per step], ...],
    'ray': [[s per step], ...], 'startup': [s, ...]}."""
    runs: dict[str, list] = {"plain": [], "ray": [], "startup": []}
    for _ in range(plan.rounds):
        runs["plain"].append(run_plain(cfg, plan.warmup, plan.steps, device))
        times, startup = run_ray(cfg, plan.warmup, plan.steps, device, storage)
        runs["ray"].append(times)
        runs["startup"].append(startup)
    return runs


def _summary(
    cfg: Config, plan: OverheadPlan, runs: dict[str, list], ray_init_s: float
) -> dict[str, Any]:
    """Median step over all timed steps of all rounds per side, their ratio, per-round
    medians and what was run."""
    ray_s = statistics.median(itertools.chain(*runs["ray"]))
    plain_s = statistics.median(itertools.chain(*runs["plain"]))
    return {
        "ray_train_step_s": ray_s,
        "plain_step_s": plain_s,
        "ratio": ray_s / plain_s,
        "workers": cfg.train.num_workers,
        "micro_batch": micro_batch(cfg),
        "timed_steps": plan.steps,
        "rounds": plan.rounds,
        "ray_step_s_by_round": [round(statistics.median(r), 5) for r in runs["ray"]],
        "plain_step_s_by_round": [round(statistics.median(r), 5) for r in runs["plain"]],
        "ray_init_s": ray_init_s,
        "ray_startup_s": statistics.mean(runs["startup"]),
    }
