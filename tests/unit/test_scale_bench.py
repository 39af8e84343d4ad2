"""benchmark.py scale: the linked COCO-train-sized set, the per-record rates, the sampler."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pix2seqd.platform.benchmarks.scale_bench import (
    Phase,
    PhaseJob,
    annotation_phase,
    descendants,
    with_rates,
)
from pix2seqd.platform.benchmarks.scale_data import (
    MAX_SEGMENTS,
    pool_segment_counts,
    write_scale_set,
)
from pix2seqd.platform.data.coco_panoptic import CategoryMap, parse_segments
from pix2seqd.platform.data.validate import check_example
from pix2seqd.platform.presets import get_preset


def png_ids(path: Path) -> set[int]:
    """Segment ids of an id PNG, decoded here (R + 256 G + 65536 B), void left out."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    return set(np.unique(ids).tolist()) - {0}


@pytest.fixture(scope="module")
def linked_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale") / "coco"
    return write_scale_set(root, 50, pool=7, val_records=3)


def test_linked_set_counts_and_links(linked_set):
    root = linked_set.root
    data = json.loads((root / "annotations" / "panoptic_train2017.json").read_text())
    assert len(data["images"]) == len(data["annotations"]) == 50 == linked_set.records
    assert [im["id"] for im in data["images"]] == list(range(1, 51))
    assert len(data["categories"]) == 133  # COCO panoptic's categories
    for k, ann in enumerate(data["annotations"]):
        jpg = root / "train2017" / f"{ann['image_id']:012d}.jpg"
        png = root / "annotations" / "panoptic_train2017" / ann["file_name"]
        assert jpg.is_symlink() and png.is_symlink()
        # record k links pool image k mod 7
        assert jpg.resolve() == (root / "pool" / "images" / f"pool-{k % 7:04d}.jpg").resolve()
        assert png.resolve() == (root / "pool" / "panoptic" / f"pool-{k % 7:04d}.png").resolve()
    val = json.loads((root / "annotations" / "panoptic_val2017.json").read_text())
    assert [im["id"] for im in val["images"]] == [1_000_001, 1_000_002, 1_000_003]


def test_linked_set_segments_match_the_linked_pngs(linked_set):
    root = linked_set.root
    data = json.loads((root / "annotations" / "panoptic_train2017.json").read_text())
    sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    for ann in data["annotations"]:
        png = root / "annotations" / "panoptic_train2017" / ann["file_name"]
        assert {s["id"] for s in ann["segments_info"]} == png_ids(png)
        assert Image.open(png).size[::-1] == sizes[ann["image_id"]]
    pool_counts = [len(png_ids(root / "pool" / "panoptic" / f"pool-{k:04d}.png")) for k in range(7)]
    # 7 x 860,001 / 118,287 = 50.89 segments in the pool; 50 records = 7 cycles + pool[0]
    assert sum(pool_counts) == 51
    total = sum(len(a["segments_info"]) for a in data["annotations"])
    assert total == linked_set.segments == 7 * 51 + pool_counts[0]


def test_linked_set_passes_the_project_validation(linked_set):
    root = linked_set.root
    data = json.loads((root / "annotations" / "panoptic_train2017.json").read_text())
    cmap = CategoryMap.from_coco(data["categories"])
    for k in range(7):  # the 7 distinct pool images
        ann, im = data["annotations"][k], data["images"][k]
        problem, _ = check_example(
            (root / "train2017" / im["file_name"]).read_bytes(),
            (root / "annotations" / "panoptic_train2017" / ann["file_name"]).read_bytes(),
            parse_segments(ann["segments_info"], "test"),
            (im["height"], im["width"]),
            cmap,
            "segment",
            ("jpg", "png"),
        )
        assert problem == ""


def test_a_second_set_in_the_same_folder_is_refused(linked_set):
    with pytest.raises(FileExistsError, match="already there"):
        write_scale_set(linked_set.root, 5, pool=2)
    with pytest.raises(ValueError, match="must be >= 1"):
        write_scale_set(linked_set.root.parent / "other", 0)


def test_pool_counts_have_coco_trains_total():
    counts = pool_segment_counts(118_287, np.random.default_rng(0))
    assert counts.sum() == 860_001  # COCO train 2017 panoptic's segment count
    assert counts.min() >= 1 and counts.max() <= MAX_SEGMENTS
    assert pool_segment_counts(200, np.random.default_rng(1)).sum() == 1454  # 200 x 7.2706


def test_rates_from_hand_made_figures():
    result = {
        "records": 1000,
        "cores": 2,
        "annotation": {"records_mb": 2.0, "rows_mb": 1.0},
        "raw_stream": {"cpu_s": 105.0},
        "prepare": {"images": 1050, "prepare_s": 50.0, "cpu_s": 84.0},
    }
    out = with_rates(result, val_records=50)
    assert out["annotation"]["records_bytes_per_record"] == 2097  # 2 MiB / 1000
    assert out["annotation"]["rows_bytes_per_record"] == 1049
    assert out["raw_stream"]["cpu_ms_per_record"] == pytest.approx(100.0)  # 105 s / 1050
    assert out["prepare"]["img_s"] == pytest.approx(21.0)
    assert out["prepare"]["img_s_per_core"] == pytest.approx(10.5)
    assert out["prepare"]["cpu_ms_per_image"] == pytest.approx(80.0)


def test_descendants_include_a_child_process():
    child = subprocess.Popen(["sleep", "30"])
    try:
        found = descendants(os.getpid())
        assert os.getpid() in found and child.pid in found
        rss, cpu = found[child.pid]
        assert rss > 0 and cpu >= 0
    finally:
        child.kill()
        child.wait()


def test_annotation_phase_keys(linked_set, tmp_path):
    # in this process: the benchmark runs it in a spawned one, whose imports take seconds
    job = PhaseJob(Phase.ANNOTATION, get_preset("tiny"), linked_set.root, tmp_path, 500, 20)
    a = annotation_phase(job)
    assert a["records_in_split"] == 50
    for key in ("json_loads_s", "parse_s", "rows_s", "rows_unpickle_s", "driver_hwm_mb"):
        assert a[key] > 0
    # 50 records with their 7.3 segments each hold kilobytes, not megabytes
    assert 0 < a["records_mb"] < a["parse_peak_mb"] < 5
    assert 0 < a["rows_mb"] < 1 and 0 < a["rows_pickle_mb"] < 1
