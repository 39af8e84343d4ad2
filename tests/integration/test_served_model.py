"""The served MLflow model (docs/serving.md): tiny image and video checkpoints logged as the
training job logs them, loaded with `mlflow.pyfunc.load_model` in a fresh process without
Ray and without this checkout's modules, predict what `jobs/predict.py` writes."""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from helpers_ckpt import image_config, video_config, write_checkpoint
from helpers_jobs import load_job
from mlflow.tracking import MlflowClient
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]

# The fresh process: Ray unimportable (as on a server without it). It predicts each request,
# then a request with a broken image, and records where the pix2seqd modules came from and
# the third-party distributions those modules import at their top.
SERVE = """
import ast, importlib.metadata, json, pickle, sys
sys.modules["ray"] = None
import mlflow.pyfunc
import pandas as pd

args = json.loads(sys.argv[1])
out, models = {}, {}
for kind, req in args["requests"].items():
    models[kind] = mlflow.pyfunc.load_model(req["uri"])
    files = {k: [open(p, "rb").read() for p in paths] for k, paths in req["files"].items()}
    out[kind] = models[kind].predict(pd.DataFrame({**req["values"], **files}))
try:
    models["image"].predict(pd.DataFrame({"image": [b"not an image"]}))
except ValueError as err:
    out["bad_image_error"] = str(err)
dists = importlib.metadata.packages_distributions()
files = {n: m.__file__ for n, m in sys.modules.items()
         if n.startswith("pix2seqd.") and getattr(m, "__file__", None)}
imported = set()
for path in files.values():
    for node in ast.parse(open(path).read()).body:
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            imported.add(node.module.split(".")[0])
third = imported - set(sys.stdlib_module_names) - {"__future__", "pix2seqd"}
out["module_files"] = files
out["distributions"] = sorted({d for m in third for d in dists.get(m, [m])})
pickle.dump(out, open(args["out"], "wb"))
"""


@pytest.fixture
def local_store(tmp_path, monkeypatch):
    """(client, experiment id) of an MLflow store on SQLite in the test's folder."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlc = MlflowClient(uri)
    yield mlc, mlc.create_experiment("served", artifact_location=str(tmp_path / "artifacts"))
    mlflow.set_tracking_uri(None)  # log_final_model pointed MLflow's fluent API here


def test_pyfunc_model_predicts_like_predict_job(ray_session, local_store, tmp_path):
    from pix2seqd.platform.train.fit import log_final_model

    mlc, experiment = local_store
    images, frames, ckpts = _inputs(tmp_path)
    runs, outs = {}, {}
    for kind, ckpt in ckpts.items():
        runs[kind] = mlc.create_run(experiment).info.run_id
        log_final_model(mlc, runs[kind], str(ckpt))
        outs[kind] = tmp_path / f"job_{kind}"
        inputs = images[0].parent if kind == "image" else frames[0].parent
        load_job("predict").main(
            ["--checkpoint", str(ckpt), "--input", str(inputs), "--out", str(outs[kind])]
        )
    video = frames[0].parent.name
    requests = {
        "image": {"files": {"image": [str(p) for p in images]}, "values": {}},
        "video": {"files": {"frame": [str(p) for p in frames]}, "values": {"video": [video] * 4}},
    }
    for kind, req in requests.items():
        req["uri"] = f"runs:/{runs[kind]}/model"
    served = _served(tmp_path, requests)

    _check_images(served["image"], outs["image"])
    _check_video(served["video"], outs["video"], frames)
    assert "request row 0 (image): cannot decode image" in served["bad_image_error"]
    # the package's code came with the model: no module of this checkout was loaded
    assert served["module_files"] and not [
        f for f in served["module_files"].values() if Path(f).is_relative_to(ROOT)
    ]
    _check_logged(runs, served["distributions"])


def _inputs(tmp_path: Path) -> tuple[list[Path], list[Path], dict[str, Path]]:
    """5 generated COCO images (batches of eval.batch_size 4 and 1, each seeded by its
    first image), the first 4 frames of a generated DAVIS video (from t = 2 on a frame is
    conditioned on two earlier ones), and tiny image and video checkpoints."""
    from pix2seqd.platform.data.coco_panoptic import load_coco_panoptic
    from pix2seqd.platform.synthetic.coco import make_coco
    from pix2seqd.platform.synthetic.davis import make_davis

    root = make_coco(tmp_path / "coco", 5, 0, 5, 40, 56)
    _, cmap = load_coco_panoptic(root, "val2017")
    davis = make_davis(tmp_path / "davis", 6, 0, 1, 40, 56) / "JPEGImages/480p"
    frames = sorted(next(davis.iterdir()).glob("*.jpg"))
    for extra in frames[4:]:
        extra.unlink()
    image_cfg = image_config(cmap.num_classes)
    ckpts = {
        "image": write_checkpoint(tmp_path / "ckpt", image_cfg, cmap.to_coco()),
        "video": write_checkpoint(tmp_path / "vckpt", video_config()),
    }
    return sorted((root / "val2017").iterdir()), frames[:4], ckpts


def _served(tmp_path: Path, requests: dict) -> dict:
    args = {"requests": requests, "out": str(tmp_path / "served.pkl")}
    # single-threaded torch, as the job's CPU actors run, so that sums agree bit for bit
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", SERVE, json.dumps(args)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return pickle.loads((tmp_path / "served.pkl").read_bytes())


def _check_images(served, out: Path) -> None:
    """Each row's id map and segments_info are the job's for the same image."""
    from pix2seqd.platform.data.coco_panoptic import read_id_png

    job = json.loads((out / "predictions.json").read_text())["annotations"]
    assert len(served) == len(job) == 5
    segments = 0
    for ann, (_, row) in zip(job, served.iterrows()):
        ids = read_id_png(row["png"])
        assert np.array_equal(ids, read_id_png(out / ann["file_name"])), ann["file_name"]
        assert json.loads(row["segments_info"]) == ann["segments_info"], ann["file_name"]
        segments += len(ann["segments_info"])
    assert segments > 0  # the comparison covers real segments, not empty maps


def _check_video(served, out: Path, frames: list[Path]) -> None:
    """Each frame's object ids are the job's palette PNG's; ids and drops as it reports."""
    job = json.loads((out / "predictions.json").read_text())
    name = frames[0].parent.name
    assert len(served) == len(frames) == len(job["frames"])
    assert set(served["proposals_dropped"]) == {job["proposals_dropped"]}
    for f, meta, (_, row) in zip(frames, job["frames"], served.iterrows()):
        assert np.array_equal(_decoded(row["png"]), _decoded(out / name / f"{f.stem}.png"))
        assert json.loads(row["ids"]) == meta["ids"] and row["video"] == name
    assert any(json.loads(ids) for ids in served["ids"])


def _check_logged(runs: dict[str, str], distributions: list[str]) -> None:
    """Signature and input example present; the requirements are published packages pinned,
    each imported by the served code, and together they install all it imports."""
    from pix2seqd.platform.serving.log_model import SERVED_PACKAGES

    columns = {"image": ["image"], "video": ["video", "frame"]}
    imported = {canonicalize_name(d) for d in distributions}
    for kind, run_id in runs.items():
        uri = f"runs:/{run_id}/model"
        info = mlflow.models.get_model_info(uri)
        assert info.signature.inputs.input_names() == columns[kind]
        example = mlflow.models.Model.load(uri).load_input_example()
        assert list(example.columns) == columns[kind] and len(example) > 0
        reqs = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text().split()
        names = {canonicalize_name(r.split("==")[0]) for r in reqs}
        assert "pix2seqd" not in names and all("==" in r for r in reqs), reqs
        assert names == {*SERVED_PACKAGES, "mlflow"}
        assert not imported - _installed_by(names), imported - _installed_by(names)
        assert names - {"mlflow"} <= imported, names - imported


def _installed_by(names: set[str]) -> set[str]:
    """The distributions `names` install: them and their dependencies, recursively (as
    this environment has them; no extras)."""
    seen, todo = set(), list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for line in importlib.metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def _decoded(png: bytes | Path) -> np.ndarray:
    with Image.open(png if isinstance(png, Path) else io.BytesIO(png)) as im:
        return np.asarray(im).copy()
