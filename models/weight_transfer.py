"""Starting a model from another stage's weights (the paper's chain, §4.1: a pretrained
encoder, the unconditional decoder pre-training, COCO, then DAVIS and Cityscapes).

A source checkpoint states which of its weights are trained or pretrained: its
`trained_scope`, state-dict key prefixes ("" = all). The weights outside it are still at
their random initialisation (an unconditional decoder pre-training never runs its encoder;
a converted detector has no decoder), so they are not copied: the target keeps its own start
for them. Inside the scope every weight of the target must come from the source with its
shape, with two stated exceptions:

- cross-attention (each decoder layer's `cross_attn.*` and `ln_cross.*`): an unconditional
  source has none, and the conditional target starts them fresh;
- `decoder.conv_in.weight` of a video target from an image source: the channels both have
  are copied and the video conditioning channels start at zero (`video_conv_in`).

Anything else that does not fit is an error naming the keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

ALL = ("",)  # the scope of a checkpoint whose every weight was trained
CONV_IN = "decoder.conv_in.weight"


@dataclass(frozen=True)
class ConvInLayout:
    """The input channels of a video target's conv_in: `shared` with an image model
    ([x_t | fused]), and `self_cond_bits` trailing self-conditioning bits (0 without)."""

    shared: int
    self_cond_bits: int


@dataclass(frozen=True)
class Transfer:
    """The plan for one --init-from. state: what to load (source tensors, conv_in adapted);
    loaded: target keys taken from the source; fresh: target keys that keep their own start
    (outside the scope, or new cross-attention); adapted: keys loaded with a shape change."""

    state: dict[str, torch.Tensor]
    loaded: tuple[str, ...]
    fresh: tuple[str, ...]
    adapted: tuple[str, ...]


def in_scope(key: str, scope: Iterable[str]) -> bool:
    return any(key.startswith(prefix) for prefix in scope)


def is_cross_attention(key: str) -> bool:
    """A decoder cross-attention weight (models/transformer.py `DecoderLayer`)."""
    return ".cross_attn." in key or ".ln_cross." in key


def plan_transfer(
    target: Mapping[str, torch.Tensor],
    source: Mapping[str, torch.Tensor],
    scope: Iterable[str],
    video_conv_in_layout: ConvInLayout | None = None,
    source_name: str = "the source",
) -> Transfer:
    """The transfer of `source` (a state dict with trained `scope`) into a model whose state
    dict is `target` (only names and shapes are read: it may live on the meta device).

    video_conv_in_layout: the target's conv_in layout when it is a video model started from
    an image source; None when both are the same kind of model."""
    scope = tuple(scope)
    state, loaded, fresh, adapted, missing, misshapen = {}, [], [], [], [], []
    for key, own in target.items():
        src = source.get(key)
        if not in_scope(key, scope) or (src is None and _may_start_fresh(key)):
            fresh.append(key)
        elif src is None:
            missing.append(key)
        elif key == CONV_IN and video_conv_in_layout and src.shape != own.shape:
            state[key] = video_conv_in(own, src, video_conv_in_layout)
            adapted.append(key)
        elif src.shape != own.shape:
            misshapen.append(f"{key}: {tuple(src.shape)} vs {tuple(own.shape)}")
        else:
            state[key] = src
            loaded.append(key)
    unexpected = [k for k in source if in_scope(k, scope) and k not in target]
    if missing or misshapen or unexpected:
        raise ValueError(
            f"{source_name} does not fit this model: missing {missing}, unexpected "
            f"{unexpected}, shape mismatches (source vs model) {misshapen}"
        )
    return Transfer(state, tuple(loaded), tuple(fresh), tuple(adapted))


def _may_start_fresh(key: str) -> bool:
    return is_cross_attention(key) or key.endswith("num_batches_tracked")


def video_conv_in(own: torch.Tensor, src: torch.Tensor, layout: ConvInLayout) -> torch.Tensor:
    """A video model's `decoder.conv_in.weight` (shape of `own`) from an image model's
    (`src`): the shared input channels copied, the self-conditioning bits copied when both
    models have them (the source's channels beyond the shared ones, the target's last), the
    video conditioning channels zero, so the video model starts by ignoring its history."""
    shared, bits = layout.shared, layout.self_cond_bits
    weight = torch.zeros(own.shape, dtype=src.dtype)
    weight[:, :shared] = src[:, :shared]
    if bits and src.shape[1] - shared == bits:
        weight[:, -bits:] = src[:, -bits:]
    return weight


def merge_scopes(*scopes: Iterable[str]) -> tuple[str, ...]:
    """The union of prefix scopes, without prefixes another one covers ("" covers all)."""
    prefixes = sorted({p for scope in scopes for p in scope})
    return tuple(p for p in prefixes if not any(p != q and p.startswith(q) for q in prefixes))


def summarise_keys(keys: Iterable[str], all_keys: Iterable[str]) -> str:
    """`keys` (a subset of `all_keys`) as the largest modules they make up whole, layer
    numbers folded into `*` with a count: "encoder, decoder.bottleneck.layers.*.cross_attn (6)"
    is every encoder weight and the cross-attention of six layers. For logs and tags."""
    chosen = list(keys)
    total: dict[str, int] = {}
    for key in all_keys:
        for prefix in _prefixes(key):
            total[prefix] = total.get(prefix, 0) + 1
    picked: dict[str, int] = {}
    for key in chosen:
        for prefix in _prefixes(key):
            picked[prefix] = picked.get(prefix, 0) + 1
    modules: dict[str, set[str]] = {}
    for key in chosen:
        whole = next(p for p in _prefixes(key) if picked[p] == total.get(p, 0))
        folded = ".".join("*" if part.isdigit() else part for part in whole.split("."))
        modules.setdefault(folded, set()).add(whole)
    return ", ".join(
        name + (f" ({len(found)})" if "*" in name else "") for name, found in modules.items()
    )


def _prefixes(key: str) -> list[str]:
    """ "a.b.c" -> ["a", "a.b", "a.b.c"], shortest first."""
    parts = key.split(".")
    return [".".join(parts[: n + 1]) for n in range(len(parts))]
