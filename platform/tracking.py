"""MLflow bookkeeping: the default store, runs, params, metrics, checkpoint tags.

The default store is a fixed SQLite file under the user's home so that runs started from any
folder, and by `ray job submit`, land in one place; MLFLOW_TRACKING_URI overrides it.
All calls go through an explicit `MlflowClient` and run id (no active-run global state), so
driver and workers can log to the same run.
"""
from __future__ import annotations

import math
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

HOME_DIR = Path.home() / ".pix2seqd"
EXPERIMENT = "pix2seqd"


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


def client(uri: str | None = None):
    import mlflow.tracking

    return mlflow.tracking.MlflowClient(tracking_uri=uri or tracking_uri())


def experiment_id(mlc, name: str = EXPERIMENT) -> str:
    """Get or create `name`; local stores keep artifacts under ~/.pix2seqd, not the cwd."""
    exp = mlc.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if not mlc.tracking_uri.startswith(("http://", "https://", "databricks")):
        location = (HOME_DIR / "mlflow" / "artifacts").as_uri()
    return mlc.create_experiment(name, artifact_location=location)


def start_run(mlc, params: Mapping[str, Any], tags: Mapping[str, str],
              run_name: str | None = None, experiment: str = EXPERIMENT,
              parent_run_id: str | None = None, in_experiment: str | None = None) -> str:
    """Create a run with the flattened config as params; returns the run id.

    `in_experiment` (an experiment id) wins over `experiment` (a name): nested runs go to their
    parent's experiment."""
    from mlflow.entities import Param

    all_tags = {"git_commit": git_commit(), **tags}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    exp = in_experiment or experiment_id(mlc, experiment)
    run = mlc.create_run(exp, run_name=run_name, tags=all_tags)
    run_id = run.info.run_id
    items = [Param(k, _param_str(v)) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):
        mlc.log_batch(run_id, params=items[i:i + 100])
    return run_id


def log_metrics(mlc, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    """Log finite numeric metrics at `step` in one call."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()
             if v is not None and math.isfinite(float(v))]
    if batch:
        mlc.log_batch(run_id, metrics=batch)


def set_tags(mlc, run_id: str, tags: Mapping[str, str]) -> None:
    from mlflow.entities import RunTag

    if tags:
        mlc.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def child_runs(mlc, parent_run_id: str) -> list:
    """Every run nested directly under `parent_run_id` (all pages of the search)."""
    exp = mlc.get_run(parent_run_id).info.experiment_id
    runs, token = [], None
    while True:
        page = mlc.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_run_id}'",
                               max_results=1000, page_token=token)
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
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _param_str(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)[:6000]
