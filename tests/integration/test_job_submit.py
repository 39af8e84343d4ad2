"""`ray job submit` of train_coco to a real `ray start --head` cluster, as the README's
"Submitting jobs to a Ray cluster" does it, on generated data, logging to a real MLflow server.

The code of the submitted working copy runs on the driver and on every worker:
- the package is built from the working copy with the README's command
  (`pip install --no-deps --no-build-isolation --target dist/py_modules .`, run in a copy of
  the sources so the shared checkout's build/ folder is left alone) and shipped with the
  committed runtime_env.yaml (`py_modules`), MLFLOW_TRACKING_URI added as `env_vars`;
- a probe run before the job, in the same entrypoint, prints where `pix2seqd` is imported from
  in the driver and in a Ray task (a worker process of the job): both must be Ray's unpacked
  `py_modules_files` copy, not this venv's editable install of the checkout;
- train_coco's training loop runs in the Ray Train worker actors, processes of the same job
  with the same runtime env, and the rank-0 worker logs `train/loss` every step: a FINISHED
  MLflow run with 4 `train/loss` points and `val/pq` shows the workers ran the submitted code.

The cluster is stopped in `finally`, even on failure, by killing the processes this test started
(by process id: `ray start --block` in its own session, its descendants and the job's driver).
Not `ray stop --force`: that kills every Ray process on the machine, other test runs' included.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml
from helpers_cluster import free_ports, ray_env, stop_cluster, wait_until_serving

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_SOURCES = (
    "setup.py",
    "pyproject.toml",
    "README.md",
    "platform",
    "models",
    "jobs",
    "sweeps",
)
PROBE = (
    "import ray, pix2seqd.platform.train.loop as m; ray.init(); "
    "f = ray.remote(lambda: __import__('pix2seqd.platform.train.loop', fromlist=['_']).__file__); "
    "print('PIX2SEQD_DRIVER', m.__file__); print('PIX2SEQD_WORKER', ray.get(f.remote()))"
)


def _build_py_modules(dest: Path) -> Path:
    """The README's build command on a copy of the working copy's package sources."""
    src = dest / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PACKAGE_SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            "dist/py_modules",
            ".",
        ],
        cwd=src,
        check=True,
        capture_output=True,
    )
    pkg = src / "dist" / "py_modules" / "pix2seqd"
    built = {p.relative_to(pkg).as_posix() for p in pkg.rglob("*.py")}
    sources = {
        p.relative_to(src).as_posix()
        for t in ("platform", "models", "jobs", "sweeps")
        for p in (src / t).rglob("*.py")
    }
    assert built == sources, f"left out of the package: {sorted(sources - built)}"
    return pkg


def test_ray_job_submit_runs_the_working_copy(mlflow_server, tmp_path):
    from pix2seqd.platform.synthetic.coco import make_coco

    data = make_coco(tmp_path / "coco", seed=3, n_train=12, n_val=3, min_size=48, max_size=64)
    pkg = _build_py_modules(tmp_path)

    committed = yaml.safe_load((ROOT / "runtime_env.yaml").read_text())
    assert committed["py_modules"] == ["dist/py_modules/pix2seqd"]  # what the README builds
    runtime_env = {
        **committed,
        "py_modules": [str(pkg)],
        "env_vars": {"MLFLOW_TRACKING_URI": mlflow_server},
    }
    env_file = tmp_path / "runtime_env.yaml"
    env_file.write_text(yaml.safe_dump(runtime_env))

    env = ray_env()
    # Ray's socket paths must stay under 108 bytes: a short temp dir, not tmp_path.
    ray_tmp = Path(tempfile.mkdtemp(prefix="p2sd-rjs-", dir="/tmp"))
    gcs, dash, client, agent = free_ports(4)
    address = f"http://127.0.0.1:{dash}"
    start_log = tmp_path / "ray_start.log"
    with open(start_log, "w") as log:
        head = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("ray")),
                "start",
                "--head",
                "--block",
                "--port",
                str(gcs),
                "--dashboard-port",
                str(dash),
                "--dashboard-host",
                "127.0.0.1",
                "--ray-client-server-port",
                str(client),
                "--dashboard-agent-listen-port",
                str(agent),
                "--num-cpus",
                "4",
                "--object-store-memory",
                str(256 * 2**20),
                "--temp-dir",
                str(ray_tmp),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    survivors: set[int] = set()
    try:
        wait_until_serving(f"{address}/api/version", head, start_log, timeout=120)

        sid = f"pix2seqd-itest-{uuid.uuid4().hex[:8]}"
        summary_path = tmp_path / "summary.json"
        sets = [
            "train.steps=4",
            "train.batch_size=4",
            "train.checkpoint_every=2",
            "train.log_every=1",
            "sample.steps=2",
            "eval.max_images=3",
            "eval.batch_size=3",
            "eval.overlays=1",
            "data.image_size=32",
            "optim.warmup_steps=1",
        ]
        job = [
            "python",
            "jobs/train_coco.py",
            "--data-root",
            str(data),
            "--storage-path",
            str(tmp_path / "ray"),
            "--summary-json",
            str(summary_path),
            "--run-name",
            "job-submit",
        ] + [x for s in sets for x in ("--set", s)]
        ray_bin = str(Path(sys.executable).with_name("ray"))
        submit = subprocess.run(
            [
                ray_bin,
                "job",
                "submit",
                "--address",
                address,
                "--submission-id",
                sid,
                "--working-dir",
                ".",
                "--runtime-env",
                str(env_file),
                "--",
                "bash",
                "-c",
                f"python -c {shlex.quote(PROBE)} && {shlex.join(job)}",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=480,
        )
        output = submit.stdout + submit.stderr
        (tmp_path / "submit.log").write_text(output)
        assert submit.returncode == 0, (
            f"ray job submit failed ({submit.returncode}):\n{output[-8000:]}"
        )

        logs = subprocess.run(
            [ray_bin, "job", "logs", "--address", address, sid],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        where = dict(
            line.split(" ", 1)
            for line in logs.splitlines()
            if line.startswith(("PIX2SEQD_DRIVER ", "PIX2SEQD_WORKER "))
        )
        assert set(where) == {"PIX2SEQD_DRIVER", "PIX2SEQD_WORKER"}, logs[-4000:]
        for role, path in where.items():
            assert (
                path.startswith(str(ray_tmp)) and "/runtime_resources/py_modules_files/" in path
            ), (role, path)
            assert not path.startswith(str(ROOT)), (role, path)

        # What --working-dir . uploaded: the entry scripts, none of .venv / build / dist / .git.
        [wd] = [
            p
            for p in (ray_tmp / "session_latest/runtime_resources/working_dir_files").iterdir()
            if p.is_dir()
        ]
        assert (wd / "jobs/train_coco.py").is_file() and (wd / "runtime_env.yaml").is_file()
        assert not any((wd / d).exists() for d in (".venv", "build", "dist", ".git"))
        assert sum(f.stat().st_size for f in wd.rglob("*") if f.is_file()) < 20 * 2**20

        summary = json.loads(summary_path.read_text())
        assert summary["tracking_uri"] == mlflow_server
        # plumbing only: 2-4-step runs score PQ 0.0 (test_train_coco_job.py, 2026-12-07);
        # the score floors: tests/integration/test_score_floors.py
        assert all(0.0 <= v <= 1.0 for v in summary["metrics"].values())

        import mlflow.tracking

        mlc = mlflow.tracking.MlflowClient(mlflow_server)
        run = mlc.get_run(summary["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.params["train.steps"] == "4"
        assert run.data.params["data.root"] == str(data)
        assert 0.0 <= run.data.metrics["val/pq"] <= 1.0
        assert len(mlc.get_metric_history(run.info.run_id, "train/loss")) == 4  # rank-0 worker
        assert "git_commit" in run.data.tags and run.data.tags["dataset"] == "coco"

        # a sweep goes the same way: the inference sweep on the job's checkpoint
        sweep_json = tmp_path / "sweep.json"
        sweep = [
            "python",
            "sweeps/inference.py",
            "--checkpoint",
            summary["checkpoint"],
            "--data-root",
            str(data),
            "--steps",
            "1,2",
            "--td",
            "2",
            "--min-pixels",
            "0",
            "--summary-json",
            str(sweep_json),
        ]
        submit = subprocess.run(
            [
                ray_bin,
                "job",
                "submit",
                "--address",
                address,
                "--working-dir",
                ".",
                "--runtime-env",
                str(env_file),
                "--",
                *sweep,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert submit.returncode == 0, (
            f"sweep submit failed:\n{(submit.stdout + submit.stderr)[-6000:]}"
        )
        trials = json.loads(sweep_json.read_text())["trials"]
        assert [t["params"]["sample.steps"] for t in trials] == [1, 2]
        parent = mlc.get_run(json.loads(sweep_json.read_text())["parent_run_id"])
        assert parent.info.status == "FINISHED" and parent.data.tags["sweep"] == "inference"
    finally:
        survivors = stop_cluster(head.pid)
        head.wait(timeout=30)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not survivors, f"Ray processes left running: {sorted(survivors)}"
