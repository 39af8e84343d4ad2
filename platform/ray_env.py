"""Starting or joining Ray, with settings that keep small machines from hanging."""
from __future__ import annotations

import os

# Quiet, private defaults; any value the user set wins.
_ENV_DEFAULTS = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_DEDUP_LOGS": "1",
}


def apply_env_defaults() -> None:
    for key, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def init_ray(num_cpus: int | None = None) -> bool:
    """Join the cluster named by RAY_ADDRESS (as under `ray job submit`) or start a local Ray.

    Returns True when this call started Ray (the caller then shuts it down). A local Ray
    gets at least 2 logical CPUs so a Ray Data operator can always run next to the training
    workers (with every CPU held by workers, the pipeline deadlocks).
    """
    import ray

    apply_env_defaults()
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return False
    ray.init(num_cpus=num_cpus or max(2, os.cpu_count() or 1))
    return True
