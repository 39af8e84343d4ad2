"""What a sweep leaves on its MLflow parent run: the trials as a table (CSV and markdown),
a plot of the metric along the sweep's x axis (one line per series value, one panel per
value of any other axis), the best trial, and the summary JSON of docs/cli.md."""

from __future__ import annotations

import csv
import io
import itertools
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pix2seqd.platform import tracking
from pix2seqd.platform.sweep.spec import Sweep

# scores printed in percent, as the paper's tables print them; the others as numbers
FRACTIONS = frozenset({"pq", "pq_th", "pq_st", "j_and_f", "j", "f"})
HEADINGS = {"pq": "PQ", "pq_th": "PQ_th", "pq_st": "PQ_st", "j_and_f": "J&F", "j": "J", "f": "F"}


def table_csv(sweep: Sweep, rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*sweep.paths, *sweep.scores, "status", "run_id"])
    for r in rows:
        writer.writerow(
            [
                *(r["params"][p] for p in sweep.paths),
                *(_num(r.get(k)) for k in sweep.scores),
                r.get("status", ""),
                r["run_id"],
            ]
        )
    return out.getvalue()


def table_markdown(sweep: Sweep, rows: Sequence[dict[str, Any]]) -> str:
    """Fractions in percent, as the paper's tables print them; the best row in bold."""
    best = best_row(sweep, rows)
    head = [*sweep.paths, *(HEADINGS.get(k, k) for k in sweep.scores), "status"]
    lines = [
        f"# Sweep `{sweep.name}` (paper: {sweep.paper}); metric {sweep.metric}, {sweep.mode}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        cells = [
            *(str(r["params"][p]) for p in sweep.paths),
            *(_cell(k, r.get(k)) for k in sweep.scores),
            r.get("status", ""),
        ]
        if r is best:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def best_row(sweep: Sweep, rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    key = sweep.scores[0]
    scored = [r for r in rows if r.get(key) is not None]
    if not scored:
        return None
    pick = max if sweep.mode == "max" else min
    return pick(scored, key=lambda r: r[key])


def plot(sweep: Sweep, rows: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """The first score along `sweep.plot_x`: lines for numbers (log x when values span 10x or more),
    bars for categories; None when the sweep names no x axis."""
    if not sweep.plot_x:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    others = [a for a in sweep.axes if a.path not in (sweep.plot_x, sweep.plot_series)]
    facets = list(itertools.product(*(a.values for a in others))) or [()]
    fig, axes = plt.subplots(1, len(facets), figsize=(4.5 * len(facets), 3.6), squeeze=False)
    for ax, facet in zip(axes[0], facets):
        fixed = {a.path: v for a, v in zip(others, facet)}
        _draw_panel(
            ax, sweep, [r for r in rows if all(r["params"][p] == v for p, v in fixed.items())]
        )
        ax.set_title(", ".join(f"{p}={v}" for p, v in fixed.items()) or sweep.name, fontsize=9)
    fig.suptitle(f"{sweep.name} ({sweep.paper})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _draw_panel(ax, sweep: Sweep, rows: Sequence[dict[str, Any]]) -> None:
    x_axis = next(a for a in sweep.axes if a.path == sweep.plot_x)
    series_axis = next((a for a in sweep.axes if a.path == sweep.plot_series), None)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x_axis.values)
    series = series_axis.values if series_axis else (None,)
    score = sweep.scores[0]
    for k, s in enumerate(series):
        pts = [
            (r["params"][sweep.plot_x], r[score])
            for r in rows
            if r.get(score) is not None and (s is None or r["params"][sweep.plot_series] == s)
        ]
        label = f"{sweep.plot_series}={s}" if s is not None else None
        if numeric:
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        else:
            width = 0.8 / len(series)
            ax.bar(
                [x_axis.values.index(p[0]) + k * width for p in pts],
                [p[1] for p in pts],
                width=width,
                label=label,
            )
            centre = (len(series) - 1) * width / 2
            ax.set_xticks(
                [i + centre for i in range(len(x_axis.values))], [str(v) for v in x_axis.values]
            )
    positive = [v for v in x_axis.values if numeric and v > 0]
    if (
        numeric
        and positive
        and max(positive) >= 10 * min(positive)
        and len(positive) == len(x_axis.values)
    ):
        ax.set_xscale("log")
    ax.set_xlabel(sweep.plot_x)
    ax.set_ylabel(HEADINGS.get(score, score))
    if series_axis:
        ax.legend(fontsize=7)


def log_summary(mlc, parent_run_id: str, sweep: Sweep, rows: Sequence[dict[str, Any]]) -> dict:
    """Tables, plot and summary JSON as artifacts of the parent run (folder `sweep/`), the
    best trial's scores as its metrics `best/*` and its run id as tag `best_run_id`.
    Returns the summary of docs/cli.md (+ 'status' per trial)."""
    summary = {
        "parent_run_id": parent_run_id,
        "trials": [
            {k: r.get(k) for k in ("run_id", "params", *sweep.scores, "status")} for r in rows
        ],
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "sweep"
        folder.mkdir()
        (folder / "summary.csv").write_text(table_csv(sweep, rows))
        (folder / "summary.md").write_text(table_markdown(sweep, rows))
        (folder / "summary.json").write_text(json.dumps(summary, indent=2))
        x_name = sweep.plot_x.rsplit(".", 1)[-1] or "trial"
        plot(sweep, rows, folder / f"{sweep.scores[0]}_vs_{x_name}.png")
        mlc.log_artifacts(parent_run_id, str(folder), "sweep")
    best = best_row(sweep, rows)
    if best is not None:
        tracking.log_metrics(
            mlc,
            parent_run_id,
            {f"best/{k}": best[k] for k in sweep.scores if best.get(k) is not None},
            0,
        )
        tracking.set_tags(mlc, parent_run_id, {"best_run_id": best["run_id"]})
    return summary


def _num(value: Any) -> str:
    return "" if value is None else f"{value:.6f}"


def _cell(score: str, value: Any) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}" if score in FRACTIONS else f"{value:.2f}"
