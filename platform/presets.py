"""Presets as plain functions returning a `Config` (the paper recipes and the tiny CPU one).

Paper presets follow the official configs (spec §6.2); `tiny` is the same model code with
smaller sizes so the default job trains on a 2-core CPU in minutes.
"""
from __future__ import annotations

from dataclasses import replace

from pix2seqd.models.config import (
    Conditioning,
    DecoderConfig,
    EncoderConfig,
    ModelConfig,
    NormMode,
    SampleConfig,
)
from pix2seqd.platform.config import Config, DataConfig, EvalConfig, OptimConfig, TrainConfig


def coco_lowres() -> Config:
    """COCO stage 1: image 256 / mask 128, 800 epochs at batch 512 (118,287 images)."""
    return Config()


def coco_highres() -> Config:
    """COCO stage 2 (start with --init-from a coco_lowres checkpoint): 1024 / 512, 15 epochs."""
    base = Config()
    return replace(
        base,
        data=replace(base.data, image_size=1024, scale_jitter=(1.0, 1.0), color_jitter=0.0),
        optim=replace(base.optim, lr=1e-5, warmup_steps=0),
        train=replace(base.train, batch_size=16, steps=110_895, checkpoint_every=7_393),
    )


def r50_ablation() -> Config:
    """The paper's ablation setting (§4.3): one stage, image 512 / mask 256, 100 epochs at 128."""
    base = Config()
    return replace(
        base,
        data=replace(base.data, image_size=512),
        train=replace(base.train, batch_size=128, steps=92_412),
        optim=replace(base.optim, warmup_steps=4_621),
    )


def decoder_pretrain() -> Config:
    """Unconditional mask-decoder pre-training (paper §4.1): zero image features, no
    cross-attention, frozen encoder BatchNorm. Hyper-parameters are not public; low-res sizes."""
    base = Config()
    model = replace(
        base.model,
        encoder=replace(base.model.encoder, norm=NormMode.FROZEN),
        decoder=replace(base.model.decoder, conditional=Conditioning.NONE),
    )
    return replace(base, model=model)


def tiny() -> Config:
    """CPU-sized model on the generated data: ~1M parameters, image 64 / mask 32."""
    model = ModelConfig(
        num_classes=8,
        max_instances=16,
        encoder=EncoderConfig(
            depths=(1, 1, 1), width=8, norm=NormMode.BATCH, tf_layers=2, tf_dim=64,
            tf_heads=4, tf_mlp=128, drop_path=0.0, drop_units=0.0, fuse_dim=32,
        ),
        decoder=DecoderConfig(dim=32, tf_dim=64, tf_layers=2, tf_heads=4, tf_mlp=128),
    )
    return Config(
        model=model,
        sample=SampleConfig(steps=20, td=2.0, min_pixels=10),
        data=DataConfig(image_size=64, scale_jitter=(1.0, 1.5), color_jitter=0.3),
        optim=OptimConfig(lr=1e-3, warmup_steps=100, end_lr_factor=0.1, weight_decay=0.05),
        train=TrainConfig(
            batch_size=32, steps=1500, ema_decay=0.99, num_workers=2, cpus_per_worker=0.5,
            torch_threads=1, log_every=25, checkpoint_every=500, keep_checkpoints=2,
        ),
        eval=EvalConfig(max_images=0, batch_size=16, overlays=4, num_actors=1),
    )


PRESETS = {
    "tiny": tiny,
    "coco_lowres": coco_lowres,
    "coco_highres": coco_highres,
    "r50_ablation": r50_ablation,
    "decoder_pretrain": decoder_pretrain,
}


def get_preset(name: str) -> Config:
    try:
        return PRESETS[name]()
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
