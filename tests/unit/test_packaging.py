"""The layout never shadows the standard library, models/ stays free of ray and mlflow, and
a built wheel carries every subpackage."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOPS = ("platform", "models", "jobs", "sweeps")


def _run(code: str, env_extra: dict[str, str] | None = None, cwd: Path = ROOT):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_stdlib_platform_with_repo_root_first_on_pythonpath():
    code = (
        "import platform, uuid; platform.system(); import ray, torch;"
        "import sys; print(platform.__file__)"
    )
    out = _run(code, {"PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert not out.stdout.strip().startswith(str(ROOT)), out.stdout


def test_no_top_level_init_and_no_stdlib_names():
    for top in TOPS:
        assert not (ROOT / top / "__init__.py").exists(), f"{top}/__init__.py shadows imports"
    importable = {
        p.name for p in ROOT.iterdir() if (p / "__init__.py").exists() or p.suffix == ".py"
    }
    importable |= {"pix2seqd"}
    importable -= {"setup.py", "conftest.py"}
    assert not importable & set(sys.stdlib_module_names), importable & set(sys.stdlib_module_names)


def test_models_import_neither_ray_nor_mlflow():
    mods = sorted(p.stem for p in (ROOT / "models").glob("*.py"))
    assert "pix2seq_d" in mods and "bits" in mods
    code = (
        "import sys\n"
        f"for m in {mods!r}:\n"
        "    __import__('pix2seqd.models.' + m)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('ray', 'mlflow'))\n"
        "print(bad); assert not bad, bad\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stdout + out.stderr


def test_wheel_contains_every_subpackage(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    wheel = next(tmp_path.glob("pix2seqd-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for top in TOPS:
        for py in (ROOT / top).rglob("*.py"):
            if "__pycache__" not in py.parts:
                expected.add("pix2seqd/" + py.relative_to(ROOT).as_posix())
    missing = sorted(expected - names)
    assert not missing, f"left out of the wheel: {missing}"
