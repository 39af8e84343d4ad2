"""Starting or joining Ray, with settings that keep small machines from hanging."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
from collections.abc import Iterator

import ray

from pix2seqd.platform.data import executor_nap as nap

PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"

# Quiet, private defaults; any value the user set wins.
_ENV_DEFAULTS = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_DEDUP_LOGS": "1",
}


def apply_env_defaults() -> None:
    for key, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def init_ray(train_cpus: float = 0.0, executor_nap: bool = True) -> bool:
    """Join the cluster named by RAY_ADDRESS (as under `ray job submit`) or start a local Ray.

    Returns True when this call started Ray (the caller then shuts it down). A local Ray gets
    at least one logical CPU more than the training workers hold (`train_cpus`), so a Ray Data
    operator can always run next to them: with every CPU held by workers the pipeline hangs.
    `executor_nap` (a job's `data.executor_nap`): datasets built in this process afterwards
    pause their scheduling loop while their output waits (`platform/data/executor_nap.py`);
    False takes the pause out of this process's DataContext.
    """

    apply_env_defaults()
    nap.install(enabled=executor_nap)
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return False
    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, math.ceil(train_cpus) + 1))
    return True


def cluster_gpus() -> int:
    """GPUs of the Ray cluster this process is connected to."""

    return int(ray.cluster_resources().get("GPU", 0))


def inference_actors(requested: int, use_gpu: bool) -> int:
    """How many inference actors to run: `requested`, or with 0 one per GPU (GPU actors) or
    one per CPU but one, which is left to the Ray Data operators that feed them."""

    if requested > 0:
        return requested
    if use_gpu:
        return max(1, cluster_gpus())
    return max(1, int(ray.cluster_resources().get("CPU", 1)) - 1)


@contextlib.contextmanager
def ray_session(train_cpus: float = 0.0, executor_nap: bool = True) -> Iterator[None]:
    """`init_ray` for the duration of a block; shuts Ray down only if it started it."""
    started = init_ray(train_cpus, executor_nap)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


@contextlib.contextmanager
def preemption_watcher(enabled: bool) -> Iterator[None]:
    """Ray Train's preemption watcher on or off for the fits started in the block
    (`train.preemption_watcher`; docs/resilience.md).

    Ray Train reads its switch, RAY_TRAIN_ENABLE_PREEMPTION_WATCHER, from the driver's
    environment when `fit()` starts its controller and passes it on to the controller and
    the workers. A value the user set wins, as with the other Ray variables here (the test
    suite sets 0: one actor less per run); otherwise the block sets it and removes it
    after."""
    if PREEMPTION_WATCHER_ENV in os.environ:
        yield
        return
    os.environ[PREEMPTION_WATCHER_ENV] = "1" if enabled else "0"
    try:
        yield
    finally:
        os.environ.pop(PREEMPTION_WATCHER_ENV, None)


@contextlib.contextmanager
def sigint_handler_kept() -> Iterator[None]:
    """Put back the caller's SIGINT handler after the block (a `TrainerV2.fit()`).

    Ray Train V2's `fit()` installs a Ctrl-C handler that aborts its controller and leaves it
    installed, so the finished controller's handle lives until the next `fit()` replaces the
    handler. Released then, in the same instant the next controller is created, the driver
    was left waiting forever to hear that the new controller was alive (Ray 2.60; three runs
    of the test suite hung there). Kept here, the handle goes when `fit()` returns. Outside
    the main thread (Tune trials) Ray installs nothing and there is nothing to put back.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, saved)
