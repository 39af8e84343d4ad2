"""ResNet-50 v1.5 cut after stage 3 ("C4", stride 16), the image backbone of paper §3.1.

Parameter names equal torchvision's `resnet50` state dict (conv1, bn1, layer1.0.conv1, ...,
layer1.0.downsample.0/1), so a local torchvision (or timm) ResNet-50 file loads with
`load_torchvision_resnet`; its layer4.* and fc.* entries are left unused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import NormMode, StemPool
from .pretrained import read_state_file

BN_MOMENTUM, BN_EPS = 0.1, 1e-5  # Keras momentum 0.9 == PyTorch momentum 0.1


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm with fixed running statistics and affine parameters.

    It stays in eval mode under `.train()` and its parameters do not require grad; the
    parameter/buffer names are those of nn.BatchNorm2d so checkpoints stay interchangeable.
    """

    def __init__(self, num_features: int):
        super().__init__(num_features, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)

    def train(self, mode: bool = True) -> FrozenBatchNorm2d:
        return super().train(False)


def batch_norm(channels: int, norm: NormMode) -> nn.BatchNorm2d:
    """BN layer for a NormMode. SYNC is a plain BatchNorm2d here: the training loop converts it
    with nn.SyncBatchNorm.convert_sync_batchnorm once the process group exists."""
    if norm == NormMode.FROZEN:
        return FrozenBatchNorm2d(channels)
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    """Bias-free conv with the official VarianceScaling(1.0, fan_in, truncated normal) init."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
    std = math.sqrt(1.0 / (c_in * kernel * kernel)) / 0.87962566103423978  # Keras' truncation fix
    nn.init.trunc_normal_(conv.weight, std=std, a=-2 * std, b=2 * std)
    return conv


class Bottleneck(nn.Module):
    """Post-activation bottleneck 1x1 -> 3x3 (stride here: v1.5) -> 1x1, expansion 4."""

    def __init__(self, c_in: int, width: int, stride: int, norm: NormMode):
        super().__init__()
        c_out = 4 * width
        self.conv1, self.bn1 = _conv(c_in, width, 1), batch_norm(width, norm)
        self.conv2, self.bn2 = _conv(width, width, 3, stride), batch_norm(width, norm)
        self.conv3, self.bn3 = _conv(width, c_out, 1), batch_norm(c_out, norm)
        nn.init.zeros_(self.bn3.weight)  # the block starts as identity
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(_conv(c_in, c_out, 1, stride), batch_norm(c_out, norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.relu(self.bn2(self.conv2(h)))
        return self.relu(self.bn3(self.conv3(h)) + skip)


class ResNetC4(nn.Module):
    """Stem + stages 1-3. forward: images (B, 3, H, W) -> [C2 (B, 4w, H/4, W/4),
    C3 (B, 8w, H/8, W/8), C4 (B, 16w, H/16, W/16)] with w = `width` (64 for ResNet-50)."""

    def __init__(
        self,
        depths: tuple[int, ...] = (3, 4, 6),
        width: int = 64,
        norm: NormMode = NormMode.BATCH,
        stem_pool: StemPool = StemPool.TORCH,
    ):
        super().__init__()
        self.conv1, self.bn1 = _conv(3, width, 7, stride=2), batch_norm(width, norm)
        self.relu = nn.ReLU(inplace=True)
        self.tf_same_pool = stem_pool == StemPool.TF_SAME
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        c_in = width
        for s, depth in enumerate(depths):
            w_s = width * 2**s
            stride = 1 if s == 0 else 2
            blocks = [Bottleneck(c_in, w_s, stride, norm)]
            blocks += [Bottleneck(4 * w_s, w_s, 1, norm) for _ in range(depth - 1)]
            self.add_module(f"layer{s + 1}", nn.Sequential(*blocks))
            c_in = 4 * w_s
        self.out_channels = [4 * width * 2**s for s in range(len(depths))]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(images)))
        x = tf_same_max_pool(x) if self.tf_same_pool else self.maxpool(x)
        features = []
        for s in range(len(self.out_channels)):
            x = getattr(self, f"layer{s + 1}")(x)
            features.append(x)
        return features


@dataclass(frozen=True)
class BackboneLoad:
    """What `load_torchvision_resnet` did: the backbone's weights it loaded, and the file's
    entries beyond stage 3 it left unused (layer4.*, fc.*: the ResNet-50 stages this model
    cuts off)."""

    path: str
    loaded: tuple[str, ...]
    unused: tuple[str, ...]


def tf_same_max_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-2 max-pool with TensorFlow's SAME padding: of the padding the window needs,
    the smaller half before and the larger after (an even side pads 0 before, 1 after)."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):  # F.pad's order: last dimension first
        total = max((-(-n // 2) - 1) * 2 + 3 - n, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), kernel_size=3, stride=2)


def load_torchvision_resnet(module: ResNetC4, path: str | Path) -> BackboneLoad:
    """Load a local ResNet state dict file into `module`: torchvision's key layout (`conv1`,
    `bn1`, `layer1.0.conv1`, ..., `layer1.0.downsample.0/1`), which timm's ResNet-50 shares,
    from a `.pth` or a `.safetensors` file (`models.pretrained.read_state_file`).

    layer4.* and fc.* are left unused; every other key must match in name and shape, and
    `num_batches_tracked` may be absent (timm and old torchvision files). Raises ValueError
    naming the file and every missing, unexpected or misshapen key."""
    state = read_state_file(path)
    unused = tuple(sorted(k for k in state if k.startswith(("layer4.", "fc."))))
    state = {k: v for k, v in state.items() if k not in set(unused)}
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{path} does not match the ResNet backbone (torchvision / timm ResNet key "
            f"layout expected): missing {missing}, unexpected {unexpected}, shape "
            f"mismatches {shapes}"
        )
    module.load_state_dict(state, strict=False)
    return BackboneLoad(str(path), tuple(sorted(state)), unused)
