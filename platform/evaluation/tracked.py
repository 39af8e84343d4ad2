"""MLflow records of evaluations: metric names, artifacts, and the evaluation jobs' runs.

An evaluation of a checkpoint becomes a run nested under the checkpoint's training run (the
run is `runs:/<id>` itself, or the one the checkpoint recorded when it was written), so the
MLflow UI shows it under the training run; without a known training run it is a top-level
run. Scoring prediction files is a top-level run of its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pix2seqd.platform import tracking
from pix2seqd.platform.evaluation.overlays import overlay

log = logging.getLogger(__name__)

DAVIS_METRICS = {
    "J&F-Mean": "val/jf",
    "J-Mean": "val/j_mean",
    "J-Recall": "val/j_recall",
    "J-Decay": "val/j_decay",
    "F-Mean": "val/f_mean",
    "F-Recall": "val/f_recall",
    "F-Decay": "val/f_decay",
}


def pq_metrics(result: Mapping[str, Any], prefix: str = "val/") -> dict[str, float]:
    """R.json -> val/pq, val/pq_th, val/pq_st, val/sq, val/rq, val/miou, val/ap_th_pan and
    eval/pq_class/<id>; val/miou and val/ap_th_pan only where R.json has a number for them
    (an older R.json, or ap_th_pan null when the prediction had no scores, leaves them out)."""
    m = {
        f"{prefix}pq": result["All"]["pq"],
        f"{prefix}pq_th": result["Things"]["pq"],
        f"{prefix}pq_st": result["Stuff"]["pq"],
        f"{prefix}sq": result["All"]["sq"],
        f"{prefix}rq": result["All"]["rq"],
    }
    m.update({f"{prefix}{k}": result[k] for k in BESIDE_PQ if result.get(k) is not None})
    m.update({f"eval/pq_class/{cid}": v["pq"] for cid, v in result["per_class"].items()})
    return m


BESIDE_PQ = ("miou", "ap_th_pan")  # R.json keys logged as val/<key> (docs/pq.md)


def davis_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """J.json -> val/jf, val/j_mean, ... (the global numbers; per object goes to J.json)."""
    return {name: float(result[key]) for key, name in DAVIS_METRICS.items()}


def timing_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    return {f"eval/{k}": float(v) for k, v in result.get("timing", {}).items()}


def pq_table(result: Mapping[str, Any]) -> str:
    """The per-class PQ / SQ / RQ table as markdown (fractions), with an IoU column when
    R.json has `iou_per_class` ('-': the category was left out of mIoU)."""
    iou = result.get("iou_per_class")
    if iou is None:
        lines = ["| category | PQ | SQ | RQ |", "|---|---|---|---|"]
    else:
        lines = ["| category | PQ | SQ | RQ | IoU |", "|---|---|---|---|---|"]
    for cid, v in sorted(result["per_class"].items(), key=lambda kv: int(kv[0])):
        row = f"| {cid} | {v['pq']:.4f} | {v['sq']:.4f} | {v['rq']:.4f} |"
        if iou is not None:
            row += f" {_fraction(iou.get(cid))} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def log_pq_artifacts(
    mlc,
    run_id: str,
    result: Mapping[str, Any],
    records: Sequence[Any],
    pred_dir: Path,
    n_overlays: int,
) -> None:
    """eval/pq.json, eval/pq_per_class.md and up to `n_overlays` overlays/<image id>.png
    (image | ground truth | prediction) of the records that were predicted."""

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "eval"
        folder.mkdir()
        (folder / "pq.json").write_text(json.dumps(result, indent=2))
        (folder / "pq_per_class.md").write_text(pq_table(result))
        mlc.log_artifacts(run_id, str(folder), "eval")
        for rec in records[:n_overlays]:
            pred_png = pred_dir / f"{Path(rec.png_path).stem}.png"
            if not pred_png.is_file():  # not among the evaluated images (eval.max_images)
                continue
            out = overlay(
                rec.image_path,
                rec.png_path,
                pred_png,
                Path(tmp) / "overlays" / f"{rec.image_id}.png",
            )
            mlc.log_artifact(run_id, str(out), "overlays")


def parent_run(ref: str, meta: Mapping[str, Any]) -> str:
    """The training run a checkpoint reference belongs to ('' when unknown)."""
    if ref.startswith("runs:/"):
        return ref[len("runs:/") :].strip("/").split("/")[0]
    return str(meta.get("mlflow_run_id") or "")


def start_eval_run(
    mlc, name: str, params: Mapping[str, Any], tags: Mapping[str, str], parent: str = ""
) -> str:
    """A run for one evaluation, nested under `parent` when that run is in this store."""
    experiment = None
    if parent:
        try:
            experiment = mlc.get_run(parent).info.experiment_id
        except Exception as err:  # noqa: BLE001 - any lookup failure: record it top-level
            log.warning(
                "training run %s not found in %s (%s); logging the evaluation as a top-level run",
                parent,
                mlc.tracking_uri,
                type(err).__name__,
            )
            parent = ""
    run_id = tracking.start_run(
        mlc,
        params,
        {"job": name, **tags},
        run_name=name,
        parent_run_id=parent or None,
        in_experiment=experiment,
    )
    log.info(
        "MLflow run %s in %s%s",
        run_id,
        mlc.tracking_uri,
        f" (nested under {parent})" if parent else "",
    )
    return run_id


@contextlib.contextmanager
def run_status(mlc, run_id: str) -> Iterator[None]:
    """Mark the run FINISHED when the block completes, FAILED when it raises."""
    try:
        yield
    except BaseException:
        mlc.set_terminated(run_id, "FAILED")
        raise
    mlc.set_terminated(run_id, "FINISHED")


def log_result_json(mlc, run_id: str, result: Mapping[str, Any], name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(result, indent=2))
        mlc.log_artifact(run_id, str(path), "eval")


def write_result(path: str | Path, result: Mapping[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
