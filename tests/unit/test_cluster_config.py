"""cluster.yaml: Ray's own validation (the installed autoscaler's schema and checks, offline,
no AWS account), its node types, the security rules, and the cluster scripts."""

from __future__ import annotations

import copy
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _config() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def _validated(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_rays_validation():
    prepared = _validated(_config())
    assert prepared["provider"]["type"] == "aws" and prepared["head_node_type"] == "head"


@pytest.mark.parametrize(
    "breakage,message",
    [
        (lambda c: c.update(max_workers="four"), "is not of type"),
        (lambda c: c["available_node_types"]["gpu_1x"].update(gpus=1), "gpus"),
        (lambda c: c.update(head_node_type="cpu_head"), "head_node_type"),
        (
            lambda c: (
                c.update(max_workers=1) or c["available_node_types"]["gpu_1x"].update(min_workers=2)
            ),
            "max_workers",
        ),
    ],
)
def test_the_validation_catches_a_broken_copy(breakage, message):
    config = _config()
    breakage(config)
    with pytest.raises(Exception, match=message):
        _validated(config)


def test_node_types_the_issue_asks_for():
    types = _config()["available_node_types"]
    assert types["head"]["resources"] == {"CPU": 0}  # the head runs no tasks
    assert types["gpu_1x"]["resources"]["GPU"] == 1 and types["gpu_8x"]["resources"]["GPU"] == 8
    assert "GPU" not in types["cpu_data"]["resources"]
    for name in ("gpu_1x", "gpu_8x", "cpu_data"):
        assert types[name]["min_workers"] == 0 and types[name]["max_workers"] >= 1
    assert types["gpu_1x"]["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    for name, t in types.items():
        assert t["node_config"]["ImageId"].startswith("resolve:ssm:/aws/service/"), name


def test_security_no_open_ports_no_credentials_private_services():
    config = _config()
    text = (ROOT / "cluster.yaml").read_text()
    # only Ray's default rules (SSH + intra-cluster): no extra ingress for 8265 / 5000
    assert "IpPermissions" not in text and "security_group" not in config["provider"]
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    scripts = {p.name: p.read_text() for p in (ROOT / "scripts/cluster").iterdir() if p.is_file()}
    for name, body in {"cluster.yaml": text, **scripts}.items():
        assert not re.search(r"AKIA[0-9A-Z]{12,}|aws_secret_access_key|AWS_SECRET", body), name
    mlflow = scripts["start_mlflow.sh"]
    assert "--allowed-hosts" in mlflow and "--cors-allowed-origins" in mlflow
    assert "--serve-artifacts" in mlflow and '--artifacts-destination "s3://' in mlflow
    # every node logs to the head's server, not to a local SQLite file
    assert 'MLFLOW_TRACKING_URI="http://' in scripts["node_env.sh"]
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert "node_env.sh" in " ".join(config[key])


def test_setup_installs_the_project_and_scripts_parse():
    config = _config()
    assert any("pip install" in c and "-e ~/pix2seqd" in c for c in config["setup_commands"])
    assert config["file_mounts"] == {"~/pix2seqd": "."}
    for script in ("node_env.sh", "start_mlflow.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "scripts/cluster" / script)], check=True)


def test_mlflow_store_backup_and_restore(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "mlflow_db", ROOT / "scripts/cluster/mlflow_db.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    local, remote = tmp_path / "head/mlflow.db", str(tmp_path / "bucket/mlflow-db/mlflow.db")
    local.parent.mkdir()
    with sqlite3.connect(local) as db:
        db.execute("create table runs (id text)")
        db.execute("insert into runs values ('r1')")
    assert not mod.restore(tmp_path / "new_head/mlflow.db", remote)  # nothing stored yet
    mod.backup(local, remote)
    assert not mod.restore(local, remote)  # an existing store is never overwritten
    fresh = tmp_path / "new_head/mlflow.db"
    assert mod.restore(fresh, remote)
    with sqlite3.connect(fresh) as db:
        assert db.execute("select id from runs").fetchall() == [("r1",)]
