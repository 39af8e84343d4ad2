"""cluster.yaml: Ray's own validation (the installed autoscaler's schema and checks, offline,
no AWS account), its node types, the security rules (SSH from one CIDR, IMDSv2, Ray token
auth, MLflow basic auth), the pinned installs, and the cluster scripts."""

from __future__ import annotations

import copy
import os
import re
import sqlite3
import subprocess
import sys
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
    assert config["file_mounts"] == {
        "~/pix2seqd": ".",
        "~/.ray/auth_token": "~/.ray/auth_token",
        "~/.pix2seqd/mlflow_credentials": "~/.pix2seqd/mlflow_credentials",
    }
    for script in ("node_env.sh", "node_auth.sh", "start_mlflow.sh", "install_uv.sh"):
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


def _script(name: str):
    """A module of scripts/cluster/ (not a package) by file name."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts/cluster" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cluster_texts() -> dict[str, str]:
    files = [ROOT / "cluster.yaml", *(ROOT / "scripts/cluster").iterdir()]
    return {p.name: p.read_text() for p in files if p.is_file() and p.suffix != ".pyc"}


# ----- SSH from one CIDR ------------------------------------------------------------------


def test_every_node_is_in_one_group_that_ray_does_not_make():
    from ray.autoscaler._private.aws.config import _configure_security_group

    config = _config()
    groups = [t["node_config"]["SecurityGroupIds"] for t in config["available_node_types"].values()]
    assert all(g == groups[0] for g in groups) and len(groups[0]) == 1
    # the committed placeholder (`ray up` stops: no group has that id) or a real id
    assert re.fullmatch(r"sg-SET-BY-security_group\.py|sg-[0-9a-f]{8,17}", groups[0][0])
    # Ray's own bootstrap step leaves the groups alone: it makes (and opens SSH to the
    # internet on) a group only for node types without SecurityGroupIds; no AWS call here
    before = copy.deepcopy(config)
    assert _configure_security_group(config) == before
    for name, text in _cluster_texts().items():
        assert "0.0.0.0/0" not in text and "::/0" not in text, name


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0", "203.0.113.7/24", "not-a-cidr"])
def test_the_group_script_refuses_the_internet_and_malformed_cidrs(cidr):
    sg = _script("security_group")
    with pytest.raises(ValueError, match="--ssh-cidr"):
        sg.checked_cidr(cidr)
    with pytest.raises(SystemExit):  # before any AWS call (there are no credentials here)
        sg.main(["--ssh-cidr", cidr])


def test_the_group_script_keeps_exactly_ssh_from_the_cidr_and_the_cluster(monkeypatch):
    from moto import mock_aws

    sg = _script("security_group")
    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        import boto3

        ec2 = boto3.client("ec2", region_name="us-west-2")
        vpc = sg.default_vpc(ec2)

        def ingress(group_id):
            group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
            return sg.current_rules(group["IpPermissions"])

        gid = sg.ensure_group(ec2, "pix2seqd-test", "203.0.113.7/32", vpc)
        assert ingress(gid) == {
            ("tcp", 22, 22, "cidr", "203.0.113.7/32"),
            ("-1", -1, -1, "group", gid),
        }
        # a rule added by hand (SSH from anywhere) and the old CIDR go; the group is reused
        ec2.authorize_security_group_ingress(
            GroupId=gid,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 22,
                    "ToPort": 22,
                    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                }
            ],
        )
        assert sg.ensure_group(ec2, "pix2seqd-test", "198.51.100.0/24", vpc) == gid
        assert ingress(gid) == {
            ("tcp", 22, 22, "cidr", "198.51.100.0/24"),
            ("-1", -1, -1, "group", gid),
        }


# ----- IMDSv2, Ray token auth, MLflow basic auth --------------------------------------------


def test_imdsv2_is_required_on_every_node():
    for name, t in _config()["available_node_types"].items():
        options = t["node_config"]["MetadataOptions"]
        assert options["HttpTokens"] == "required" and options["HttpEndpoint"] == "enabled", name
    # the one metadata lookup of the node scripts asks for a session token first
    env = (ROOT / "scripts/cluster/node_env.sh").read_text()
    assert "-X PUT http://169.254.169.254/latest/api/token" in env.replace("-sfX", "-X")


def test_ray_token_auth_on_every_node_with_the_laptops_token():
    config = _config()
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    env = (ROOT / "scripts/cluster/node_env.sh").read_text()
    assert "source ~/pix2seqd/scripts/cluster/node_auth.sh || return 1" in env
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in config[key] if "ray start" in c]
        assert start and all("node_env.sh &&" in c for c in start), key
    for name, text in _cluster_texts().items():
        assert "RAY_AUTH_MODE=disabled" not in text, name


def _source_node_auth(home: Path) -> subprocess.CompletedProcess:
    probe = (
        f"source {ROOT}/scripts/cluster/node_auth.sh || exit 7; "
        'printf "%s\\n%s\\n%s\\n" "$MLFLOW_TRACKING_USERNAME" "$MLFLOW_TRACKING_PASSWORD" '
        '"$RAY_AUTH_MODE"'
    )
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    return subprocess.run(["bash", "-c", probe], env=env, capture_output=True, text=True)


def test_node_auth_exports_the_login_and_refuses_without_the_files(tmp_path):
    run = _source_node_auth(tmp_path)
    assert run.returncode == 7 and "mlflow_credentials" in run.stderr
    creds = tmp_path / ".pix2seqd/mlflow_credentials"
    creds.parent.mkdir()
    creds.write_text("MLFLOW_TRACKING_USERNAME=admin\nMLFLOW_TRACKING_PASSWORD=short\n")
    run = _source_node_auth(tmp_path)
    assert run.returncode == 7 and "at least 12 characters" in run.stderr
    password = "p$(touch pwned) \"'`x"  # read as text, never run
    creds.write_text(
        f"# comment\nMLFLOW_TRACKING_USERNAME=admin\nMLFLOW_TRACKING_PASSWORD={password}\n"
    )
    run = _source_node_auth(tmp_path)
    assert run.returncode == 7 and ".ray/auth_token is missing" in run.stderr
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray/auth_token").write_text("0123456789abcdef")
    run = _source_node_auth(tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["admin", password, "token"]
    assert not (tmp_path / "pwned").exists()


def test_the_token_mount_is_where_ray_reads_and_writes_it(monkeypatch, tmp_path):
    # where `ray get-auth-token --generate` writes the token and every Ray process looks
    # for it (RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH unset)
    from ray._private.authentication.authentication_token_setup import _get_default_token_path

    monkeypatch.setenv("HOME", str(tmp_path))
    mount = next(k for k in _config()["file_mounts"] if k.endswith("auth_token"))
    assert _get_default_token_path() == Path(os.path.expanduser(mount))


def test_mlflow_runs_its_basic_auth_app_with_the_shared_login():
    import configparser

    config = _config()
    assert (
        config["file_mounts"]["~/.pix2seqd/mlflow_credentials"] == "~/.pix2seqd/mlflow_credentials"
    )
    start = (ROOT / "scripts/cluster/start_mlflow.sh").read_text()
    assert "mlflow server --app-name basic-auth" in start
    ini = ROOT / "scripts/cluster/mlflow_basic_auth.ini"
    assert f"MLFLOW_AUTH_CONFIG_PATH=~/pix2seqd/{ini.relative_to(ROOT)}" in start
    assert 'MLFLOW_AUTH_ADMIN_USERNAME="$MLFLOW_TRACKING_USERNAME"' in start
    assert 'MLFLOW_AUTH_ADMIN_PASSWORD="$MLFLOW_TRACKING_PASSWORD"' in start
    assert "MLFLOW_FLASK_SERVER_SECRET_KEY=" in start
    # no login in the file, no access by default (the server itself: test_cluster_as_written)
    auth = configparser.ConfigParser()
    auth.read(ini)
    assert "admin_username" not in auth["mlflow"] and "admin_password" not in auth["mlflow"]
    assert auth["mlflow"]["default_permission"] == "NO_PERMISSIONS"
    assert re.fullmatch(r"sqlite:///\w+\.db", auth["mlflow"]["database_uri"])


# ----- pinned installs ----------------------------------------------------------------------

CONSTRAINTS = ROOT / "constraints/cluster.txt"


def _pins() -> dict[str, str]:
    lines = [ln for ln in CONSTRAINTS.read_text().splitlines() if not ln.startswith("#")]
    pins = dict(ln.split("==") for ln in lines)
    assert all(re.fullmatch(r"[a-z0-9-]+", n) and "+" not in v for n, v in pins.items())
    return pins


def test_nodes_install_with_ci_python_and_the_constraints():
    config = _config()
    text = (ROOT / "cluster.yaml").read_text()
    assert not re.search(r"\|\s*(sudo\s+)?(ba|z)?sh\b", text)  # nothing piped into a shell
    setup = config["setup_commands"]
    assert setup[0] == "bash ~/pix2seqd/scripts/cluster/install_uv.sh"
    python = re.search(r"CPython (\d+\.\d+\.\d+)", CONSTRAINTS.read_text()).group(1)
    assert f"uv venv --python {python} " in setup[1]
    installs = [c for c in setup + config["head_setup_commands"] if "pip install" in c]
    assert len(installs) == 2
    assert all("--constraint ~/pix2seqd/constraints/cluster.txt" in c for c in installs)
    assert installs[1].endswith(" boto3") and "boto3" in _pins()


def test_uv_is_one_release_checked_against_its_hash(tmp_path):
    script = (ROOT / "scripts/cluster/install_uv.sh").read_text()
    version = re.search(r"^UV_VERSION=(\d+\.\d+\.\d+)$", script, re.M).group(1)
    assert re.search(r"^SHA256=[0-9a-f]{64}$", script, re.M)
    assert "WHEEL=uv-${UV_VERSION}-" in script and not re.search(r"\|\s*(ba|z)?sh\b", script)
    assert '== "uv $UV_VERSION "*' in script  # an installed uv of another release is replaced
    # a download whose hash differs is refused before anything is unpacked
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "curl").write_text(
        '#!/bin/bash\nwhile [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done\n'
        'echo "not uv" > "$out"\n'
    )
    (fake_bin / "curl").chmod(0o755)
    env = {"HOME": str(tmp_path), "PATH": f"{fake_bin}:/usr/bin:/bin"}
    run = subprocess.run(
        ["bash", str(ROOT / "scripts/cluster/install_uv.sh")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0 and "did NOT match" in run.stderr
    assert not (tmp_path / ".local/bin/uv").exists()
    assert version.count(".") == 2


def test_constraints_pin_every_package_a_node_installs():
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    mc = _script("make_constraints")
    pins = _pins()
    header = CONSTRAINTS.read_text().splitlines()[:2]
    python = re.search(r"CPython (\d+\.\d+\.\d+)\)", header[1]).group(1)
    assert header == mc.HEADER.format(python=python).splitlines()
    assert python.startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")
    # what this venv (.ci/run's) would install on a node: all of it pinned
    assert set(mc.closure(mc.node_requirements())) <= set(pins)
    # within pyproject's ranges; its exact pins as they are
    for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(line)
        assert req.specifier.contains(pins[canonicalize_name(req.name)]), line


def test_constraints_generator_follows_extras_and_markers_and_drops_local_labels():
    from packaging.requirements import Requirement

    mc = _script("make_constraints")
    plain = mc.closure([Requirement("ray==2.60.0")])
    default = mc.closure([Requirement("ray[default]==2.60.0")])
    assert "aiohttp-cors" in default and "aiohttp-cors" not in plain  # ray[default] only
    assert set(plain) < set(default)
    assert mc.closure([Requirement('ray==2.60.0; sys_platform == "win32"')]) == {}
    text = mc.render({"torch": "2.13.0+cpu", "numpy": "2.3.1"})
    assert text.splitlines()[2:] == ["numpy==2.3.1", "torch==2.13.0"]
