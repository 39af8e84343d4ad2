"""Continuing an interrupted training sweep with the same command.

The command's sweep, config, preset and storage path make a key (tag `sweep_key` of the
parent run). A new run of the command looks for an unfinished parent run with that key in
its experiment and reuses it; Ray Tune restores the sweep's experiment from the storage
path when it saved one; each trial then finds its own earlier child run by its grid point
and resumes it (Ray Train restores the run's latest checkpoint) or, when that run had
finished, reports its scores without training again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow.fs as pafs
import ray.tune

from pix2seqd.platform import tracking
from pix2seqd.platform.config import Config, flatten, from_flat
from pix2seqd.platform.sweep.spec import Sweep
from pix2seqd.platform.train.options import RunOptions, storage_path

SWEEP_KEY_TAG = "sweep_key"
# the Tune experiment state a restore reads (TuneController.CKPT_FILE_TMPL)
_STATE_PREFIX, _STATE_SUFFIX = "experiment_state-", ".json"


def sweep_key(sweep: Sweep, cfg: Config, run: RunOptions, asha: bool) -> str:
    """What makes two sweep commands the same sweep: grid, metric, the trials' config,
    preset, starting weights, early stopping and storage path (not the concurrency, which a
    restored sweep keeps from its first run)."""
    about = {
        "sweep": sweep.name,
        "grid": {a.path: list(a.values) for a in sweep.axes},
        "metric": [sweep.metric, sweep.mode],
        "config": flatten(cfg),
        "preset": run.preset,
        "init_from": run.init_from,
        "asha": asha,
        "storage": storage_path(run),
    }
    text = json.dumps(about, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def unfinished_parent(mlc, key: str, experiment: str) -> Any:
    """The newest parent run of the sweep `key` in `experiment` ('' = the default) that did
    not finish (RUNNING: its driver was killed, or still runs; FAILED; KILLED), or None."""
    exp = tracking.experiment_id(mlc, experiment)
    runs = mlc.search_runs(
        [exp],
        f"tags.{SWEEP_KEY_TAG} = '{key}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def tune_name(sweep: Sweep, parent_run_id: str) -> str:
    """The Tune experiment's name (its folder under the storage path)."""
    return f"sweep-{sweep.name}-{parent_run_id[:12]}"


def experiment_uri(storage: str, name: str) -> str:
    """The experiment folder `name` under a storage path or URI; a URI's query (e.g.
    `?endpoint_override=...`) stays at the end."""
    base, sep, query = storage.partition("?")
    return f"{base.rstrip('/')}/{name}{sep}{query}"


def restorable(uri: str) -> bool:
    """Whether Tune can restore the experiment at `uri`: its Tuner and at least one saved
    experiment state (`Tuner.can_restore` checks only the Tuner, which is written before
    the first state; a sweep killed in between has nothing to restore)."""
    if not ray.tune.Tuner.can_restore(uri):
        return False
    fs, path = pafs.FileSystem.from_uri(uri)
    return any(
        info.base_name.startswith(_STATE_PREFIX) and info.base_name.endswith(_STATE_SUFFIX)
        for info in fs.get_file_info(pafs.FileSelector(path))
    )


def point_values(paths: Iterable[str], values: Mapping[str, Any]) -> dict[str, Any]:
    """The grid point `paths` of `values` (typed values, or MLflow's params as strings),
    typed as in the config, so that the two compare equal."""
    paths = list(paths)
    typed = flatten(from_flat({p: values[p] for p in paths}))
    return {p: typed[p] for p in paths}


def earlier_trial_run(runs: Iterable[Any], params: Mapping[str, Any]) -> Any:
    """Of the sweep's child `runs`, the newest for the grid point `params`, or None."""
    want = point_values(params, params)
    same = [r for r in runs if set(params) <= set(r.data.params)]
    same = [r for r in same if point_values(params, r.data.params) == want]
    return max(same, key=lambda r: r.info.start_time, default=None)
