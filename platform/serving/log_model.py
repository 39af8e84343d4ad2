"""Logging a checkpoint as the served MLflow model (docs/serving.md): a pyfunc model whose
artifact is the checkpoint's inference state and whose code is this package's own source,
so that the server needs only published packages.

What is logged, under the active run:
- artifact `checkpoint`: a `checkpoint.pt` with the EMA weights, the config and the metadata
  (no optimizer, no raw weights); an image model's categories are filled in as
  `jobs/predict.py` reads them (`checkpoint_categories`), so the server never guesses;
- code: `models/` and `platform/` copied as the package `pix2seqd`;
- requirements: `SERVED_PACKAGES` pinned to the versions installed here (MLflow adds
  itself), never `pix2seqd`: that name is nobody's published package;
- the model: `model_code.py` (MLflow's models from code: no pickle), with the signature
  and input example of the checkpoint's segmenter, and the categories as metadata.
MLflow checks the input example by predicting it once while logging."""

from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
from pathlib import Path

import mlflow.pyfunc
from mlflow.models.model import ModelInfo

import pix2seqd.models
import pix2seqd.platform
from pix2seqd.platform.config import Config, from_flat
from pix2seqd.platform.evaluation.predict_job import checkpoint_categories
from pix2seqd.platform.serving.model import CHECKPOINT_ARTIFACT, VideoSegmenter, segmenter_class
from pix2seqd.platform.train import checkpoints

# The third-party distributions the served code imports (models/, the inference path of
# platform/, this package's model module); MLflow, which serves it, adds itself.
SERVED_PACKAGES = ("torch", "numpy", "pillow", "pandas", "pyarrow", "scipy")
# read by MLflow as a file, not imported here: importing it registers its model with MLflow
MODEL_CODE = Path(__file__).with_name("model_code.py")


def log_served_model(checkpoint: str, name: str = "model") -> ModelInfo:
    """Log the checkpoint `checkpoint` (a CKPT reference) as the pyfunc model `name` of the
    active MLflow run; an image or a video model by the checkpoint's config."""
    with tempfile.TemporaryDirectory(prefix="pix2seqd-served-") as tmp:
        folder, cfg, categories = inference_checkpoint(checkpoint, Path(tmp) / "checkpoint")
        segmenter = segmenter_class(cfg)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(MODEL_CODE),
            artifacts={CHECKPOINT_ARTIFACT: str(folder)},
            code_paths=[str(package_source(Path(tmp) / "code"))],
            signature=segmenter.signature(),
            input_example=segmenter.input_example(),
            pip_requirements=served_requirements(),
            metadata={"categories": categories} if categories else None,
        )


def inference_checkpoint(checkpoint: str, folder: Path) -> tuple[Path, Config, list[dict]]:
    """Write the inference state of `checkpoint` to `folder`/checkpoint.pt; returns (folder,
    its config, the categories written: an image model's, none for a video model)."""
    with checkpoints.inference_state(checkpoint) as snap:
        cfg = from_flat(snap["config"])
        video = segmenter_class(cfg) is VideoSegmenter
        categories = [] if video else checkpoint_categories(cfg, snap).to_coco()
        checkpoints.save(folder, {**snap, "categories": categories})
    return folder, cfg, categories


def package_source(out: Path) -> Path:
    """`models/` and `platform/` of the installed package copied to `out`/pix2seqd (without
    compiled files): the code MLflow ships with the model and puts on sys.path."""
    package = out / "pix2seqd"
    for top in (pix2seqd.models, pix2seqd.platform):
        source = Path(next(iter(top.__path__)))
        shutil.copytree(
            source,
            package / top.__name__.rpartition(".")[2],
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    return package


def served_requirements() -> list[str]:
    """`SERVED_PACKAGES` pinned to the installed versions, without a local version label
    (torch's `+cpu`): the index the server installs from chooses the CPU or CUDA build."""
    return [f"{name}=={importlib.metadata.version(name).split('+')[0]}" for name in SERVED_PACKAGES]
