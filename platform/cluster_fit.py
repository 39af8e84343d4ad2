"""Whether a training job's workers can ever be placed on the Ray cluster it runs on: checked
on the driver once `train.use_gpu` is decided, before the job reads data or opens its MLflow
run. A request no node can hold would otherwise wait for nodes no autoscaler can add (Ray
only logs such a request as infeasible).

The cluster is what it can become. With an autoscaler (the config `ray up` leaves on the head,
`train.auto.AUTOSCALER_CONFIG`): the head and up to `max_workers` nodes of each worker type,
no more than the config's overall `max_workers`, each with the resources its type declares.
Without one: the nodes alive now.

The request is Ray Train's: `train.num_workers` bundles of `train.cpus_per_worker` CPUs, and
one GPU each with GPU workers, placed by `train.placement_strategy`: STRICT_PACK needs one
node holding all of them, STRICT_SPREAD a node each, PACK and SPREAD any nodes. The Ray Data
pipeline that feeds them needs half a CPU more somewhere.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import yaml

from pix2seqd.platform.config import Config, Placement
from pix2seqd.platform.train.auto import AUTOSCALER_CONFIG

log = logging.getLogger(__name__)

DATA_PIPELINE_CPUS = 0.5


@dataclass(frozen=True)
class NodeKind:
    """Nodes of one shape: `count` of them at most; `capped`: counted against the
    autoscaler's overall `max_workers` (worker types, not the head)."""

    name: str
    resources: Mapping[str, float]
    count: int
    capped: bool = False

    def holds(self, bundle: Mapping[str, float]) -> float:
        """How many `bundle`s one node of this kind holds at once (inf for an empty one)."""
        need = {k: v for k, v in bundle.items() if v > 0}
        if not need:
            return math.inf
        return min(math.floor(self.resources.get(k, 0.0) / v + 1e-9) for k, v in need.items())

    def __str__(self) -> str:
        hidden = ("memory", "object_store_memory")  # bytes; node:<ip>-style keys too
        shown = {k: v for k, v in self.resources.items() if k not in hidden and ":" not in k}
        return f"{self.name} {_fmt(shown)} x{self.count}"


def autoscaler_node_kinds(config: Mapping[str, Any]) -> tuple[list[NodeKind], int] | None:
    """The node types of an autoscaler config and its overall `max_workers`; None when a
    type leaves its CPUs to be filled in from the cloud's instance type (unknown here)."""
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    kinds = []
    for name, spec in types.items():
        resources = dict((spec or {}).get("resources") or {})
        if "CPU" not in resources:
            return None
        count = 1 if name == head else int(spec.get("max_workers", 0))
        if count > 0:
            kinds.append(NodeKind(name, resources, count, capped=name != head))
    cap = int(config.get("max_workers", sum(k.count for k in kinds if k.capped)))
    return kinds, cap


def live_node_kinds(nodes: list[dict[str, Any]]) -> list[NodeKind]:
    """The alive nodes of `ray.nodes()`, one kind each."""
    return [
        NodeKind(f"node {n['NodeID'][:8]}", dict(n["Resources"]), 1) for n in nodes if n["Alive"]
    ]


def placement_problem(
    bundle: Mapping[str, float], n: int, strategy: Placement, kinds: list[NodeKind], cap: int
) -> str:
    """Why `n` bundles placed by `strategy` never fit on nodes of `kinds` (at most `cap`
    capped ones), or '' when they do."""
    if not any(v > 0 for v in bundle.values()):
        return ""
    fits = sorted((k for k in kinds if k.holds(bundle) >= 1), key=lambda k: -k.holds(bundle))
    if not fits:
        return f"no node can hold one worker ({_fmt(bundle)})"
    if strategy is Placement.STRICT_PACK:
        if fits[0].holds(bundle) < n:
            need = _fmt({k: v * n for k, v in bundle.items()})
            return f"STRICT_PACK needs one node with {need}; one node holds {fits[0].holds(bundle)} at most"
        return ""
    per_node = 1 if strategy is Placement.STRICT_SPREAD else None
    left, capped_left = n, cap
    for kind in fits:
        take = kind.count if not kind.capped else min(kind.count, capped_left)
        per = per_node or kind.holds(bundle)
        take = min(take, math.ceil(left / per))
        left -= take * per
        capped_left -= take if kind.capped else 0
        if left <= 0:
            return ""
    spread = " on nodes of their own" if strategy is Placement.STRICT_SPREAD else ""
    return f"{n} workers{spread} need more nodes than the cluster can have"


def cluster_node_kinds() -> tuple[list[NodeKind], int] | None:
    """The cluster this process is connected to, as it can become (module docstring)."""
    path = Path(os.path.expanduser(AUTOSCALER_CONFIG))
    if path.is_file():
        return autoscaler_node_kinds(yaml.safe_load(path.read_text()) or {})
    kinds = live_node_kinds(ray.nodes())
    return kinds, len(kinds)


def check_training_fits(cfg: Config) -> None:
    """Raise ValueError, naming the request and the cluster's node kinds, when the training
    workers of `cfg` (use_gpu decided) can never be placed. A job's driver checks; a sweep
    trial (an actor, on any node) does not: its sweep's driver checked before the trials
    started, where the autoscaler's config is (the head), which a worker node lacks."""
    # is_initialized first: asking a process without Ray for its context would start one
    if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
        return
    t = cfg.train
    found = cluster_node_kinds()
    if found is None:
        log.info("the autoscaler config leaves node resources to the cloud: placement unchecked")
        return
    kinds, cap = found
    bundle = {"CPU": t.cpus_per_worker, **({"GPU": 1.0} if t.uses_gpu else {})}
    problem = placement_problem(bundle, t.num_workers, t.placement_strategy, kinds, cap)
    cpus = sum(k.resources.get("CPU", 0.0) * k.count for k in kinds)
    if not problem and cpus < t.num_workers * t.cpus_per_worker + DATA_PIPELINE_CPUS:
        problem = (
            f"{cpus:g} CPUs for {t.num_workers * t.cpus_per_worker:g} of workers plus "
            f"{DATA_PIPELINE_CPUS} for the Ray Data pipeline"
        )
    if problem:
        raise ValueError(
            f"train.num_workers={t.num_workers} workers of {_fmt(bundle)} "
            f"(train.placement_strategy={t.placement_strategy.value}, "
            f"train.use_gpu={t.use_gpu.value}) can never be placed: {problem}. "
            f"The cluster can have: {', '.join(map(str, kinds))}. Lower train.num_workers or "
            "train.cpus_per_worker, change the placement, or add a node type that holds them"
        )


def _fmt(resources: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items())) + "}"
