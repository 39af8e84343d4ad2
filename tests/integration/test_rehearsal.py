"""jobs/rehearse.py --small: the paper's chain of stages, each through its public job in a
process of its own, checkpoints in a local S3-compatible server (moto), runs on a real MLflow
server; every hand-off loads what the previous stage trained and starts the rest fresh."""

from __future__ import annotations

import json

import mlflow.tracking
import pytest
import torch
from helpers_jobs import load_job

from pix2seqd.models.resnet import ResNetC4
from pix2seqd.platform.config import override
from pix2seqd.platform.presets import get_preset
from pix2seqd.platform.rehearsal import SMALL
from pix2seqd.platform.train.step import build_model

pytestmark = [pytest.mark.cluster, pytest.mark.drill, pytest.mark.timeout(1500)]

STAGES = ["decoder_pretrain", "coco_lowres", "coco_highres", "cityscapes", "davis"]


def _keys(preset: str, **sets) -> list[str]:
    with torch.device("meta"):
        return list(build_model(override(get_preset(preset), {**SMALL, **sets})).state_dict())


def test_small_rehearsal_hands_each_stage_on(s3_server, mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    out = tmp_path / "r.json"
    args = ["--small", "--storage-path", f"{s3_server}/rehearsal", "--summary-json", str(out)]
    summary = load_job("rehearse").main(args + ["--workdir", str(tmp_path / "w")])
    assert json.loads(out.read_text()) == summary
    rows = {r["stage"]: r for r in summary["stages"]}
    assert [r["stage"] for r in summary["stages"]] == STAGES
    for name, source in (("coco_lowres", "decoder_pretrain"), ("coco_highres", "coco_lowres")):
        assert rows[name]["init_from"] == f"runs:/{rows[source]['mlflow_run_id']}"
    assert rows["davis"]["init_from"] == rows["cityscapes"]["init_from"]

    # the pre-training starts from the ResNet file only: its backbone, nothing else
    backbone = len(ResNetC4((3, 4, 6), SMALL["model.encoder.width"]).state_dict())
    pre_keys = _keys("decoder_pretrain")
    assert (rows["decoder_pretrain"]["loaded_keys"], rows["decoder_pretrain"]["fresh_keys"]) == (
        backbone,
        len(pre_keys) - backbone,
    )
    # the conditional stage: backbone (file) + decoder (pre-training); cross-attention and
    # the rest of the encoder fresh
    low = _keys("coco_lowres")
    cross = [k for k in low if ".cross_attn." in k or ".ln_cross." in k]
    decoder = [k for k in low if k.startswith("decoder.") and k not in cross]
    assert rows["coco_lowres"]["loaded_keys"] == backbone + len(decoder)
    assert rows["coco_lowres"]["fresh_keys"] == len(low) - backbone - len(decoder) > len(cross)
    # later stages carry everything over (davis: its conv_in adapted to the history)
    for name in ("coco_highres", "cityscapes", "davis"):
        assert rows[name]["fresh_keys"] == 0, name
    assert rows["davis"]["loaded_keys"] == len(_keys("davis"))

    mlc = mlflow.tracking.MlflowClient(mlflow_server)
    for row in rows.values():
        assert mlc.get_run(row["mlflow_run_id"]).info.status == "FINISHED"
        assert row["checkpoint"].startswith(f"{s3_server}/rehearsal/")
        assert row["checkpoint_mb"] > 0 and row["seconds"] > 0
        assert all(0.0 <= v <= 1.0 for v in row["metrics"].values()), row
    assert set(rows["davis"]["metrics"]) == {"J&F-Mean", "J-Mean", "F-Mean"}
    assert set(rows["cityscapes"]["metrics"]) >= {"pq", "pq_th", "pq_st"}
    lowres = mlc.get_run(rows["coco_lowres"]["mlflow_run_id"]).data
    assert lowres.params["model.encoder.input_norm"] == "imagenet"
    assert "cross_attn" in lowres.tags["init/fresh"]
