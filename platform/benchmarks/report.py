"""What every benchmark JSON carries (device, versions) and how results are printed."""

from __future__ import annotations

import platform as std_platform  # the standard library module; the project is pix2seqd.platform
import sys
from typing import Any

import numpy as np


def device_name(device: str) -> str:
    """'cpu: <processor> x N threads' or the CUDA card's name."""
    import torch  # lazy: jobs/benchmark.py imports this module, and its --help stays fast

    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but torch sees no CUDA device")
        return torch.cuda.get_device_name(0)
    return f"cpu: {std_platform.processor() or std_platform.machine()}, {torch.get_num_threads()} threads"


def environment(device: str) -> dict[str, Any]:
    """Device name and versions; cuda / cudnn are None on a CPU build of torch."""
    import torch  # lazy: jobs/benchmark.py imports this module, and its --help stays fast

    return {
        "device": device_name(device),
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "numpy": np.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        },
    }


def print_table(title: str, result: dict[str, Any]) -> None:
    """One line per key; a list of dicts (e.g. top_kernels) gets one indented line per row."""
    print(title)
    for key, value in result.items():
        if key in ("device", "versions"):
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            print(f"  {key}")
            for row in value:
                print("    " + "  ".join(f"{k}={_shown(v)}" for k, v in row.items()))
            continue
        print(f"  {key:<24s} {_shown(value)}")


def _shown(value: Any) -> str:
    """Floats to 4 significant digits, also inside dicts (sample20_ms per preset and batch)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_shown(v)}" for k, v in value.items()) + "}"
    return str(value)
