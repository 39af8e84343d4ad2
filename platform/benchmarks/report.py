"""What every benchmark JSON carries (device, versions) and how results are printed."""
from __future__ import annotations

import platform as std_platform  # the standard library module; the project is pix2seqd.platform
import sys
from typing import Any

import numpy as np
import torch


def device_name(device: str) -> str:
    """'cpu: <processor> x N threads' or the CUDA card's name."""
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but torch sees no CUDA device")
        return torch.cuda.get_device_name(0)
    return f"cpu: {std_platform.processor() or std_platform.machine()}, {torch.get_num_threads()} threads"


def environment(device: str) -> dict[str, Any]:
    return {
        "device": device_name(device),
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "numpy": np.__version__},
    }


def print_table(title: str, result: dict[str, Any]) -> None:
    print(title)
    for key, value in result.items():
        if key in ("device", "versions"):
            continue
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"  {key:<24s} {shown}")
