"""The run configuration: frozen dataclasses per concern, composed into `Config`.

Every field has a dotted path (`optim.lr`, `diffusion.b_scale`, `model.encoder.tf_layers`).
The same paths are the `--set KEY=VALUE` overrides of every job, the keys of Tune search
spaces and the MLflow param names (see docs/cli.md). Presets live in `presets.py`.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pix2seqd.models.config import (
    DiffusionConfig,
    LossConfig,
    ModelConfig,
    SampleConfig,
)


class DatasetKind(str, enum.Enum):
    """The official layouts the readers understand (`data.dataset`)."""

    COCO = "coco"
    CITYSCAPES = "cityscapes"
    DAVIS = "davis"


class Placement(str, enum.Enum):
    """How Ray places a run's training workers on nodes (`train.placement_strategy`)."""

    PACK = "PACK"  # fill nodes first (Ray Train's default)
    SPREAD = "SPREAD"  # over as many nodes as possible
    STRICT_PACK = "STRICT_PACK"  # all on one node, or wait
    STRICT_SPREAD = "STRICT_SPREAD"  # one node per worker, or wait


class GpuChoice(str, enum.Enum):
    """Whether a run's training workers use GPUs (`train.use_gpu`). AUTO is decided when the
    job starts (platform/train/auto.py): GPU workers when the Ray cluster has GPUs for them
    or its autoscaler can start GPU nodes, CPU workers otherwise."""

    AUTO = "auto"
    TRUE = "true"
    FALSE = "false"

    @classmethod
    def _missing_(cls, value: object) -> GpuChoice | None:
        # booleans and their spellings, as `--set` and older configs write them
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return cls.TRUE
        if text in ("0", "false", "no", "off"):
            return cls.FALSE
        return cls.AUTO if text == "auto" else None


class CrowdMode(str, enum.Enum):
    """What training does with `iscrowd` segments (`data.crowd`): keep each as one segment
    of its class (as the official Cityscapes reader does; docs/model.md, "Masks and instance
    ids"), or make it void."""

    SEGMENT = "segment"
    VOID = "void"


class AutoSize(str, enum.Enum):
    """`data.image_size=auto`: the canvas is chosen from the training data's annotation file
    when the job starts (platform/data/size_report.py, docs/data_report.md)."""

    AUTO = "auto"


class IdOrder(str, enum.Enum):
    """How training numbers the instance ids of an example (`data.id_order`).

    RANDOM is the paper's (§2; docs/model.md): ids re-drawn every time an example is read,
    without replacement from 1..K-1 for images ('random'), a permutation of the ids present
    for video clips ('shuffle'). RASTER numbers them 1..N in the order of each instance's
    first pixel in the model's mask (row-major after the augmentation; for a clip, the
    first frame first), so the target ids are a function of the image."""

    RANDOM = "random"
    RASTER = "raster"


@dataclass(frozen=True)
class DataConfig:
    """Input data and augmentation (official transform order: docs/model.md, "Training inputs").

    `root` empty means the project's generated data set (cached under the user's home).
    `prepared` (a folder or s3:// URI written by jobs/prepare_data.py) replaces `root`.
    `skip_bad` leaves out records that fail validation (counted in MLflow) instead of
    stopping the run before its first step.
    `exact_order`: every worker reads its own ordered dataset, so which examples each rank
    sees, in which order, is fixed by the seed (exact resume); off, one dataset is split
    across the workers by Ray Train (same examples per step overall, assignment to ranks
    dynamic), which measured about 3x faster on a 2-core machine.
    `image_size` is the training/eval canvas height, `image_width` its width (0: square);
    masks are the canvas / mask_stride. `id_order`: see `IdOrder` (training only; the
    metrics do not depend on which id an instance gets).
    Still clips (video training only; not in the paper, the static-image training of
    tracking models such as CenterTrack): `still_fraction` of the training clips are made
    from the still images of `stills` (a COCO-panoptic root, split `still_split`;
    "generated" is the project's generated COCO set). The image is the target frame, its
    things are the objects (crowds and stuff are background), and the mask of frame t−k is
    the target mask moved by k·(dy, dx) mask pixels, dy and dx uniform integers in
    [−still_shift, still_shift]: more scenes for a video set with few sequences.
    History noise (video training only; not in the paper, see `data.history_noise`): each
    object of a clip's conditioning masks is erased from them with probability
    `history_drop`, and a false object is added to them with probability `history_add`,
    so the model learns to find what its history missed and to drop what it invented.
    `vflip` (vertical flip, p 0.5) and `rgb_symmetry` (a random one of the 48 symmetries of
    the RGB cube: channels permuted, each inverted with p 0.5) are not in the paper. They
    leave the project's generated data's distribution unchanged (its shapes and textures
    look alike upside down, triangles point both ways; its colours are uniform in the cube
    and only their distances matter), so they add scenes without teaching anything false;
    on photos they would teach what is false there (sky below ground, inverted colours).
    Video: one draw per clip, for the frame and all its masks.
    `cache_mb`: each data worker process keeps up to this many MB of decoded training
    images and their label maps, video frames, masks and still images (`data.frame_cache`;
    0 turns it off). Training and still images are decoded once and kept at the largest
    size the augmentation can use (the canvas times the top of `scale_jitter`), so images
    far larger than the canvas cost little per read and fit the cache.
    `ahead_steps`: the driver's training stream decodes about this many optimizer steps
    of examples ahead of the trainers and no more (its object-store budget, never under
    four map tasks' output; `platform/data/read_ahead.py`); 0 leaves Ray Data's bound, a
    share of the object store, which a time-budgeted run mostly decodes for nothing.
    `executor_nap` (default on): Ray Data's scheduling loop sleeps 20 ms after a step while
    its output waits to be taken (`platform/data/executor_nap.py`): the stream's
    coordinator CPU fell from 0.374 to 0.193 of a core and its consumers read 24 % more
    batches (docs/results.md, "The scheduling loop's nap").
    """

    dataset: DatasetKind = DatasetKind.COCO
    root: str = ""
    prepared: str = ""
    train_split: str = "train2017"
    val_split: str = "val2017"
    image_size: int | AutoSize = 256
    image_width: int = 0
    scale_jitter: tuple[float, float] = (1.0, 3.0)
    color_jitter: float = 1.0
    hflip: bool = True
    vflip: bool = False
    rgb_symmetry: bool = False
    pad_value: float = 0.3
    crowd: CrowdMode = CrowdMode.SEGMENT
    skip_bad: bool = False
    exact_order: bool = False
    id_order: IdOrder = IdOrder.RANDOM
    stills: str = ""
    still_split: str = "train2017"
    still_fraction: float = 0.0
    still_shift: int = 1
    history_drop: float = 0.0
    history_add: float = 0.0
    cache_mb: float = 256.0
    ahead_steps: int = 200
    executor_nap: bool = True

    @property
    def image_hw(self) -> tuple[int, int]:
        """(H, W) of the canvas; ValueError while `image_size` is auto (undecided)."""
        if isinstance(self.image_size, AutoSize):
            raise ValueError(
                "data.image_size=auto is decided when a training job reads its annotation "
                "file; give data.image_size=N to use this config without one"
            )
        return self.image_size, self.image_width or self.image_size


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up then linear decay to lr * end_lr_factor (docs/model.md,
    "Optimisation")."""

    lr: float = 1e-4
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    warmup_steps: int = 1155
    end_lr_factor: float = 0.1
    clip_norm: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """Schedule, scale-out and bookkeeping of one training run.

    `batch_size` is the global batch (all workers, after accumulation).
    `time_budget_min` > 0 stops training cleanly after that many minutes, then evaluates.
    `decay_to_budget` (with a time budget): the learning-rate decay follows the larger of
    the fraction of `steps` done and the elapsed fraction of the budget, so it ends when the
    budget does however fast the machine is; `steps` is then an upper bound. The budget
    counts the training time of all the run's attempts (checkpoints record it): a worker
    group restarted or a run resumed from a checkpoint ends when the budget is spent over
    all attempts, its decay going on where it was.
    `log_every`: steps between the `train/*` MLflow metrics; `progress_every`: steps between
    rank 0's progress lines on the job's terminal (0: none; 200 is about 30 s of the tiny
    preset on 2 CPU cores).
    `use_gpu`: true / false / auto (GpuChoice); `uses_gpu` is the decided value.
    `max_failures`: worker-group failures Ray Train recovers from (restarting from the
    latest checkpoint) before the run fails; -1: unlimited (spot runs). `crash_loop_limit`:
    failures in a row with no new checkpoint between them that end the run whatever
    `max_failures` says (0: no limit; preemptions are not counted; train/crash_loop.py).
    `preemption_watcher`: Ray Train's watch for nodes drained for preemption; on a notice
    the loop writes a checkpoint at once (docs/resilience.md; RAY_TRAIN_ENABLE_PREEMPTION_WATCHER
    in the job's environment, when set, wins).
    `placement_strategy`: Ray's placement of the workers on nodes; each run records the
    node of every rank (MLflow tag `worker_nodes`).
    GPU step speed: `channels_last` weights on CUDA only (off by default: slower than NCHW in
    eager mode on an H100, docs/results.md; on CPU the tiny model is 3-5 % faster in NCHW); `compile`: torch.compile of the
    loss (forward and backward) with `compile_backend`, minutes of compilation first;
    activation checkpointing is `model.grad_checkpoint`.
    `video_steps` (read by `presets.as_video` only, i.e. the video stage of train_davis): > 0
    gives the video stage a schedule of that many steps (an upper bound with
    `decay_to_budget`) with the preset's linear decay to lr * end_lr_factor; 0 keeps the
    paper's constant learning rate over `steps`.
    """

    batch_size: int = 512
    steps: int = 184_824
    accum: int = 1
    ema_decay: float = 0.999
    num_workers: int = 2
    use_gpu: GpuChoice = GpuChoice.AUTO
    cpus_per_worker: float = 1.0
    torch_threads: int = 0
    bf16: bool = True
    seed: int = 0
    log_every: int = 50
    progress_every: int = 200
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    time_budget_min: float = 0.0
    decay_to_budget: bool = False
    max_failures: int = 3
    crash_loop_limit: int = 3
    # On: a preemption notice (a node drained for preemption) makes every rank write a
    # checkpoint within 16 steps, so a spot loss costs the steps since the notice, not up
    # to checkpoint_every; off, the loop learns of a preemption only when its node is gone.
    preemption_watcher: bool = True
    placement_strategy: Placement = Placement.PACK
    channels_last: bool = False
    compile: bool = False
    compile_backend: str = "inductor"
    video_steps: int = 0

    @property
    def uses_gpu(self) -> bool:
        """`use_gpu` as a bool; AUTO must have been decided first (train/auto.py)."""
        if self.use_gpu is GpuChoice.AUTO:
            raise RuntimeError(
                "train.use_gpu=auto is decided when a job starts (after Ray is up); "
                "this config was not resolved"
            )
        return self.use_gpu is GpuChoice.TRUE


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation after (and during) training. `max_images` 0 = the whole split;
    `num_actors` 0 = one inference actor per GPU, or per CPU but one (ray_env.inference_actors).
    `every_steps` > 0: during training, rank 0 scores the EMA weights on the first
    `periodic_images` val images every that many steps (a multiple of
    train.checkpoint_every) and at the end; the best of those checkpoints by val/pq is kept
    apart and is the run's `best_checkpoint`. 0: only the final evaluation."""

    max_images: int = 0
    batch_size: int = 8
    overlays: int = 4
    num_actors: int = 0
    every_steps: int = 0
    periodic_images: int = 32


@dataclass(frozen=True)
class DistillConfig:
    """Progressive distillation (docs/distillation.md): with `teacher` (a CKPT reference:
    folder, storage URI or runs:/<id>) the training job trains a student whose sampler takes
    `sample.steps` steps with `sample.td` to match two steps of the teacher's sampler with
    2·`sample.steps` steps and 2·`sample.td` (models/distill.py). '': ordinary training."""

    teacher: str = ""


@dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    loss: LossConfig = LossConfig()
    sample: SampleConfig = SampleConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    distill: DistillConfig = DistillConfig()


def canvas_unit(cfg: Config) -> int:
    """What a canvas side must be a multiple of: the encoder's stride 16 and the mask stride
    times the decoder's halvings (len(ch_mult) - 1 of them)."""
    m = cfg.model
    return math.lcm(16, m.mask_stride * 2 ** (len(m.decoder.ch_mult) - 1))


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted-path view of a config: {'optim.lr': 1e-4, 'loss.kind': 'softmax_ce', ...}.

    Enums become their values and tuples stay tuples, so `parse_value` inverts `str()` of
    each entry and the dict is usable as MLflow params.
    """
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, key + "."))
        else:
            out[key] = value.value if isinstance(value, enum.Enum) else value
    return out


def storable(cfg: Any) -> dict[str, Any]:
    """`flatten(cfg)` with tuples as lists: what a checkpoint stores, since `torch.load`'s
    `weights_only` loading keeps lists but not tuples."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in flatten(cfg).items()}


def override(cfg: Any, updates: Mapping[str, Any]) -> Any:
    """Return a copy of `cfg` with dotted-path updates applied; values may be strings.

    Raises KeyError naming the path when it does not exist, ValueError when the value does
    not parse as the field's type.
    """
    for path, value in updates.items():
        cfg = _set_path(cfg, path.split("."), value, path)
    return cfg


def parse_overrides(pairs: list[str] | None) -> dict[str, str]:
    """['optim.lr=1e-5', ...] -> {'optim.lr': '1e-5'}; error names the malformed item."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def from_flat(flat: Mapping[str, Any], base: Config | None = None) -> Config:
    """Rebuild a Config from `flatten` output (e.g. the config stored in a checkpoint)."""
    return override(base or Config(), dict(flat))


def _set_path(obj: Any, parts: list[str], value: Any, full: str) -> Any:
    hints = typing.get_type_hints(type(obj))
    name = parts[0]
    if name not in hints:
        known = ", ".join(sorted(hints))
        raise KeyError(f"unknown config key {full!r}: {name!r} is not one of {known}")
    current = getattr(obj, name)
    if len(parts) > 1:
        if not dataclasses.is_dataclass(current):
            raise KeyError(f"unknown config key {full!r}: {name!r} has no sub-keys")
        new = _set_path(current, parts[1:], value, full)
    else:
        if dataclasses.is_dataclass(current):
            raise KeyError(f"config key {full!r} is a group, give one of its fields")
        new = parse_value(hints[name], value, full)
    return dataclasses.replace(obj, **{name: new})


def parse_value(tp: Any, value: Any, path: str = "") -> Any:
    """Coerce `value` (often a string from the command line or MLflow) to type `tp`."""
    try:
        return _coerce(tp, value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"config key {path!r}: cannot use {value!r} as {tp}: {err}") from None


def _coerce(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is types.UnionType:  # e.g. int | AutoSize: the first type that takes the value
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _coerce(arg, value)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise ValueError("; ".join(errors))
    if origin is tuple:
        args = typing.get_args(tp)
        items = _as_items(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v) for v in items)
        if len(items) != len(args):
            raise ValueError(f"expected {len(args)} items, got {len(items)}")
        return tuple(_coerce(a, v) for a, v in zip(args, items))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value.value if isinstance(value, enum.Enum) else value)
    if tp is bool:
        return _to_bool(value)
    if tp is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("not an integer")
        return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
    if tp is float:
        return float(value)
    if tp is str:
        return str(value)
    raise TypeError(f"unsupported field type {tp}")


def _as_items(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    text = str(value).strip().strip("()[]")
    return [v.strip() for v in text.split(",") if v.strip()]


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true/false")
