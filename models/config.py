"""Model-side configuration: frozen dataclasses, one per concern.

They live in `models/` (not `platform/`) so the model package stays free of ray/mlflow and can
be built from these alone; `pix2seqd.platform.config` composes them into the run config.

Paper / official-code symbols:
    b_scale   b       analog-bit scale: bits are mapped to {-b, +b} (paper §3.2, Table 3)
    gamma     γ(t)    noise level of the cosine schedule; the decoder is told γ, not t
    p         p       loss weight exponent: pixel weight (1/(c+1))^p, c = pixels of its segment
    td        τ_d     asymmetric time difference of the DDIM sampler (paper §3.3, Fig. 6b)
    K         max_instances   instance ids are in [0, K-1]; 0 = null / void
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class NormMode(str, enum.Enum):
    """BatchNorm behaviour of the ResNet encoder."""

    BATCH = "batch"  # per-worker batch statistics
    SYNC = "sync"  # converted to SyncBatchNorm under DDP (official: synchronised BN)
    FROZEN = "frozen"  # running statistics and affine parameters fixed


class Conditioning(str, enum.Enum):
    """How the decoder sees the image (official `model.conditional`)."""

    CAT = "cat"  # fused feature map concatenated to the noisy bits
    ATTN = "attn"  # cross-attention to the encoder tokens at the U-Net bottleneck
    CAT_ATTN = "cat+attn"  # both (all paper runs)
    NONE = "none"  # unconditional decoder pre-training; zero features keep shapes


class InputNorm(str, enum.Enum):
    """What the encoder does to its input images (in [0, 1]) before the ResNet."""

    NONE = "none"  # used as they are (the official code's inputs)
    IMAGENET = "imagenet"  # (x - mean) / std with ImageNet's statistics (models/pretrained.py)
    # decided when a training run starts (platform/train/auto.py): imagenet with `init`, else
    # the --init-from checkpoint's, else none; an unresolved AUTO is treated as NONE
    AUTO = "auto"


class StemPool(str, enum.Enum):
    """Padding of the ResNet stem's 3x3 stride-2 max-pool; the output size is the same."""

    TORCH = "torch"  # one pixel on every side (torchvision's ResNet)
    TF_SAME = "tf_same"  # TensorFlow's SAME: the odd pixel after (the official code's ResNet)
    # decided when a training run starts (platform/train/auto.py): the --init-from
    # checkpoint's when its encoder carries over, else torch; unresolved = torch
    AUTO = "auto"


class LossKind(str, enum.Enum):
    SOFTMAX_CE = "softmax_ce"  # 2 x 256-way softmax cross-entropy on x0 (paper default)
    L2 = "l2"  # l2 regression of the analog bits x0 (paper Table 4)
    SIGMOID_CE = "sigmoid_ce"  # per-bit logistic loss


@dataclass(frozen=True)
class EncoderConfig:
    """ResNet-50 cut after stage 3 ("C4", stride 16) + pre-LN transformer + top-down fuser.

    `width` is the bottleneck width of the first stage (64 for ResNet-50); stage s has
    bottleneck width width*2**s and output 4*width*2**s channels.

    `init`: a ResNet-50 weight file the user downloaded (torchvision's `.pth` or timm's
    `.safetensors`, the same key layout), loaded into the backbone when a training run starts
    from scratch (platform/train/state.py; the model itself never reads it, so inference
    needs no such file). `input_norm`: see InputNorm; pretrained weights expect ImageNet's.
    `stem_pool`: see StemPool; weights converted from the official code expect TF_SAME.
    """

    depths: tuple[int, ...] = (3, 4, 6)
    width: int = 64
    norm: NormMode = NormMode.SYNC
    tf_layers: int = 12
    tf_dim: int = 512
    tf_heads: int = 16
    tf_mlp: int = 2048
    drop_path: float = 0.1
    drop_units: float = 0.1
    fuse_dim: int = 256
    init: str = ""
    input_norm: InputNorm = InputNorm.AUTO
    stem_pool: StemPool = StemPool.AUTO


@dataclass(frozen=True)
class DecoderConfig:
    """TransUNet mask decoder (official `decoder_variant='transunet'`)."""

    dim: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2)
    n_res_blocks: int = 1  # per level on the way down; n_res_blocks + 1 on the way up
    tf_dim: int = 512
    tf_layers: int = 6
    tf_heads: int = 8
    tf_mlp: int = 2048
    time_scaling: float = 1.0  # γ is embedded as sin/cos of γ * time_scaling
    conditional: Conditioning = Conditioning.CAT_ATTN
    cond_frames: int = 0  # video: previous frames whose masks condition the decoder (2)
    # video training: probability that a conditioning frame is replaced by a missing one
    # (official frames_dropout; 0.2 in the DAVIS sweep)
    frame_dropout: float = 0.2
    # video training: probability that an example loses all its conditioning frames at once,
    # the situation of a video's first frame (not in the paper; with frame_dropout alone it
    # is frame_dropout ** cond_frames, 4 % at the paper's 0.2)
    history_dropout: float = 0.0
    self_cond: bool = False
    # Softmax groups of the head (official `outp_softmax_groups`; the sweeps' 2, the paper):
    # the 16 mask bits [class bit0..7, id bit0..7] are cut into this many groups of 16 / G
    # consecutive bits, each predicted by a softmax over its 2^(16/G) values (G = 2: one
    # 256-way softmax for the class, one for the id). G in (2, 4, 8, 16).
    softmax_groups: int = 2
    # Variance scale of the "zero" initialised convolutions (each ResBlock's last conv and the
    # output head); official VarianceScaling(1e-10). Tiny, briefly trained models learn
    # several times faster with 1.0 (see the tiny preset).
    init_scale: float = 1e-10


@dataclass(frozen=True)
class ModelConfig:
    """Sizes shared by all parts. Masks are predicted at image size / `mask_stride`."""

    num_classes: int = 134  # including class 0 = void (COCO: 133 + 1)
    max_instances: int = 101  # K: ids 0..K-1, 0 = null
    mask_stride: int = 2
    encoder: EncoderConfig = EncoderConfig()
    decoder: DecoderConfig = DecoderConfig()
    # recompute the decoder ResBlocks and all transformer layers in the backward pass
    # (models/remat.py): less activation memory for larger per-GPU batches, ~1/3 more compute
    grad_checkpoint: bool = False


@dataclass(frozen=True)
class DiffusionConfig:
    b_scale: float = 0.1  # b: analog bits in {-b, +b}


@dataclass(frozen=True)
class LossConfig:
    kind: LossKind = LossKind.SOFTMAX_CE
    p: float = 0.2  # pixel weight (1/(c+1))^p, normalised per image
    # softmax_ce: the output head and the cross-entropy computed together in chunks of
    # rows, never holding the whole logit tensor (models/fused_ce.py); the same loss
    fused: bool = False


@dataclass(frozen=True)
class SampleConfig:
    """DDIM sampler and post-processing. `min_pixels` is counted at original image size."""

    steps: int = 20
    td: float = 2.0
    min_pixels: int = 80
    later_steps: int = 0  # video: steps for frames after the first (0: `steps`)
    # video: a later frame stops before `later_steps` once the (class, id) decoded from x̂_0
    # changed on at most `adaptive_change` of the mask pixels between two steps
    # (models/video.py, StableIds)
    adaptive: bool = False
    adaptive_change: float = 0.0
    # compile the denoising step (Pix2SeqD.compile_sampler; on CUDA also a CUDA graph):
    # pays off over many images, costs a compilation per batch size first
    compile: bool = False
    # bf16 autocast of the sampler's encoder and decoder passes on CUDA (the DDIM update and
    # the bits stay float32); off, the sampler runs in float32 everywhere
    bf16: bool = False
