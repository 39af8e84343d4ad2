"""Presets as plain functions returning a `Config` (the paper recipes and the tiny CPU one).

Paper presets follow the official configs (docs/model.md, "Presets and the official configs
they mirror"); `tiny` is the same model code with smaller sizes so the default job trains on
a 2-core CPU in minutes.
"""

from __future__ import annotations

from dataclasses import replace

from pix2seqd.models.config import (
    Conditioning,
    DecoderConfig,
    DiffusionConfig,
    EncoderConfig,
    LossConfig,
    ModelConfig,
    NormMode,
    SampleConfig,
)
from pix2seqd.platform.config import (
    AutoSize,
    Config,
    DataConfig,
    DatasetKind,
    EvalConfig,
    GpuChoice,
    IdOrder,
    OptimConfig,
    TrainConfig,
)
from pix2seqd.platform.data.size_report import AUTO_MIN_CANVAS


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


def cityscapes() -> Config:
    """Cityscapes fine-tuning from a COCO checkpoint (--init-from), at a single resolution
    (paper §4.1). The paper gives no Cityscapes settings; each value here, and why:
    - canvas 1024 x 2048 (data.image_size / image_width), masks 512 x 1024 (mask_stride 2,
      as every paper preset): Cityscapes' native frame size, so frames are neither resized
      nor padded;
    - 19 classes + void (model.num_classes 20): the evaluation classes of Cityscapes;
    - no scale or colour jitter, lr 1e-5 without warm-up: the COCO high-res stage's
      fine-tuning settings, the paper's "single resolution";
    - batch 16, 18,600 steps (100 epochs of the 2,975 training frames): the high-res
      stage's batch; 100 epochs is the port's choice for a set 40 times smaller than COCO.
      On 8 GPUs that is 2 frames per card, about 43 GB by the eager r50_ablation step's
      measured peak (42.7 GiB for 16 images of 512 x 512, 8 times fewer pixels each;
      docs/results.md, "GPU"); fewer cards need model.grad_checkpoint or train.accum."""
    base = coco_highres()
    return replace(
        base,
        model=replace(base.model, num_classes=20),
        data=replace(
            base.data,
            dataset=DatasetKind.CITYSCAPES,
            image_width=2048,
            train_split="train",
            val_split="val",
        ),
        train=replace(base.train, steps=18_600, checkpoint_every=1_860),
    )


def davis() -> Config:
    """DAVIS 2017 video model (paper §3.4, §4.1): image 512 x 1024 / mask 256 x 512, the decoder
    conditioned on the masks of frames t-2 and t-1 (304 input channels), K = 16, class
    channel all zero (one class: void), frame dropout 0.2. Fine-tuned from a COCO image
    checkpoint (--init-from; new input channels start at zero): 50,000 steps at batch 32,
    constant lr 3e-5, no warm-up, EMA 0.99, no colour jitter. Streaming sampling: 32 steps
    on the first frame, 8 on later ones, td 1."""
    base = Config()
    model = replace(
        base.model,
        num_classes=1,
        max_instances=16,
        decoder=replace(base.model.decoder, cond_frames=2, frame_dropout=0.2),
    )
    return replace(
        base,
        model=model,
        sample=SampleConfig(steps=32, later_steps=8, td=1.0, min_pixels=10),
        data=replace(
            base.data,
            dataset=DatasetKind.DAVIS,
            image_size=512,
            image_width=1024,
            scale_jitter=(1.0, 1.0),
            color_jitter=0.0,
            train_split="train",
            val_split="val",
        ),
        optim=replace(base.optim, lr=3e-5, warmup_steps=0, end_lr_factor=1.0),
        train=replace(
            base.train, batch_size=32, steps=50_000, ema_decay=0.99, checkpoint_every=1_000
        ),
    )


def tiny() -> Config:
    """CPU-sized model on the generated data: about 1.2M parameters, canvas auto (64 and
    masks 16 x 16 on the generated set).

    The same model code as the paper presets, sized for the default job: 2 CPU workers
    (train.use_gpu false; the paper presets' auto would take GPUs where a cluster has them),
    a 15-minute budget. What it sets, and why:
    - sizes: one ResNet block per stage at width 8, 2 transformer layers of width 64,
      decoder dim 16, model.mask_stride 4 (the decoder dominates the step time);
    - decoder.init_scale 1.0: the official near-zero head grows too slowly in a short run;
    - diffusion.b_scale 0.3: instances separate sooner than at the paper's 0.1;
    - loss.p 0.6: small things starve next to large stuff at 0.2 (the video stage goes
      back to 0.2, see `as_video`);
    - decoder.softmax_groups 4: 16-way groups hold every class and id of the tiny models,
      with 64 logits per mask pixel instead of 512;
    - model.num_classes 8 and max_instances 8: what the generated images hold;
    - data.image_size auto: the canvas is chosen from the training set's annotation file so
      that its median thing covers 12 mask pixels or more (64 to 256; docs/data_report.md);
    - optim.lr 3e-3 with 100 warm-up steps; sample.min_pixels 10 (images are ~64-96 px);
    - no scale or colour jitter (the model underfits, and the generator already draws every
      colour); data.vflip and data.rgb_symmetry instead, symmetries of the generated data;
    - data.id_order raster: the target ids are a function of the image;
    - data.still_fraction 0.5, data.history_drop and history_add 0.2 (video stage only): more
      scenes than the 30 training sequences, and a model that corrects its own history;
    - train.decay_to_budget with upper bounds of 12,000 (image) and train.video_steps 7,000
      (video) steps: the learning rate decays over the time budget at any machine speed;
    - EMA 0.99; a checkpoint and val PQ on 32 images every 400 steps (the best is kept).
    Deviations from the paper and the measurements behind them: docs/tiny_preset.md.
    """
    model = ModelConfig(
        num_classes=8,
        max_instances=8,
        mask_stride=4,
        encoder=EncoderConfig(
            depths=(1, 1, 1),
            width=8,
            norm=NormMode.BATCH,
            tf_layers=2,
            tf_dim=64,
            tf_heads=4,
            tf_mlp=128,
            drop_path=0.0,
            drop_units=0.0,
            fuse_dim=32,
        ),
        decoder=DecoderConfig(
            dim=16,
            ch_mult=(1, 2, 4, 4),
            tf_dim=64,
            tf_layers=2,
            tf_heads=4,
            init_scale=1.0,
            tf_mlp=128,
            softmax_groups=4,
        ),
    )
    return Config(
        model=model,
        diffusion=DiffusionConfig(b_scale=0.3),
        loss=LossConfig(p=0.6),
        sample=SampleConfig(steps=20, td=2.0, min_pixels=10),
        data=DataConfig(
            image_size=AutoSize.AUTO,
            scale_jitter=(1.0, 1.0),
            color_jitter=0.0,
            vflip=True,
            rgb_symmetry=True,
            id_order=IdOrder.RASTER,
            still_fraction=0.5,
            history_drop=0.2,
            history_add=0.2,
        ),
        optim=OptimConfig(lr=3e-3, warmup_steps=100, end_lr_factor=0.1, weight_decay=0.05),
        train=TrainConfig(
            batch_size=16,
            steps=12_000,
            ema_decay=0.99,
            num_workers=2,
            use_gpu=GpuChoice.FALSE,
            cpus_per_worker=0.5,
            torch_threads=1,
            log_every=25,
            checkpoint_every=400,
            keep_checkpoints=2,
            time_budget_min=15.0,
            decay_to_budget=True,
            video_steps=7_000,
        ),
        eval=EvalConfig(max_images=0, batch_size=16, overlays=4, num_actors=1, every_steps=400),
    )


def as_video(cfg: Config) -> Config:
    """The streaming video model of an image preset, for train_davis (paper §3.4, §4.1;
    docs/model.md, "Video").

    The paper's video settings: the decoder conditioned on the masks of frames t-2 and t-1,
    frame dropout 0.2, one class (the class channel is all zero), at most 16 ids, DAVIS
    splits, no scale or colour jitter, no warm-up, EMA 0.99, sampling 32 steps on the first
    frame then 8 with td 1 and min_pixels 10, and loss p 0.2 whatever the image preset's (a
    larger p makes the one background region cheap, and the model paints objects over it).
    The mask stride is at most 2: J&F scores boundaries at the original resolution, which a
    coarser mask loses. The weights carry over: the fuser has the same layers at strides 2
    and 4, the decoder is convolutional with fixed position codes. Image size and batch stay
    the preset's; an auto canvas (tiny) becomes 64, the smallest auto choice (a DAVIS set
    has no annotation file listing its objects' sizes). The learning rate is the paper's constant one over `train.steps`, unless
    the preset sets `train.video_steps` (tiny): then the video stage decays it over that many
    steps as the image stage does (and, with `train.decay_to_budget`, over the time budget).
    A preset with `data.still_fraction` > 0 (tiny) gets its still clips from its own image
    set (`data.root`, or the generated one) unless `data.stills` names one. A preset that
    already is a video model (davis) is returned unchanged. The measurements behind the
    tiny preset's video stage: docs/tiny_preset.md."""
    if cfg.model.decoder.cond_frames > 0:
        return cfg
    if cfg.train.video_steps < 0:
        raise ValueError(
            f"train.video_steps={cfg.train.video_steps} must be >= 0 (0: the paper's "
            "constant learning rate for the video stage)"
        )
    decay = cfg.train.video_steps > 0  # the preset's own schedule, not the paper's constant lr
    model = replace(
        cfg.model,
        num_classes=1,
        max_instances=min(16, cfg.model.max_instances),
        mask_stride=min(2, cfg.model.mask_stride),
        decoder=replace(cfg.model.decoder, cond_frames=2, frame_dropout=0.2),
    )
    return replace(
        cfg,
        model=model,
        loss=replace(cfg.loss, p=0.2),
        sample=SampleConfig(steps=32, later_steps=8, td=1.0, min_pixels=10),
        data=replace(
            cfg.data,
            dataset=DatasetKind.DAVIS,
            scale_jitter=(1.0, 1.0),
            color_jitter=0.0,
            train_split="train",
            val_split="val",
            stills=_stills(cfg.data),
            image_size=(
                AUTO_MIN_CANVAS
                if isinstance(cfg.data.image_size, AutoSize)
                else cfg.data.image_size
            ),
        ),
        optim=replace(
            cfg.optim, warmup_steps=0, end_lr_factor=cfg.optim.end_lr_factor if decay else 1.0
        ),
        train=replace(
            cfg.train, ema_decay=0.99, steps=cfg.train.video_steps if decay else cfg.train.steps
        ),
    )


PRESETS = {
    "tiny": tiny,
    "coco_lowres": coco_lowres,
    "coco_highres": coco_highres,
    "r50_ablation": r50_ablation,
    "decoder_pretrain": decoder_pretrain,
    "cityscapes": cityscapes,
    "davis": davis,
}


def get_preset(name: str) -> Config:
    try:
        return PRESETS[name]()
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def _stills(data: DataConfig) -> str:
    """`data.stills` of the video model: the image preset's own set when it uses stills."""
    if data.still_fraction <= 0 or data.stills:
        return data.stills
    return data.root or "generated"
