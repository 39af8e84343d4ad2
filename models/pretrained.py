"""Pretrained weight files the user brings (nothing is downloaded): reading a state dict from
a PyTorch `.pth` / `.pt` file or a `.safetensors` file, and the ImageNet input statistics
such weights were trained with.

`.safetensors` is read here with numpy (8-byte little-endian header length, a JSON header
of `name: {dtype, shape, data_offsets}`, then the raw little-endian tensor bytes), so no
extra package is needed; timm publishes its ImageNet ResNet-50 weights in this format.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch

# torchvision's and timm's ImageNet normalisation (RGB, for inputs in [0, 1])
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# a training script's checkpoint often wraps the weights: {"state_dict": ...} or {"model": ...}
_WRAPPERS = ("state_dict", "model", "model_state_dict")
# and DDP / wrapper modules prefix every name
_PREFIXES = ("module.", "model.", "backbone.")

_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weight file: `.safetensors` by its format, anything else with
    `torch.load(weights_only=True)` (torchvision's `.pth`). A dict that wraps the weights
    under one of `state_dict` / `model` / `model_state_dict` is unwrapped, and a prefix that
    every name carries (`module.`, `model.`, `backbone.`) is removed. ValueError naming the
    file when it is missing or holds no tensors."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"pretrained weights {path}: no such file")
    if path.suffix == ".safetensors":
        state = read_safetensors(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle, zip and torch errors alike
            raise ValueError(
                f"pretrained weights {path}: not a PyTorch weight file ({err})"
            ) from None
    state = _unwrap(state)
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"pretrained weights {path}: holds no state dict of tensors")
    return _strip_common_prefix(state)


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a `.safetensors` file; ValueError naming the file when it is malformed."""
    data = Path(path).read_bytes()
    try:
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
    except (struct.error, ValueError) as err:
        raise ValueError(f"pretrained weights {path}: not a safetensors file ({err})") from None
    body = memoryview(data)[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(info.get("dtype"))
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        itemsize = torch.empty(0, dtype=dtype).element_size() if dtype else 0
        if dtype is None or end > len(body) or end - begin != itemsize * int(np.prod(shape)):
            raise ValueError(
                f"pretrained weights {path}: tensor {name!r} has dtype {info.get('dtype')!r}, "
                f"shape {list(shape)} and {end - begin} bytes at {begin} (file body: "
                f"{len(body)} bytes); the file is truncated or not safetensors"
            )
        raw = bytes(body[begin:end])
        out[name] = torch.frombuffer(bytearray(raw), dtype=dtype).reshape(shape).clone()
    return out


def _unwrap(state: object) -> dict:
    if isinstance(state, dict):
        for key in _WRAPPERS:
            if isinstance(state.get(key), dict):
                return state[key]
    return state if isinstance(state, dict) else {}


def _strip_common_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items()}
    return state
