"""Presets as plain functions returning a `Config` (the paper recipes and the tiny CPU one).

Paper presets follow the official configs (spec §6.2); `tiny` is the same model code with
smaller sizes so the default job trains on a 2-core CPU in minutes.
"""
from __future__ import annotations

from dataclasses import replace

from pix2seqd.models.config import (
    Conditioning,
    DiffusionConfig,
    LossConfig,
    DecoderConfig,
    EncoderConfig,
    ModelConfig,
    NormMode,
    SampleConfig,
)
from pix2seqd.platform.config import (
    Config, DataConfig, DatasetKind, EvalConfig, IdOrder, OptimConfig, TrainConfig,
)


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
    """Cityscapes fine-tuning from a COCO checkpoint (--init-from), at a single resolution as
    the paper says (§4.1). The official settings are not public; these are the port's: the
    high-res COCO stage's sizes and learning rate (image 1024 / mask 512, lr 1e-5, no
    warm-up, no jitter), 19 classes + void, 2975 training images at batch 16 for 100 epochs."""
    base = coco_highres()
    return replace(
        base,
        model=replace(base.model, num_classes=20),
        data=replace(base.data, dataset=DatasetKind.CITYSCAPES, train_split="train", val_split="val"),
        train=replace(base.train, steps=18_600, checkpoint_every=1_860),
    )


def davis() -> Config:
    """DAVIS 2017 video model (spec §5.2-5.3): image 512 x 1024 / mask 256 x 512, the decoder
    conditioned on the masks of frames t-2 and t-1 (304 input channels), K = 16, class
    channel all zero (one class: void), frame dropout 0.2. Fine-tuned from a COCO image
    checkpoint (--init-from; new input channels start at zero): 50,000 steps at batch 32,
    constant lr 3e-5, no warm-up, EMA 0.99, no colour jitter. Streaming sampling: 32 steps
    on the first frame, 8 on later ones, td 1."""
    base = Config()
    model = replace(base.model, num_classes=1, max_instances=16,
                    decoder=replace(base.model.decoder, cond_frames=2, frame_dropout=0.2))
    return replace(
        base,
        model=model,
        sample=SampleConfig(steps=32, later_steps=8, td=1.0, min_pixels=10),
        data=replace(base.data, dataset=DatasetKind.DAVIS, image_size=512, image_width=1024,
                     scale_jitter=(1.0, 1.0), color_jitter=0.0, train_split="train", val_split="val"),
        optim=replace(base.optim, lr=3e-5, warmup_steps=0, end_lr_factor=1.0),
        train=replace(base.train, batch_size=32, steps=50_000, ema_decay=0.99, checkpoint_every=1_000),
    )


def tiny() -> Config:
    """CPU-sized model on the generated data: 1.2M parameters, image 64 / mask 16.

    Same code as the paper presets; only sizes and these training choices differ, each
    measured on the generated set with 2 CPU workers within the job's time budget
    (README, "How the tiny preset's choices were found"):
    - decoder.init_scale 1.0 instead of the official near-zero 1e-10: with a 16-channel head
      and ~1k steps the zero-initialised head grows too slowly (val class accuracy after
      400 steps 0.71 vs 0.25);
    - diffusion.b_scale 0.3 instead of 0.1: with fresh random ids per epoch and ~1k steps the
      model learns to separate instances sooner (segment recall@0.5 after 600 steps 0.20 at
      b=0.3, 0.11 at b=0.1, 0.07 at b=0.5); val PQ 0.15 vs 0.03 for the full default job;
    - loss.p 0.6 instead of 0.2: things are small next to stuff and starve at p = 0.2
      (image model only: `as_video` goes back to the paper's 0.2);
    - model.mask_stride 4 instead of 2: the decoder dominates the step time, so a 16 x 16 mask
      doubles the steps per minute (77-85 vs 38-47 img/s) for the same PQ (0.176 vs
      0.13-0.17) and better PQ_th (0.064 vs 0.04-0.05);
    - decoder.softmax_groups 4 instead of the paper's 2 (the official code's
      `outp_softmax_groups`): 4-bit groups, a 16-way softmax each, hold every class (8) and
      id (8; video 16) of the tiny models in one group, the upper groups being always 0, so
      the model can predict the same values; the head and its loss shrink from 512 to 64
      logits per mask pixel, the largest single cost of the video step (27 of ~140 ms). Step
      time on one thread, `python scripts/softmax_groups_bench.py`: image 65.2 -> 56.2 ms
      (ratio 0.86), video 145.7 -> 105.3 ms (ratio 0.72);
    - model.max_instances 8 (ids 1..7, three id bits) instead of 16: the generated images
      have at most 8 segments (training voids the smallest beyond 7, 2.5 % of images), and
      things split into ids that differ in one bit less often (PQ_th 0.100-0.117 vs 0.085);
    - optim.lr 3e-3 with 100 warm-up steps (6e-3 diverges: loss 1.80 vs 1.13 at step 1,200),
      sample.min_pixels 10 (images are ~64-96 px);
    - no colour or scale jitter: the model underfits (train PQ 0.31, val PQ 0.32 after
      3,200 steps), the generator already draws every colour at random, and scale jitter
      only shows objects larger than evaluation does (PQ_th 0.041 vs 0.019 at step 1,200);
    - data.vflip and data.rgb_symmetry (not in the paper; both leave the generated data's
      distribution unchanged, see `DataConfig`): the model had come to overfit the 800
      generated training images (PQ 0.727 on 200 of them against 0.570 on val, the val curve
      flat for the last ~5 minutes); with both, 0.662 against 0.599, image PQ 0.599 and 0.598
      (0.544-0.585 before), generalisation 0.620 and 0.602 (0.554-0.564), video J&F on 50
      sequences of another seed 0.625, 0.602, 0.627, 0.632 (0.595 on average before);
    - data.id_order raster instead of the paper's random ids: the target ids become a
      function of the image (1..N by first pixel, row-major), so every noise level teaches
      the ids, where random ids teach them only when the noisy input already shows them;
      after 1,200 steps PQ 0.331 vs 0.118 (PQ_th 0.152 vs 0.041, PQ_st 0.569 vs 0.220);
    - data.still_fraction 0.5 (video fine-tuning only; `as_video` takes the stills from the
      preset's own image set): the generated DAVIS set has 30 training sequences, and
      fine-tuned on them alone the video model segments training first frames far better
      than val ones (object IoU 0.78 vs 0.48, scripts/video_probe.py); with half of the
      clips made from the 800 still images (simulated motion, see `still_clips`) val J&F
      was 0.436 and 0.420 in two 15-min runs against 0.411, and 0.386 / 0.380 against
      0.352 on 50 sequences of another seed (README, "Results");
    - data.history_drop 0.2 and data.history_add 0.2 (video fine-tuning only; see
      `data.history_noise`): conditioning masks with a missed or a false object, so the
      model corrects its own history instead of copying it (README, "Results");
    - train.decay_to_budget with 12,000 scheduled steps (train.video_steps 7,000 for the video
      stage): the learning rate decays linearly to 0.1 x over the time budget, however many
      steps the machine makes of it, and the step counts are upper bounds the budget ends
      first. Fixed schedules sized for one machine were cut short on a slower one (a
      4,400-step image schedule ended at step 2,900 on a 62 img/s day, its decay two-thirds
      done) and stopped early on a faster one (the same schedule done in 7.4 of the 15
      minutes, the 2,000-step video stage in 6). From the same image checkpoint, the video
      stage of 2,000 steps scored J&F 0.528 and 0.542 on the generated val sequences (0.540
      and 0.525 on 50 sequences of another seed); decaying over the 15 minutes (5,544 steps) 0.591
      (0.596). The video stage decays (a constant 3e-3, the paper's constant-rate recipe,
      diverged at step 1,740 in one run: loss 0.04 -> 0.39, J&F 0.158);
    - fused AdamW: the 2 CPU workers train 4-13 steps/s depending on the machine (slower
      while Ray Data decodes ahead early in the run); val PQ on 32 images every 400 steps
      gives the curve (and the best checkpoint). Ray Data sizes the stream by the upper
      bounds and decodes ahead early in the run. Its scheduling loop used to spin while the
      stream was ahead, ~0.6 of the 2 cores (py-spy), so larger bounds cost speed: with
      video_steps 8,000 the video stage trained at 50 img/s for 11 minutes, then 85 (3,160
      steps, J&F 0.535); with 5,000 at 75-90 img/s (4,376 and 4,280 steps, J&F 0.577 and
      0.588). With the loop paused while the stream is ahead (`data.executor_nap`), the
      image stage made 7,448 steps (PQ 0.585) and three video stages from it 5,000, 5,000
      and 4,488 steps at 83-95 img/s (J&F 0.633, 0.624, 0.613); a second image run 7,325
      (PQ 0.576), its video stage 4,544 (J&F 0.598; 2026-12-03). With 4 softmax groups
      (above) the video stage trains at 99-107 img/s, past the old 5,000-step bound, hence
      7,000: 4,975-5,600 steps, J&F 0.646, 0.572, 0.568, 0.616 on the 10 val sequences and
      0.603, 0.591, 0.605, 0.595 on 50 of another seed (2 groups: 0.592 on average); image PQ
      0.570 and 0.544, 0.557 and 0.555 on the generalisation set (2 groups: 0.564, 0.554).
      Ray Data decodes the whole stream before the trainers get both cores back, so its cost
      per example sets how long the slow start lasts: with decoded images cached per process
      (`data.cache_mb`) and map tasks of 1,024 of these small examples
      (`pipeline.rows_per_task`) the stream decodes 1.92 x as fast
      (`python scripts/stream_drain_bench.py`), the image stage's slow start fell from ~6 minutes
      to ~1.7 and the run made 9,552 steps instead of 6,056-6,704 (PQ 0.642; README,
      "Results").
    """
    model = ModelConfig(
        num_classes=8,
        max_instances=8,
        mask_stride=4,
        encoder=EncoderConfig(
            depths=(1, 1, 1), width=8, norm=NormMode.BATCH, tf_layers=2, tf_dim=64,
            tf_heads=4, tf_mlp=128, drop_path=0.0, drop_units=0.0, fuse_dim=32,
        ),
        decoder=DecoderConfig(dim=16, ch_mult=(1, 2, 4, 4), tf_dim=64, tf_layers=2, tf_heads=4, init_scale=1.0,
                              tf_mlp=128, softmax_groups=4),
    )
    return Config(
        model=model,
        diffusion=DiffusionConfig(b_scale=0.3),
        loss=LossConfig(p=0.6),
        sample=SampleConfig(steps=20, td=2.0, min_pixels=10),
        data=DataConfig(image_size=64, scale_jitter=(1.0, 1.0), color_jitter=0.0, vflip=True,
                        rgb_symmetry=True, id_order=IdOrder.RASTER, still_fraction=0.5,
                        history_drop=0.2, history_add=0.2),
        optim=OptimConfig(lr=3e-3, warmup_steps=100, end_lr_factor=0.1, weight_decay=0.05),
        train=TrainConfig(
            batch_size=16, steps=12_000, ema_decay=0.99, num_workers=2, cpus_per_worker=0.5,
            torch_threads=1, log_every=25, checkpoint_every=400, keep_checkpoints=2, time_budget_min=15.0,
            decay_to_budget=True, video_steps=7_000,
        ),
        eval=EvalConfig(max_images=0, batch_size=16, overlays=4, num_actors=1, every_steps=400),
    )


def as_video(cfg: Config) -> Config:
    """The streaming video model of an image preset (spec §5.2-5.3), for train_davis:
    decoder conditioned on the masks of frames t-2 and t-1 with frame dropout 0.2, one
    class (void: the class channel is all zero), at most 16 ids, DAVIS splits, no scale or
    colour jitter, constant learning rate without warm-up, EMA 0.99, sampling 32 steps on
    the first frame then 8, td 1, min_pixels 10 (paper values), and the paper's mask stride
    of 2 at most: J&F scores boundaries at the original resolution, and on the generated val
    sequences ground truth passed through a stride-4 mask scores J&F 0.67, through stride 2
    0.90 (README, "Results"; scripts/mask_oracle.py). The weights carry over: the fuser has the same layers at
    strides 2 and 4, the decoder is convolutional with fixed position codes. Image size,
    steps and batch stay the preset's. A preset with `data.still_fraction` > 0 (tiny) gets
    its still clips from its own image set (`data.root`, or the generated one) unless
    `data.stills` names one. A preset that already is a video model (davis) is returned
    unchanged. The loss weight p is the paper's 0.2 whatever the image preset's: the
    video model's background is one id 0 region, and an image preset's larger p (tiny:
    0.6) makes its pixels cheap, so the model paints objects over it (generated val, run
    with p 0.6: 12 % of background pixels predicted as objects, the first frame's ids 62 %
    pure; with 0.2: 8.5 % and 69 %, J&F 0.422 -> 0.521; README, "Results"). The learning
    rate is the paper's constant one unless the preset sets `train.video_steps` (tiny): then
    the video stage decays it over that many steps as the image stage does (and, with
    `train.decay_to_budget`, over the time budget)."""
    if cfg.model.decoder.cond_frames > 0:
        return cfg
    if cfg.train.video_steps < 0:
        raise ValueError(f"train.video_steps={cfg.train.video_steps} must be >= 0 (0: the paper's "
                         "constant learning rate for the video stage)")
    decay = cfg.train.video_steps > 0  # the preset's own schedule, not the paper's constant lr
    model = replace(cfg.model, num_classes=1, max_instances=min(16, cfg.model.max_instances),
                    mask_stride=min(2, cfg.model.mask_stride),
                    decoder=replace(cfg.model.decoder, cond_frames=2, frame_dropout=0.2))
    return replace(
        cfg, model=model,
        loss=replace(cfg.loss, p=0.2),
        sample=SampleConfig(steps=32, later_steps=8, td=1.0, min_pixels=10),
        data=replace(cfg.data, dataset=DatasetKind.DAVIS, scale_jitter=(1.0, 1.0), color_jitter=0.0,
                     train_split="train", val_split="val", stills=_stills(cfg.data)),
        optim=replace(cfg.optim, warmup_steps=0,
                      end_lr_factor=cfg.optim.end_lr_factor if decay else 1.0),
        train=replace(cfg.train, ema_decay=0.99, steps=cfg.train.video_steps if decay else cfg.train.steps),
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
