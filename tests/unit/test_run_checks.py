"""Run-level checks that must fail early with a message naming the field or file."""

from __future__ import annotations

import json

import pytest

from pix2seqd.platform.config import override
from pix2seqd.platform.presets import tiny
from pix2seqd.platform.synthetic.coco import make_coco
from pix2seqd.platform.train.checkpoints import checkpoint_uri, fetched
from pix2seqd.platform.train.inputs import load_splits
from pix2seqd.platform.train.run import validate_training_config


@pytest.mark.parametrize(
    "updates, match",
    [
        ({"train.batch_size": 15}, "train.batch_size=15"),
        ({"train.batch_size": 1}, "train.batch_size=1"),
        ({"train.log_every": 0}, "train.log_every"),
        ({"train.checkpoint_every": 0}, "train.checkpoint_every"),
        ({"data.crowd": "ignore"}, "data.crowd"),
        ({"data.image_size": 72}, "data.image_size=72"),
        ({"data.dataset": "davis"}, "data.dataset='davis'"),
        ({"data.dataset": "kitti"}, "data.dataset"),
    ],
)
def test_bad_training_settings_are_rejected(updates, match):
    with pytest.raises(ValueError, match=match):
        validate_training_config(override(tiny(), updates))


def test_default_preset_is_valid():
    validate_training_config(tiny())


def test_split_checks_name_the_file(tmp_path):
    make_coco(tmp_path, seed=0, n_train=2, n_val=1, min_size=32, max_size=40)
    cfg = tiny()
    train, val, cmap = load_splits(tmp_path, cfg)
    assert len(train) == 2 and len(val) == 1 and cmap.num_classes == 8
    path = tmp_path / "annotations" / "panoptic_val2017.json"
    data = json.loads(path.read_text())
    data["categories"] = data["categories"][:-1]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="different categories"):
        load_splits(tmp_path, cfg)
    data["annotations"], data["images"] = [], []
    data["categories"] = json.loads(
        (tmp_path / "annotations" / "panoptic_train2017.json").read_text()
    )["categories"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="panoptic_val2017.json lists no annotated image"):
        load_splits(tmp_path, cfg)


def test_checkpoint_references():
    assert checkpoint_uri("/a/b/checkpoint_1", "/a") == "/a/b/checkpoint_1"
    assert (
        checkpoint_uri("bucket/runs/checkpoint_1", "s3://bucket/runs")
        == "s3://bucket/runs/checkpoint_1"
    )
    assert (
        checkpoint_uri("bucket/r/c", "s3://bucket/r?endpoint_override=localhost:9000")
        == "s3://bucket/r/c?endpoint_override=localhost:9000"
    )
    assert checkpoint_uri("/x/c", "file:///x") == "/x/c"
    with pytest.raises(FileNotFoundError, match="no checkpoint.pt"):
        with fetched("/nonexistent/dir"):
            pass
