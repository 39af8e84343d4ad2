"""Config values a training run decides when it starts, on the driver, once Ray is up:
`train.use_gpu=auto`, and the encoder's input conventions `model.encoder.input_norm=auto`
and `model.encoder.stem_pool=auto` (those of the weights it starts from). The decided values are what the
run records (MLflow params, the checkpoints' config), and each choice is logged with why.
"""

from __future__ import annotations

import enum
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import yaml

from pix2seqd.models.config import InputNorm, StemPool
from pix2seqd.platform.config import Config, GpuChoice, override
from pix2seqd.platform.train import checkpoints
from pix2seqd.platform.train.checkpoints import checkpoint_location

log = logging.getLogger(__name__)

# Where `ray up` puts the autoscaler's config on the head node (cluster.yaml's head start
# command passes it to `ray start --autoscaling-config`); job drivers run on the head.
AUTOSCALER_CONFIG = "~/ray_bootstrap_config.yaml"


def resolve_auto(cfg: Config, init_from: str = "") -> Config:
    """`cfg` with `train.use_gpu` and `model.encoder.input_norm` decided (see their
    functions); values the user set are kept."""
    cfg = override(cfg, {"train.use_gpu": decide_gpu(cfg)})
    source = source_encoder(init_from)
    return override(
        cfg,
        {
            "model.encoder.input_norm": decide_input_norm(cfg, source),
            "model.encoder.stem_pool": decide_stem_pool(cfg, source),
        },
    )


def decide_gpu(cfg: Config) -> GpuChoice:
    """auto -> TRUE when the cluster has `train.num_workers` GPUs now, or its autoscaler
    can start nodes with GPUs (node types in its config); FALSE otherwise."""
    choice = cfg.train.use_gpu
    if choice is not GpuChoice.AUTO:
        return choice
    have, need = int(ray.cluster_resources().get("GPU", 0)), cfg.train.num_workers
    scalable = gpu_node_types(Path(os.path.expanduser(AUTOSCALER_CONFIG)))
    if have >= need or scalable:
        why = f"{have} GPUs in the cluster" if have >= need else f"GPU node types {scalable}"
        log.info("train.use_gpu=auto: GPU workers (%s, %d workers)", why, need)
        return GpuChoice.TRUE
    if have:
        log.warning(
            "train.use_gpu=auto: CPU workers: the cluster has %d GPUs, fewer than "
            "train.num_workers=%d; set train.num_workers=%d to train on them",
            have,
            need,
            have,
        )
    else:
        log.info("train.use_gpu=auto: CPU workers (no GPU in the cluster)")
    return GpuChoice.FALSE


def gpu_node_types(config_path: Path) -> list[str]:
    """The node types with GPUs that an autoscaler config declares (none without the file)."""
    if not config_path.is_file():
        return []
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        log.warning("train.use_gpu=auto: cannot read %s (%s); ignoring it", config_path, err)
        return []
    types: dict[str, Any] = config.get("available_node_types") or {}
    return sorted(
        name
        for name, spec in types.items()
        if float(((spec or {}).get("resources") or {}).get("GPU", 0)) > 0
        and int((spec or {}).get("max_workers", 0)) > 0
    )


def decide_input_norm(cfg: Config, source: SourceEncoder | None = None) -> InputNorm:
    """auto -> the --init-from checkpoint's (`source`) when its encoder weights carry over,
    else imagenet when `model.encoder.init` names a pretrained ResNet file, else none."""
    choice = cfg.model.encoder.input_norm
    if choice is not InputNorm.AUTO:
        _warn_if_other(source, "input_norm", choice)
        return choice
    if source is not None:
        decided, why = source.input_norm, f"the encoder of --init-from {source.ref}"
    elif cfg.model.encoder.init:
        decided, why = InputNorm.IMAGENET, f"pretrained ResNet {cfg.model.encoder.init}"
    else:
        decided, why = InputNorm.NONE, "no pretrained encoder"
    log.info("model.encoder.input_norm=auto: %s (%s)", decided.value, why)
    return decided


def decide_stem_pool(cfg: Config, source: SourceEncoder | None = None) -> StemPool:
    """auto -> the --init-from checkpoint's (`source`) when its encoder weights carry over
    (tf_same for weights converted from the official code), else torch (torchvision's)."""
    choice = cfg.model.encoder.stem_pool
    if choice is not StemPool.AUTO:
        _warn_if_other(source, "stem_pool", choice)
        return choice
    decided = source.stem_pool if source is not None else StemPool.TORCH
    if decided is not StemPool.TORCH:
        log.info("model.encoder.stem_pool=auto: %s (%s)", decided.value, source.ref)
    return decided


@dataclass(frozen=True)
class SourceEncoder:
    """The input conventions of the encoder weights an --init-from checkpoint carries over."""

    ref: str
    input_norm: InputNorm
    stem_pool: StemPool


def source_encoder(ref: str) -> SourceEncoder | None:
    """The conventions checkpoint `ref`'s encoder was trained with; None when its encoder
    weights are not part of what it carries over (its `trained_scope`) or `ref` is ''."""
    if not ref:
        return None
    meta = checkpoints.load_meta(checkpoint_location(ref))
    scope = meta.get("trained_scope") or [""]
    if not any("encoder.".startswith(p) or p.startswith("encoder.") for p in scope):
        return None
    config = meta.get("config") or {}
    # checkpoints written before a key existed, or with auto unresolved, used the old way
    norm = config.get("model.encoder.input_norm", InputNorm.NONE.value)
    pool = config.get("model.encoder.stem_pool", StemPool.TORCH.value)
    return SourceEncoder(
        ref,
        InputNorm.NONE if norm == InputNorm.AUTO.value else InputNorm(norm),
        StemPool.TORCH if pool == StemPool.AUTO.value else StemPool(pool),
    )


def _warn_if_other(source: SourceEncoder | None, key: str, choice: enum.Enum) -> None:
    if source is not None and getattr(source, key) is not choice:
        log.warning(
            "model.encoder.%s=%s, but the encoder weights of --init-from %s were trained "
            "with %s: they will see their inputs differently",
            key,
            choice.value,
            source.ref,
            getattr(source, key).value,
        )
