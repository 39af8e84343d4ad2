"""Convert an official Pix2Seq TensorFlow checkpoint's image encoder into a `checkpoint.pt`
that `--init-from` accepts (docs/official_checkpoint.md).

The file holds `ema` and `model` (the same state dict: only the converted weights, our
names), `config` (the flattened run config whose encoder has the converted sizes, with
`model.encoder.input_norm` = none: the official model reads pixels in [0, 1]), `step` 0,
`trained_scope` (the key prefixes the file provides; every other weight of a model started
from it keeps its own initialisation) and `source` (where it came from).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pix2seqd.models.config import EncoderConfig
from pix2seqd.platform.config import Config, override, storable
from pix2seqd.platform.official.names import (
    ENCODER_ROOTS,
    STEM_KERNEL,
    TRAINED_SCOPE,
    Layout,
    Rule,
    encoder_rules,
)
from pix2seqd.platform.official.tf_checkpoint import VALUE_SUFFIX, CheckpointError, TFCheckpoint
from pix2seqd.platform.train import checkpoints
from pix2seqd.platform.train.step import build_model

log = logging.getLogger(__name__)

SLOT = "/.OPTIMIZER_SLOT/"
# the official encoder's input conventions: pixels in [0, 1], TensorFlow's SAME stem pool
OFFICIAL_INPUTS = {"model.encoder.input_norm": "none", "model.encoder.stem_pool": "tf_same"}
DESCRIPTION = (
    "image encoder (ResNet-50 C4 backbone, tokeniser, transformer encoder) of an official "
    "Pix2Seq TensorFlow checkpoint, converted by jobs/convert_official.py"
)


@dataclass(frozen=True)
class Conversion:
    """state: our key -> tensor; root: the official encoder's path ("model/encoder/");
    rules: how each key was made; unused: the checkpoint's tensor names left alone."""

    state: dict[str, torch.Tensor]
    root: str
    rules: tuple[Rule, ...]
    unused: tuple[str, ...]


def convert(ckpt: TFCheckpoint, enc: EncoderConfig) -> Conversion:
    """The encoder weights of `ckpt` for an encoder of the sizes in `enc`. CheckpointError
    naming the file and the variables when one is missing, one under the encoder's root has
    no place in `enc`'s sizes, or the attention heads differ."""
    root = encoder_root(ckpt)
    rules = encoder_rules(enc)
    used = {full(root, name) for rule in rules for name in rule.official}
    missing = sorted(used - set(ckpt.entries))
    if missing:
        raise CheckpointError(f"{ckpt.index_path}: missing the encoder variables {missing}")
    stray = [n for n in ckpt.entries if n.startswith(root) and n not in used and SLOT not in n]
    if stray:
        raise CheckpointError(
            f"{ckpt.index_path}: encoder variables with no place in this config's encoder "
            f"(model.encoder.depths={list(enc.depths)}, tf_layers={enc.tf_layers}): {sorted(stray)}"
        )
    state = {}
    for rule in rules:
        arrays = [ckpt.read(full(root, name)) for name in rule.official]
        check_heads(ckpt, root, rule, arrays, enc.tf_heads)
        state[rule.key] = to_torch(rule.layout, arrays)
    return Conversion(state, root, tuple(rules), tuple(sorted(set(ckpt.entries) - used)))


def encoder_root(ckpt: TFCheckpoint) -> str:
    for root in ENCODER_ROOTS:
        if full(root, STEM_KERNEL) in ckpt.entries:
            return root
    raise CheckpointError(
        f"{ckpt.index_path}: no official image encoder in it: none of "
        f"{[full(r, STEM_KERNEL) for r in ENCODER_ROOTS]}"
    )


def full(root: str, name: str) -> str:
    return f"{root}{name}{VALUE_SUFFIX}"


def check_heads(ckpt: TFCheckpoint, root: str, rule: Rule, arrays: list, heads: int) -> None:
    """Our q/k/v weights are (heads*head_dim, dim) whatever the split, so the heads are
    checked on the official (dim, heads, head_dim) kernels."""
    if rule.layout == Layout.HEADS_IN and arrays[0].shape[1] != heads:
        raise CheckpointError(
            f"{ckpt.index_path}: {full(root, rule.official[0])} has {arrays[0].shape[1]} "
            f"attention heads, the config model.encoder.tf_heads={heads}"
        )


def to_torch(layout: Layout, arrays: list[np.ndarray]) -> torch.Tensor:
    """The official tensors in our layout, concatenated along dimension 0."""
    parts = []
    for a in arrays:
        if layout == Layout.CONV:
            a = a.transpose(3, 2, 0, 1)
        elif layout == Layout.DENSE:
            a = a.T
        elif layout == Layout.HEADS_IN:
            a = a.reshape(a.shape[0], -1).T
        elif layout == Layout.HEADS_BIAS:
            a = a.reshape(-1)
        elif layout == Layout.HEADS_OUT:
            a = a.reshape(-1, a.shape[-1]).T
        parts.append(a)
    return torch.from_numpy(np.ascontiguousarray(np.concatenate(parts, axis=0)))


def check_against_model(state: Mapping[str, torch.Tensor], cfg: Config) -> None:
    """Every converted key is a weight of the model `cfg` builds, with its shape, and every
    weight of the model under TRAINED_SCOPE is converted (BatchNorm's step counter aside).
    ValueError naming the keys otherwise."""
    with torch.device("meta"):  # names and shapes only
        own = build_model(cfg).state_dict()
    unknown = sorted(k for k in state if k not in own)
    shapes = [
        f"{k}: converted {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    scope = [k for k in own if k.startswith(TRAINED_SCOPE) and "num_batches_tracked" not in k]
    uncovered = sorted(k for k in scope if k not in state)
    if unknown or shapes or uncovered:
        raise ValueError(
            f"the converted weights do not fit the model of this config: not in the model "
            f"{unknown}, shape mismatches {shapes}, model weights not converted {uncovered}"
        )


def official_config(cfg: Config) -> Config:
    """`cfg` with the official encoder's input conventions: pixels in [0, 1], no mean / std
    (the official image decoding gives floats in [0, 1] and nothing normalises them), and the
    stem max-pooled with TensorFlow's SAME padding (models/resnet.py `tf_same_max_pool`)."""
    return override(cfg, OFFICIAL_INPUTS)


def write(out: str | Path, conv: Conversion, cfg: Config, tf_prefix: str) -> Path:
    """`out/checkpoint.pt` for `conv` and the config `cfg` (checked against it first)."""
    cfg = official_config(cfg)
    check_against_model(conv.state, cfg)
    snap: dict[str, Any] = {
        "ema": conv.state,
        "model": conv.state,
        "config": storable(cfg),
        "step": 0,
        "trained_scope": list(TRAINED_SCOPE),
        "source": {"tf_checkpoint": tf_prefix, "tf_root": conv.root, "description": DESCRIPTION},
    }
    return checkpoints.save(out, snap)


def unused_groups(names: tuple[str, ...]) -> dict[str, int]:
    """Unused tensors counted by group: the model's attributes (`model/decoder`), their
    optimizer slots apart, and the checkpoint's other objects (`optimizer`, `global_step`)."""
    groups: Counter[str] = Counter()
    for name in names:
        parts = name.removesuffix(VALUE_SUFFIX).split(SLOT)[0].split("/")
        head = "/".join(parts[:2] if parts[0] == "model" else parts[:1])
        groups[f"{head} (optimizer slots)" if SLOT in name else head] += 1
    return dict(sorted(groups.items()))


def log_conversion(conv: Conversion) -> None:
    """Every official variable used (with its key of ours), and the unused ones by group."""
    for rule in conv.rules:
        for name in rule.official:
            log.info("%s%s -> %s (%s)", conv.root, name, rule.key, rule.layout.value)
    for group, count in unused_groups(conv.unused).items():
        log.info("unused: %s: %d tensors", group, count)
    for name in conv.unused:
        log.debug("unused: %s", name)


def convert_checkpoint(tf_checkpoint: str | Path, cfg: Config, out: str | Path) -> dict[str, Any]:
    """Read, convert, check and write; the summary the job prints."""
    ckpt = TFCheckpoint(tf_checkpoint)
    conv = convert(ckpt, cfg.model.encoder)
    log_conversion(conv)
    path = write(out, conv, cfg, str(ckpt.prefix))
    return {
        "checkpoint": str(path),
        "tf_checkpoint": str(ckpt.prefix),
        "tf_root": conv.root,
        "converted_keys": len(conv.state),
        "tf_variables_used": sum(len(r.official) for r in conv.rules),
        "tf_variables_unused": unused_groups(conv.unused),
        "trained_scope": list(TRAINED_SCOPE),
        "input_norm": "none",
        "stem_pool": "tf_same",
    }
