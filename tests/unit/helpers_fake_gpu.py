"""GPUs that are only resources, for the fake multi-node cluster (tests/integration/
test_cluster_as_written.py): Ray hands out the GPUs its fake nodes declare, so every GPU
request is scheduled as on the real cluster, while the work runs on this machine's CPU.

`cpu_in_place_of_gpus` is the job's `worker_process_setup_hook` (run in every worker process
of the job, Ray Train's controller and workers and Tune's trials included). It changes the
two things Ray Train derives from a GPU it assigns: the worker's torch device (CUDA) becomes
the CPU, and the process group's backend (NCCL) becomes gloo. The project's own code picks
CUDA only when `torch.cuda.is_available()`, false here.
"""

from __future__ import annotations

import functools

import torch.distributed as dist
from ray.air._internal import device_manager


def cpu_in_place_of_gpus() -> None:
    device_manager.SUPPORTED_ACCELERATOR_TORCH_DEVICE_MANAGER.pop("GPU", None)
    if not getattr(dist.init_process_group, "gloo_only", False):
        dist.init_process_group = _gloo_only(dist.init_process_group)


def _gloo_only(init):
    @functools.wraps(init)
    def wrapper(*args, **kwargs):
        kwargs["backend"] = "gloo"
        return init(*args, **kwargs)

    wrapper.gloo_only = True
    return wrapper
