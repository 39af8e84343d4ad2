"""prepare_data: Parquet shards that hold exactly the raw layout's bytes, give the same
training stream, validate every record, and write the validation report even on failure."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers_bad_data import corrupt, first_image_id
from helpers_ckpt import tiny_at_64

from pix2seqd.platform.data import prepared
from pix2seqd.platform.data.coco_panoptic import load_coco_panoptic, record_item
from pix2seqd.platform.data.pipeline import TrainDecoder
from pix2seqd.platform.data.prepare import prepare_dataset
from pix2seqd.platform.data.size_report import Geometry
from pix2seqd.platform.synthetic.coco import make_coco

pytestmark = pytest.mark.ray


@pytest.fixture()
def coco(tmp_path):
    return make_coco(tmp_path / "coco", seed=5, n_train=6, n_val=2, min_size=32, max_size=40)


def _prepare(coco, out, **kw):
    return prepare_dataset("coco", coco, str(out), rows_per_shard=4, max_instances=8, **kw)


def test_shards_hold_the_raw_bytes_one_row_group_per_record(ray_session, coco, tmp_path):
    out = tmp_path / "prep"
    report = _prepare(coco, out, geometry=Geometry(None, 4, 32))
    assert (
        report["splits"]["train2017"]["n_records"] == 6
        and report["splits"]["train2017"]["n_bad"] == 0
    )
    # the splits' size reports, at the canvas auto chose from the first split
    sizes = report["sizes"]
    assert set(sizes) == {"train2017", "val2017"} and sizes["val2017"]["canvas"] == [64, 64]
    assert sizes["train2017"]["images"] == 6 and sizes["train2017"]["warning"] == ""
    assert json.loads((out / "validation_report.json").read_text()) == report
    shards = sorted(p.name for p in (out / "train2017").glob("*.parquet"))
    assert shards == ["shard-00000.parquet", "shard-00001.parquet"]
    assert pq.ParquetFile(out / "train2017" / shards[0]).metadata.num_row_groups == 4
    rows, cmap, index = prepared.load_prepared(str(out), "train2017")
    recs, raw_cmap = load_coco_panoptic(coco, "train2017")
    assert cmap.to_coco() == raw_cmap.to_coco()
    assert [r["image_id"] for r in rows] == [r.image_id for r in recs]
    for row, rec in zip(rows, recs):
        data = prepared.read_row(row["shard"], row["row"])
        assert data["image"] == rec.image_path.read_bytes()
        assert data["png"] == rec.png_path.read_bytes()


def test_prepared_and_raw_give_the_same_training_batches(ray_session, coco, tmp_path):
    out = tmp_path / "prep"
    _prepare(coco, out)
    rows, cmap, _ = prepared.load_prepared(str(out), "train2017")
    recs, raw_cmap = load_coco_panoptic(coco, "train2017")
    cfg = tiny_at_64()
    ids = {"id": np.arange(10)}
    a = TrainDecoder(cfg, cmap, rows, rank=1, world=2)(ids)
    b = TrainDecoder(cfg, raw_cmap, [record_item(r) for r in recs], rank=1, world=2)(ids)
    for key in ("image", "hw", "mask"):
        assert np.array_equal(a[key], b[key])


def test_materialize_writes_the_coco_layout_back(ray_session, coco, tmp_path):
    out = tmp_path / "prep"
    _prepare(coco, out)
    back = prepared.materialize(str(out), "val2017", tmp_path / "back")
    original = json.loads((coco / "annotations" / "panoptic_val2017.json").read_text())
    copy = json.loads((back / "annotations" / "panoptic_val2017.json").read_text())
    assert copy["categories"] == [
        {k: c[k] for k in ("id", "name", "isthing")} for c in original["categories"]
    ]
    assert [a["segments_info"] for a in copy["annotations"]] == [
        a["segments_info"] for a in original["annotations"]
    ]
    for ann in original["annotations"]:
        name = ann["file_name"]
        assert (back / "annotations" / "panoptic_val2017" / name).read_bytes() == (
            coco / "annotations" / "panoptic_val2017" / name
        ).read_bytes()


def test_bad_record_stops_with_the_report_written(ray_session, coco, tmp_path):
    out = tmp_path / "prep"
    name, phrase = corrupt(coco, "json_segment_not_in_png")
    with pytest.raises(ValueError, match="1 of 6 records of split 'train2017' are bad") as err:
        _prepare(coco, out)
    assert name in str(err.value) and phrase in str(err.value)
    report = json.loads((out / "validation_report.json").read_text())
    assert report["splits"]["train2017"]["n_bad"] == 1
    assert not (out / "train2017" / "_index.json").exists()  # incomplete split: not trainable
    assert (out / "val2017" / "_index.json").exists()
    with pytest.raises(FileNotFoundError, match="_index.json"):
        prepared.load_prepared(str(out), "train2017")


def test_skip_bad_leaves_the_record_out_and_counts_it(ray_session, coco, tmp_path):
    out = tmp_path / "prep"
    corrupt(coco, "truncated_jpeg")
    report = _prepare(coco, out, skip_bad=True)
    train = report["splits"]["train2017"]
    assert train["n_bad"] == 1 and train["bad"][0]["image_id"] == str(first_image_id(coco))
    rows, _, _ = prepared.load_prepared(str(out), "train2017")
    assert len(rows) == 5 and first_image_id(coco) not in [r["image_id"] for r in rows]
