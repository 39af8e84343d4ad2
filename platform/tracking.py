"""MLflow bookkeeping: the default store, runs, params, metrics, checkpoint tags.

The default store is a fixed SQLite file under the user's home so that runs started from any
folder, and by `ray job submit`, land in one place; MLFLOW_TRACKING_URI overrides it.
All calls go through an explicit `MlflowClient` and run id (no active-run global state), so
driver and workers can log to the same run.
"""

from __future__ import annotations

import math
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HOME_DIR = Path.home() / ".pix2seqd"
EXPERIMENT = "pix2seqd"
EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"  # set by --experiment (platform/cli.py)
# The MLflow UI reads an experiment's kind from this tag; "custom_model_development" is
# its "Model training" kind (runs, metrics, models), the other main one being GenAI.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
NOTE_TAG = "mlflow.note.content"  # a run's description in the MLflow UI (markdown)


def experiment_name() -> str:
    """The experiment new top-level runs go to: MLFLOW_EXPERIMENT_NAME (which `--experiment`
    sets), else `pix2seqd`."""
    return os.environ.get(EXPERIMENT_ENV, "").strip() or EXPERIMENT


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        return uri
    path = HOME_DIR / "mlflow" / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on `uri` (a server URI is opened in a browser)."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {uri} --port 5000"


def run_page(uri: str, run_id: str) -> str:
    """The address of a run's page in the MLflow UI's "Model training" view (the UI of
    MLflow 3.17 opens an experiment in its GenAI view unless the address asks otherwise)."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    experiment = client(uri).get_run(run_id).info.experiment_id
    return f"{base}/#/experiments/{experiment}/runs/{run_id}?workflowType=machine_learning"


def client(uri: str | None = None):
    # lazy: cli.py imports this module on every job's --help path, and MLflow loads in seconds
    import mlflow.tracking

    return mlflow.tracking.MlflowClient(tracking_uri=uri or tracking_uri())


def experiment_id(mlc, name: str = "") -> str:
    """Get or create `name` (default `experiment_name()`), tagged as a model-training
    experiment unless it has a kind already; local stores keep artifacts under ~/.pix2seqd,
    not the cwd."""
    name = name or experiment_name()
    exp = mlc.get_experiment_by_name(name)
    if exp is not None:
        if EXPERIMENT_KIND_TAG not in exp.tags:  # made before the tag, or by another tool
            mlc.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        return exp.experiment_id
    location = None
    if not mlc.tracking_uri.startswith(("http://", "https://", "databricks")):
        location = (HOME_DIR / "mlflow" / "artifacts").as_uri()
    return mlc.create_experiment(
        name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}
    )


def run_name(*parts: str, overrides: Mapping[str, Any] | None = None) -> str:
    """A readable run name: the parts, then each override as the last part of its path and
    its value (numbers glued on, other values after '='), e.g. ("tiny", "coco") and
    {"optim.lr": 5e-4, "loss.kind": "l2"} -> 'tiny-coco-lr5e-4-kind=l2'."""
    items = [p for p in parts if p]
    for path, value in (overrides or {}).items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        items.append(path.rsplit(".", 1)[-1] + ("" if number else "=") + _short(value))
    return "-".join(items)


def training_run_naming(preset: str, dataset: str, overrides: Mapping[str, Any]) -> tuple[str, str]:
    """(name, description) of a training run from its preset, data set and `--set` values,
    e.g. 'tiny-coco-lr5e-4' and "Training: preset `tiny`, data set `coco`, `optim.lr=0.0005`."."""
    sets = "".join(f", `{k}={v}`" for k, v in overrides.items())
    return (
        run_name(preset, dataset, overrides=overrides),
        note(f"Training: preset `{preset}`, data set `{dataset}`{sets}."),
    )


def note(text: str, with_command: bool = True) -> str:
    """A run's description (tag `NOTE_TAG`): `text`, then the command that started the job
    (`with_command`; not in a Ray worker, whose command line is Ray's)."""
    return f"{text}\n\nCommand: `{command_line()}`" if with_command else text


def command_line() -> str:
    """The command that started this process, as a user would type it again."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(".py"):
        argv[0] = os.path.relpath(argv[0]) if os.path.isabs(argv[0]) else argv[0]
        argv.insert(0, "python")
    return " ".join(shlex.quote(a) for a in argv)


def start_run(
    mlc,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    run_name: str | None = None,
    experiment: str = "",
    parent_run_id: str | None = None,
    in_experiment: str | None = None,
) -> str:
    """Create a run with the flattened config as params; returns the run id.

    `in_experiment` (an experiment id) wins over `experiment` (a name, default
    `experiment_name()`): nested runs go to their parent's experiment."""
    # lazy: cli.py imports this module on every job's --help path, and MLflow loads in seconds
    from mlflow.entities import Param

    all_tags = {"git_commit": git_commit(), NOTE_TAG: _default_note(tags), **tags}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    exp = in_experiment or experiment_id(mlc, experiment)
    run = mlc.create_run(exp, run_name=run_name, tags=all_tags)
    run_id = run.info.run_id
    items = [Param(k, _param_str(v)) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):
        mlc.log_batch(run_id, params=items[i : i + 100])
    return run_id


def log_metrics(mlc, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    """Log finite numeric metrics at `step` in one call."""
    # lazy: cli.py imports this module on every job's --help path, and MLflow loads in seconds
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [
        Metric(k, float(v), now, int(step))
        for k, v in metrics.items()
        if v is not None and math.isfinite(float(v))
    ]
    if batch:
        mlc.log_batch(run_id, metrics=batch)


def set_tags(mlc, run_id: str, tags: Mapping[str, str]) -> None:
    # lazy: cli.py imports this module on every job's --help path, and MLflow loads in seconds
    from mlflow.entities import RunTag

    if tags:
        mlc.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def child_runs(mlc, parent_run_id: str) -> list:
    """Every run nested directly under `parent_run_id` (all pages of the search)."""
    exp = mlc.get_run(parent_run_id).info.experiment_id
    runs, token = [], None
    while True:
        page = mlc.search_runs(
            [exp],
            f"tags.mlflow.parentRunId = '{parent_run_id}'",
            max_results=1000,
            page_token=token,
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


def git_commit() -> str:
    """The source commit: PIX2SEQD_GIT_COMMIT when set (jobs submitted to a cluster run a
    copy without .git), else `git rev-parse HEAD` next to this file, else 'unknown'."""
    if os.environ.get("PIX2SEQD_GIT_COMMIT"):
        return os.environ["PIX2SEQD_GIT_COMMIT"]
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _default_note(tags: Mapping[str, str]) -> str:
    """The description of a run whose caller gave none: its job and what it read."""
    facts = ", ".join(
        f"{k} `{tags[k]}`" for k in ("preset", "dataset", "checkpoint", "split") if tags.get(k)
    )
    return note(tags.get("job", "Run") + (f": {facts}." if facts else "."))


def _short(value: Any) -> str:
    """5e-4 -> '5e-4', 0.3 -> '0.3', 20 -> '20', True -> 'true', (1.0, 3.0) -> '1,3'."""
    if isinstance(value, (tuple, list)):
        return ",".join(_short(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        text = f"{value:.2e}" if 0 < abs(value) < 0.01 else f"{value:.3g}"
        mantissa, _, exp = text.partition("e")
        if "." in mantissa:
            mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exp)}" if exp else mantissa
    return str(getattr(value, "value", value))  # an enum by its config value


def _param_str(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)[:6000]
