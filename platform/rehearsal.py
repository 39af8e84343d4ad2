"""A dress rehearsal of the paper's training chain (§4.1), so a broken stage shows before GPUs
are rented: every stage through its public job (`jobs/train_coco.py`, `jobs/train_davis.py`,
each a process of its own, as a user runs them), on generated data at small image sizes for
a few steps, each consuming the previous stage's `runs:/` reference and evaluated.

    a ResNet-50 file in torchvision's key layout (random weights: the user's download)
    -> decoder_pretrain (from the file) -> coco_lowres (from the file and the pre-training)
    -> coco_highres -> cityscapes, davis (both from coco_highres)

The model is the paper's (94.5 M parameters), or with `small` the same architecture (every
layer and block) at reduced widths, for CI.
"""

from __future__ import annotations

import enum
import json
import logging
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch

from pix2seqd.models.resnet import ResNetC4
from pix2seqd.platform import tracking
from pix2seqd.platform.config import Config, override
from pix2seqd.platform.presets import get_preset
from pix2seqd.platform.synthetic.cityscapes import make_cityscapes
from pix2seqd.platform.synthetic.coco import make_coco
from pix2seqd.platform.synthetic.davis import make_davis
from pix2seqd.platform.train.checkpoints import FILE

log = logging.getLogger(__name__)


class Job(str, enum.Enum):
    """The public training job a stage runs (`jobs/<value>.py`)."""

    TRAIN_COCO = "train_coco"
    TRAIN_DAVIS = "train_davis"


class Data(str, enum.Enum):
    """The generated data set a stage trains on."""

    COCO = "coco"
    CITYSCAPES = "cityscapes"
    DAVIS = "davis"


@dataclass(frozen=True)
class Stage:
    """preset: the stage's preset (also its name); init_from: the earlier stage whose
    checkpoint it starts from; encoder_file: it gets `model.encoder.init`; canvas: (H, W)."""

    preset: str
    job: Job
    data: Data
    init_from: str = ""
    encoder_file: bool = False
    canvas: tuple[int, int] = (64, 64)


STAGES = (
    Stage("decoder_pretrain", Job.TRAIN_COCO, Data.COCO, encoder_file=True),
    Stage("coco_lowres", Job.TRAIN_COCO, Data.COCO, "decoder_pretrain", encoder_file=True),
    Stage("coco_highres", Job.TRAIN_COCO, Data.COCO, "coco_lowres"),
    Stage("cityscapes", Job.TRAIN_COCO, Data.CITYSCAPES, "coco_highres", canvas=(64, 128)),
    Stage("davis", Job.TRAIN_DAVIS, Data.DAVIS, "coco_highres", canvas=(64, 128)),
)

# a few steps of one worker, a short evaluation: what runs, not what it learns
QUICK = {
    "train.steps": 2,
    "train.batch_size": 2,
    "train.num_workers": 1,
    "train.checkpoint_every": 2,
    "train.keep_checkpoints": 1,
    "train.log_every": 1,
    "train.time_budget_min": 0,
    "eval.every_steps": 0,
    "eval.max_images": 2,
    "eval.batch_size": 2,
    "eval.overlays": 1,
    "eval.num_actors": 1,
    "sample.steps": 2,
    "sample.later_steps": 1,
}
# --small: the paper's layers and blocks at reduced widths
SMALL = {
    "model.encoder.width": 8,
    "model.encoder.tf_dim": 64,
    "model.encoder.tf_heads": 4,
    "model.encoder.tf_mlp": 128,
    "model.encoder.fuse_dim": 32,
    "model.decoder.dim": 16,
    "model.decoder.tf_dim": 64,
    "model.decoder.tf_heads": 4,
    "model.decoder.tf_mlp": 128,
}


@dataclass(frozen=True)
class Rehearsal:
    """workdir: data, logs and the ResNet file; jobs_dir: the folder of the training jobs;
    storage: Ray Train's storage path ('' = the jobs' default); overrides: `--set` values
    for every stage (after QUICK and SMALL); verbosity: -1 / 0 / 1 as the jobs' -q / -v."""

    workdir: Path
    jobs_dir: Path
    storage: str = ""
    small: bool = False
    overrides: Mapping[str, str] = field(default_factory=dict)
    verbosity: int = 0

    def sets(self, stage: Stage) -> dict[str, Any]:
        h, w = stage.canvas
        sizes = {"data.image_size": h, "data.image_width": 0 if h == w else w}
        return {**QUICK, **(SMALL if self.small else {}), **sizes, **dict(self.overrides)}


def rehearse(plan: Rehearsal, stages: Sequence[Stage] = STAGES) -> dict[str, Any]:
    """Run every stage in order; the summary {"stages": [...]} (docs/cli.md). A stage that
    fails raises RuntimeError naming it and its log, after the stages before it are kept."""
    plan.workdir.mkdir(parents=True, exist_ok=True)
    data = _make_data(plan.workdir / "data")
    r50 = write_resnet50(plan.workdir / "resnet50.pth", _config(plan, stages[0]))
    runs: dict[str, str] = {}
    rows = []
    for stage in stages:
        row = run_stage(plan, stage, data[stage.data], r50, runs)
        runs[stage.preset] = row["mlflow_run_id"]
        rows.append(row)
        log.info("%s", stage_line(row))
    return {"stages": rows}


def _config(plan: Rehearsal, stage: Stage) -> Config:
    return override(get_preset(stage.preset), plan.sets(stage))


def _make_data(folder: Path) -> dict[Data, Path]:
    """Small generated sets in the official layouts (made once per workdir)."""
    return {
        Data.COCO: make_coco(folder / "coco", 0, 6, 2, 48, 96),
        Data.CITYSCAPES: make_cityscapes(folder / "cityscapes", 0, 6, 2, 64, 128),
        Data.DAVIS: make_davis(folder / "davis", 0, 3, 1, 48, 96),
    }


def write_resnet50(path: Path, cfg: Config) -> Path:
    """A ResNet-50 state dict in torchvision's key layout with random weights, at the
    config's encoder width: stages 1-4 and the 1000-way classifier, as torchvision's file."""
    enc = cfg.model.encoder
    torch.manual_seed(0)
    net = ResNetC4((*enc.depths, 3), enc.width)
    state = dict(net.state_dict())
    state["fc.weight"] = torch.randn(1000, 4 * enc.width * 8) * 0.01
    state["fc.bias"] = torch.zeros(1000)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def run_stage(
    plan: Rehearsal, stage: Stage, root: Path, r50: Path, runs: Mapping[str, str]
) -> dict[str, Any]:
    """One stage through its job, in a process of its own; its summary row."""
    summary_path = plan.workdir / f"{stage.preset}.json"
    init_from = f"runs:/{runs[stage.init_from]}" if stage.init_from else ""
    sets = plan.sets(stage) | ({"model.encoder.init": str(r50)} if stage.encoder_file else {})
    argv = [sys.executable, str(plan.jobs_dir / f"{stage.job.value}.py"), "--preset"]
    argv += [stage.preset, "--data-root", str(root), "--summary-json", str(summary_path)]
    argv += ["--run-name", f"rehearsal-{stage.preset}"]
    argv += ["--init-from", init_from] if init_from else []
    argv += ["--storage-path", plan.storage] if plan.storage else []
    argv += [x for k, v in sets.items() for x in ("--set", f"{k}={v}")]
    argv += ["-q"] if plan.verbosity < 0 else ["-v"] if plan.verbosity > 0 else []
    start = time.perf_counter()
    _run(argv, plan.workdir / f"{stage.preset}.log", stage.preset)
    seconds = time.perf_counter() - start
    summary = json.loads(summary_path.read_text())
    row = _row(stage, summary, init_from, seconds)
    tags = tracking.client(summary["tracking_uri"]).get_run(row["mlflow_run_id"]).data.tags
    log.info("stage %s: fresh weights: %s", stage.preset, tags.get("init/fresh") or "none")
    return row


def _run(argv: list[str], log_path: Path, name: str) -> None:
    log.info("stage %s: %s", name, " ".join(argv[1:]))
    with open(log_path, "w") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(
            f"rehearsal stage {name} failed (exit {done.returncode}); its log: {log_path}\n{tail}"
        )


def _row(stage: Stage, summary: dict[str, Any], init_from: str, seconds: float):
    mlc = tracking.client(summary["tracking_uri"])
    tags = mlc.get_run(summary["mlflow_run_id"]).data.tags
    return {
        "stage": stage.preset,
        "mlflow_run_id": summary["mlflow_run_id"],
        "init_from": init_from,
        "loaded_keys": int(tags.get("init/loaded_keys", 0)),
        "fresh_keys": int(tags.get("init/fresh_keys", 0)),
        "seconds": round(seconds, 1),
        "checkpoint": summary["checkpoint"],
        "checkpoint_mb": round(checkpoint_bytes(summary["checkpoint"]) / 2**20, 1),
        "metrics": summary["metrics"],
    }


def checkpoint_bytes(ref: str) -> int:
    """The size of a checkpoint folder's file, local or in storage."""
    fs, path = pafs.FileSystem.from_uri(ref if "://" in ref else str(Path(ref).resolve()))
    return fs.get_file_info(f"{path.rstrip('/')}/{FILE}").size or 0


def stage_line(row: Mapping[str, Any]) -> str:
    """One stage as a line of the printed table."""
    metrics = " ".join(f"{k} {v:.3f}" for k, v in row["metrics"].items())
    return (
        f"{row['stage']:<16} {row['loaded_keys']:>5} loaded {row['fresh_keys']:>5} fresh "
        f"{row['seconds']:>7.1f} s {row['checkpoint_mb']:>8.1f} MB  {metrics}"
    )
