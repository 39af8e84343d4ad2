"""The job scripts as tests run them: one loaded as a module, as `python jobs/<name>.py`
would run it; the `--set` overrides that make a training run small."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# 32 px images, batch 4, one sampling step, two evaluation images without overlays, no time
# budget: the small training run the fault tests' jobs add their steps and checkpoints to
SMALL_RUN_SETS = [
    "train.batch_size=4",
    "train.time_budget_min=0",
    "data.image_size=32",
    "optim.warmup_steps=1",
    "sample.steps=1",
    "eval.max_images=2",
    "eval.overlays=0",
]


def load_job(name: str):
    spec = importlib.util.spec_from_file_location(f"job_{name}", ROOT / "jobs" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
