"""The figures of `benchmark.py tracking-load` from hand-built metric histories and logs."""

from __future__ import annotations

from types import SimpleNamespace

from pix2seqd.platform.benchmarks.tracking_load import (
    LoadSettings,
    latency,
    sweep_command,
    trial_counts,
    trouble_lines,
)
from pix2seqd.platform.config import override, parse_overrides
from pix2seqd.platform.presets import tiny


def _metric(step: int, ms: int):
    return SimpleNamespace(step=step, timestamp=ms)


class _Client:
    """Two trials of 4 steps: `a` logged all, `b` lost steps 2 and 4."""

    history = {
        ("a", "train/loss"): [_metric(s, 1000 * s) for s in (1, 2, 3, 4)],
        ("a", "val/pq"): [_metric(4, 4000)],
        ("b", "train/loss"): [_metric(1, 500), _metric(3, 9000)],
    }

    def get_metric_history(self, run_id, key):
        return self.history.get((run_id, key), [])


def _run(run_id: str, keys: tuple[str, ...]):
    return SimpleNamespace(
        info=SimpleNamespace(run_id=run_id, run_name=f"trial-{run_id}"),
        data=SimpleNamespace(metrics=dict.fromkeys(keys, 0.0)),
    )


def test_trial_counts_name_each_missing_step_and_count_every_value():
    runs = [_run("a", ("train/loss", "val/pq")), _run("b", ("train/loss",))]
    counts = trial_counts(_Client(), runs, steps=4)
    assert counts["trial_runs"] == 2
    assert counts["loss_steps_missing"] == {"trial-b": [2, 4]}
    assert counts["metric_values"] == 4 + 1 + 2
    assert counts["loss_span_s"] == 8.5  # 500 ms to 9000 ms


def test_latency_quantiles_by_rank():
    ms = [float(v) for v in range(1, 21)]  # 1..20 ms
    assert latency(ms) == {"n": 20, "p50_ms": 10.5, "p95_ms": 20.0, "max_ms": 20.0}
    assert latency([]) == {"n": 0}


def test_trouble_lines_count_lines_not_words():
    text = "ok\nsqlite3.OperationalError: database is locked (database is locked)\n"
    text += "MLflow at http://x unreachable (...)\nMLflow refused tags (dropped)\n"
    assert trouble_lines(text) == {"database is locked": 1, "unreachable": 1, "refused": 1}


def test_the_sweeps_overrides_are_valid_config_values():
    s = LoadSettings(trials=3, steps=40, checkpoint_every=20)
    cmd = sweep_command(s, "/d", "/s", "/j.json")
    assert cmd[cmd.index("--grid") + 1] == "train.seed=0,1,2"
    sets = [cmd[k + 1] for k, flag in enumerate(cmd) if flag == "--set"]
    cfg = override(tiny(), parse_overrides(sets))
    assert (cfg.train.steps, cfg.train.log_every, cfg.eval.every_steps) == (40, 1, 20)
