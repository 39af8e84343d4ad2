"""The weights a training run starts from, decided once on the driver: the ResNet-50 file of
`model.encoder.init`, then the `--init-from` checkpoint's trained weights
(models/weight_transfer.py). The workers load the result from Ray's object store, so the
file and the checkpoint need to be readable by the driver only.

Every choice is reported: the log names the weights loaded and started fresh (by module,
every name at DEBUG), and the run's MLflow tags record the counts and the fresh modules.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from pix2seqd.models.config import Conditioning
from pix2seqd.models.pix2seq_d import MASK_BITS, check_head
from pix2seqd.models.resnet import ResNetC4, load_torchvision_resnet
from pix2seqd.models.weight_transfer import (
    ALL,
    ConvInLayout,
    Transfer,
    merge_scopes,
    plan_transfer,
    summarise_keys,
)
from pix2seqd.platform.config import Config, flatten, from_flat
from pix2seqd.platform.train import checkpoints
from pix2seqd.platform.train.checkpoints import checkpoint_location
from pix2seqd.platform.train.step import build_model

log = logging.getLogger(__name__)

MAX_TAG = 5000  # MLflow's tag value limit


@dataclass(frozen=True)
class StartWeights:
    """state: tensors to load over a fresh model (strict=False); loaded / fresh: the model's
    keys that come from a file or checkpoint, and those that keep their random start;
    trained_scope: what this run's checkpoints will declare trained."""

    state: dict[str, torch.Tensor] = field(default_factory=dict)
    model_keys: tuple[str, ...] = ()
    loaded: tuple[str, ...] = ()
    fresh: tuple[str, ...] = ()
    trained_scope: tuple[str, ...] = ALL

    def tags(self) -> dict[str, str]:
        """The run's MLflow tags of this start."""
        return {
            "init/loaded_keys": str(len(self.loaded)),
            "init/fresh_keys": str(len(self.fresh)),
            "init/fresh": summarise_keys(self.fresh, self.model_keys)[:MAX_TAG],
            "trained_scope": ",".join(self.trained_scope) or "(all)",
        }


def start_weights(cfg: Config, init_from: str = "") -> StartWeights:
    """The start of a run of `cfg`: the encoder.init file's backbone, then `init_from`'s
    weights within its trained scope. ValueError naming the file or checkpoint and the keys
    when either does not fit the model."""
    with torch.device("meta"):  # names and shapes only
        target = build_model(cfg).state_dict()
    state: dict[str, torch.Tensor] = {}
    inherited: tuple[str, ...] = ()
    if cfg.model.encoder.init:
        state.update(_backbone(cfg))
        inherited += ("encoder.backbone.",)
    if init_from:
        transfer, scope = _from_checkpoint(cfg, target, init_from)
        state.update(transfer.state)
        inherited += scope
    own = ALL if cfg.model.decoder.conditional != Conditioning.NONE else ("decoder.",)
    weights = StartWeights(
        state,
        tuple(target),
        tuple(k for k in target if k in state),
        tuple(k for k in target if k not in state),
        merge_scopes(own, inherited),
    )
    _report(weights, cfg, init_from)
    return weights


def _backbone(cfg: Config) -> dict[str, torch.Tensor]:
    enc = cfg.model.encoder
    backbone = ResNetC4(enc.depths, enc.width, enc.norm)
    done = load_torchvision_resnet(backbone, enc.init)
    log.info(
        "model.encoder.init %s: %d backbone weights loaded; unused (stages the model cuts off): %s",
        done.path,
        len(done.loaded),
        summarise_keys(done.unused, done.unused) or "none",
    )
    return {f"encoder.backbone.{k}": v for k, v in backbone.state_dict().items()}


def _from_checkpoint(
    cfg: Config, target: dict[str, torch.Tensor], ref: str
) -> tuple[Transfer, tuple[str, ...]]:
    """(the transfer of checkpoint `ref` into the model of `cfg`, its trained scope)."""
    with checkpoints.inference_state(checkpoint_location(ref)) as snap:
        source = snap.get("ema") or {}
        check_head(source, cfg.model, cfg.loss, f"--init-from {ref}")
        scope = tuple(snap.get("trained_scope") or ALL)
        source_video = int((snap.get("config") or {}).get("model.decoder.cond_frames", 0)) > 0
        layout = None
        if cfg.model.decoder.cond_frames > 0 and not source_video:
            self_cond = MASK_BITS if cfg.model.decoder.self_cond else 0
            layout = ConvInLayout(MASK_BITS + cfg.model.encoder.fuse_dim, self_cond)
        transfer = plan_transfer(target, source, scope, layout, f"--init-from {ref}")
        # copies: the checkpoint's tensors are memory-mapped and valid inside this block only
        copied = {k: v.clone() for k, v in transfer.state.items()}
    return Transfer(copied, transfer.loaded, transfer.fresh, transfer.adapted), scope


def _report(weights: StartWeights, cfg: Config, init_from: str) -> None:
    if not (cfg.model.encoder.init or init_from):
        return
    log.info(
        "start weights: %d loaded (%s), %d fresh (%s)",
        len(weights.loaded),
        " + ".join(filter(None, (cfg.model.encoder.init, init_from))),
        len(weights.fresh),
        summarise_keys(weights.fresh, weights.model_keys) or "none",
    )
    log.debug("loaded: %s", ", ".join(weights.loaded))
    log.debug("fresh: %s", ", ".join(weights.fresh))


# Config keys that must be the teacher's for a student to learn its sampler's steps
_TEACHER_KEYS = ("model", "loss.kind", "diffusion.b_scale")


def teacher_weights(cfg: Config) -> dict[str, torch.Tensor] | None:
    """The EMA weights of `distill.teacher` (read on the driver), or None when the run does
    not distil. ValueError naming the checkpoint and the keys when the teacher's model,
    `loss.kind` or `diffusion.b_scale` differ from the student's: a student has the
    teacher's architecture and learns to take its steps."""
    ref = cfg.distill.teacher
    if not ref:
        return None
    with checkpoints.inference_state(ref) as snap:
        theirs = flatten(from_flat(snap["config"]))
        ours = flatten(cfg)
        # 'auto' (input_norm, stem_pool) is decided when a run starts: a checkpoint written
        # by training holds the decision, one written otherwise may hold 'auto' itself
        differ = [
            k
            for k in sorted(ours)
            if k.startswith(_TEACHER_KEYS) and theirs.get(k) not in (ours[k], "auto")
        ]
        if differ:
            shown = ", ".join(
                f"{k}: teacher {theirs.get(k)!r}, student {ours[k]!r}" for k in differ
            )
            raise ValueError(f"distill.teacher {ref}: the student must have its config ({shown})")
        state = {k: v.clone() for k, v in snap["ema"].items()}
    log.info("distill.teacher %s: %d tensors (EMA weights)", ref, len(state))
    return state
