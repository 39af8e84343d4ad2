"""A sweep as data: the grid over dotted config paths, the metric, per-trial resources and
how its result is drawn. The files of `sweeps/` each hold one `Sweep`; `cli.main` runs it."""

from __future__ import annotations

import enum
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pix2seqd.platform.config import Config, override


class SweepKind(str, enum.Enum):
    TRAIN = "train"  # each trial is a training run (Ray Tune -> Ray Train)
    INFERENCE = "inference"  # each trial is a sampler setting on one checkpoint


PQ_SCORES = ("pq", "pq_th", "pq_st")
# a video trial's J&F, J and F means, the mean steps of a later frame, prediction ms per frame
VIDEO_SCORES = ("j_and_f", "j", "f", "mean_later_steps", "predict_ms_per_frame")


@dataclass(frozen=True)
class Axis:
    """One swept config field (a dotted path of docs/cli.md) and its values."""

    path: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Sweep:
    """A grid search reproducing one ablation of the paper.

    axes: the grid (every combination is a trial); paper: what it reproduces (e.g.
    "Table 3"); metric / mode: what "best" means; preset: the default config of the trials;
    fixed: dotted-path overrides every trial gets (over the preset, under --set); trial_cpus:
    CPUs the trial's own process holds (a training trial's Ray Train workers hold `train.*`
    resources besides); plot_x / plot_series: the axis drawn along x and the one drawn as
    one line each ('' for none); scores: the numbers each trial reports, the first the one
    "best" and the plot go by; video: an inference sweep's grid for a video checkpoint
    (None: the sweep takes image checkpoints only)."""

    name: str
    kind: SweepKind
    axes: tuple[Axis, ...]
    paper: str
    metric: str = "val/pq"
    mode: str = "max"
    preset: str = "tiny"
    fixed: tuple[tuple[str, Any], ...] = ()
    trial_cpus: float = 0.1
    plot_x: str = ""
    plot_series: str = ""
    scores: tuple[str, ...] = PQ_SCORES
    video: Sweep | None = None

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(a.path for a in self.axes)

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the axes' values, the first axis varying slowest."""
        return [
            dict(zip(self.paths, combo))
            for combo in itertools.product(*(a.values for a in self.axes))
        ]

    def with_values(self, values: dict[str, tuple[Any, ...]]) -> Sweep:
        """The same sweep over other values for some axes (e.g. a smaller grid from flags)."""
        unknown = set(values) - set(self.paths)
        if unknown:
            raise KeyError(f"sweep {self.name!r} has no axis {sorted(unknown)}; axes: {self.paths}")
        axes = tuple(Axis(a.path, tuple(values.get(a.path, a.values))) for a in self.axes)
        return replace(self, axes=axes)


def check_sweep(sweep: Sweep, cfg: Config) -> None:
    """Every axis value must be a valid value of its config field (fails before any trial
    starts, naming the sweep, path and value)."""
    if sweep.mode not in ("max", "min"):
        raise ValueError(f"sweep {sweep.name!r}: mode must be 'max' or 'min', got {sweep.mode!r}")
    for axis in sweep.axes:
        if not axis.values:
            raise ValueError(f"sweep {sweep.name!r}: axis {axis.path} has no values")
        for value in axis.values:
            try:
                override(cfg, {axis.path: value})
            except (KeyError, ValueError) as err:
                raise ValueError(
                    f"sweep {sweep.name!r}: {axis.path}={value!r} is not valid: {err}"
                ) from err
    for plot in (sweep.plot_x, sweep.plot_series):
        if plot and plot not in sweep.paths:
            raise ValueError(f"sweep {sweep.name!r}: plot axis {plot} is not one of {sweep.paths}")


def trial_label(params: dict[str, Any]) -> str:
    """A short run name for a trial: 'b_scale=0.3,p=0.2' (last part of each path)."""
    return ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in params.items())


def checkpoint_sweep(
    sweep: Sweep, video: bool, values: Mapping[str, tuple[Any, ...]], checkpoint: str
) -> Sweep:
    """The grid an inference sweep runs on `checkpoint`: the sweep's own for an image model,
    its `video` grid for a video model, with `values` (from flags) for some of its axes.
    ValueError naming the checkpoint when that grid does not exist or lacks an axis."""
    chosen = sweep.video if video else sweep
    kind = "a video" if video else "an image"
    if chosen is None:
        raise ValueError(f"{checkpoint} is {kind} model: sweep {sweep.name!r} has no grid for it")
    unknown = sorted(set(values) - set(chosen.paths))
    if unknown:
        raise ValueError(
            f"{checkpoint} is {kind} model: sweep {chosen.name!r} does not sweep {unknown} "
            f"on it (its axes: {list(chosen.paths)})"
        )
    return chosen.with_values(dict(values))
