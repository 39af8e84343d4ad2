"""The data's size report and `data.image_size=auto` (platform/data/size_report.py), on
hand-built COCO-panoptic annotation files whose numbers are worked out below by hand."""

from __future__ import annotations

import json
import logging

import pytest

from pix2seqd.platform.config import AutoSize, Config, flatten, override
from pix2seqd.platform.data import size_report as sr
from pix2seqd.platform.data.coco_panoptic import load_coco_panoptic
from pix2seqd.platform.presets import as_video, tiny
from pix2seqd.platform.train.driver import validate_common

CATEGORIES = [
    {"id": 1, "name": "thing", "isthing": 1},
    {"id": 7, "name": "stuff", "isthing": 0},
]


def _annotation_file(tmp_path, images):
    """images: [(h, w, [(category_id, area, iscrowd), ...]), ...] -> a COCO-panoptic root."""
    (tmp_path / "val2017").mkdir(parents=True)
    (tmp_path / "annotations" / "panoptic_val2017").mkdir(parents=True)
    data = {"categories": CATEGORIES, "images": [], "annotations": []}
    for k, (h, w, segs) in enumerate(images, start=1):
        data["images"].append({"id": k, "file_name": f"{k}.jpg", "height": h, "width": w})
        data["annotations"].append(
            {
                "image_id": k,
                "file_name": f"{k}.png",
                "segments_info": [
                    {"id": j + 1, "category_id": c, "area": a, "iscrowd": crowd}
                    for j, (c, a, crowd) in enumerate(segs)
                ],
            }
        )
    (tmp_path / "annotations" / "panoptic_val2017.json").write_text(json.dumps(data))
    return load_coco_panoptic(tmp_path, "val2017")


def _two_images(tmp_path):
    # image 1: 100 x 200, fitted to a 64 canvas with r = min(64/100, 64/200) = 0.32, at
    # stride 4 a pixel is 0.32² / 16 = 0.0064 mask px. Image 2: 50 x 50, r = 1.28, 0.1024.
    return _annotation_file(
        tmp_path,
        [
            (100, 200, [(1, 500, 0), (1, 1000, 0), (1, 10_000, 1), (7, 5000, 0)]),
            (50, 50, [(1, 100, 0), (1, 400, 0), (7, 1000, 0)]),
        ],
    )


def test_the_report_of_a_hand_built_annotation_file(tmp_path):
    records, cmap = _two_images(tmp_path)
    sizes = sr.segment_sizes(records, cmap)
    report = sr.size_report(sizes, (64, 64), 4)
    # things 3.2, 6.4 (image 1; its crowd left out), 10.24, 40.96 (image 2); numpy's linear
    # quantiles: p25 at index 0.75 = 3.2 + 0.75 * 3.2, p50 halfway between 6.4 and 10.24
    assert report["things"] == 4 and report["stuff"] == 2 and report["images"] == 2
    assert report["thing_mask_px"]["p25"] == pytest.approx(5.6)
    assert report["thing_mask_px"]["p50"] == pytest.approx(8.32)
    assert report["stuff_mask_px"]["p50"] == pytest.approx((32.0 + 102.4) / 2)
    assert report["things_under_4px"] == 0.25  # 3.2 of the four
    assert report["image_height"]["p50"] == 75.0 and report["image_width"]["p95"] == 192.5
    assert report["image_aspect"]["p50"] == pytest.approx(1.5)  # aspects 2 and 1
    assert sr.report_metrics(report) == {
        "data/things_under_4px": 0.25,
        "data/thing_mask_px_p25": pytest.approx(5.6),
        "data/thing_mask_px_p50": pytest.approx(8.32),
        "data/stuff_mask_px_p50": pytest.approx(67.2),
        "data/image_height_p50": 75.0,
        "data/image_width_p50": 125.0,
    }
    assert "25.0 % under 4 px" in "\n".join(sr.report_lines(report))


def test_auto_picks_the_smallest_canvas_for_the_median_thing(tmp_path):
    records, cmap = _two_images(tmp_path)
    sizes = sr.segment_sizes(records, cmap)
    # the median thing grows with the canvas squared: 8.32 px at 64, 8.32 * (96/64)² = 18.72
    # at 96 (>= 12), and 96 is the first multiple of 32 past 64 * sqrt(12 / 8.32) = 76.9
    assert sr.fitting_canvas(sizes, 4, 32) == 96 and sr.auto_canvas(sizes, 4, 32) == 96
    assert sr.auto_canvas(sizes, 4, 64) == 128  # a model whose sizes are multiples of 64
    assert sr.size_report(sizes, (96, 96), 4)["thing_mask_px"]["p50"] == pytest.approx(18.72)


def test_auto_stays_within_its_bounds(tmp_path):
    # 1600 px on a 64 x 64 image: 25 mask px at canvas 32 already, but auto's least is 64
    large = sr.segment_sizes(*_annotation_file(tmp_path / "a", [(64, 64, [(1, 1600, 0)])]))
    assert sr.fitting_canvas(large, 4, 32) == 32 and sr.auto_canvas(large, 4, 32) == 64
    tiny_things = [(1000, 1000, [(1, 100, 0), (1, 100, 0), (7, 900_000, 0)])]
    small = sr.segment_sizes(*_annotation_file(tmp_path / "b", tiny_things))
    # at 256: 100 * 0.256² / 16 = 0.41 px; 12 px need 4 * 1000 * sqrt(12 / 100) = 1385.6,
    # so 1408 (past the bound)
    assert sr.fitting_canvas(small, 4, 32) == 1408 and sr.auto_canvas(small, 4, 32) == 256
    none = sr.segment_sizes(*_annotation_file(tmp_path / "c", [(64, 64, [(7, 4096, 0)])]))
    assert sr.fitting_canvas(none, 4, 32) is None and sr.auto_canvas(none, 4, 32) == 64


def test_the_warning_names_a_canvas_that_fits(tmp_path, caplog):
    records, cmap = _two_images(tmp_path)
    sizes = sr.segment_sizes(records, cmap)
    with caplog.at_level(logging.WARNING, logger="pix2seqd.platform.data.size_report"):
        text = sr.warn_small_things(sr.size_report(sizes, (64, 64), 4), sizes, 32)
    assert "25 % of the things cover fewer than 4 mask pixels at canvas 64x64" in text
    assert "data.image_size=96" in text and caplog.records[-1].getMessage() == text
    # at 96 no thing is under 4 px (7.2 the smallest): no warning
    assert sr.warn_small_things(sr.size_report(sizes, (96, 96), 4), sizes, 32) == ""
    below = sr.segment_sizes(
        *_annotation_file(tmp_path / "d", [(64, 64, [(1, 48, 0), (1, 400, 0), (1, 400, 0)])])
    )  # one of three things (0.33) at 3 px: over the 0.25 share
    assert sr.warn_small_things(sr.size_report(below, (64, 64), 4), below, 32)


def test_image_size_auto_as_a_config_value():
    cfg = override(Config(), {"data.image_size": "auto"})
    assert cfg.data.image_size is AutoSize.AUTO and flatten(cfg)["data.image_size"] == "auto"
    with pytest.raises(ValueError, match="data.image_size=auto is decided when a training job"):
        _ = cfg.data.image_hw
    assert override(cfg, {"data.image_size": "128"}).data.image_hw == (128, 128)
    with pytest.raises(ValueError, match="data.image_size"):
        override(cfg, {"data.image_size": "large"})
    validate_common(tiny())  # auto passes the canvas checks
    with pytest.raises(ValueError, match="square canvas; data.image_width=96"):
        validate_common(override(tiny(), {"data.image_width": 96}))
    assert tiny().data.image_size is AutoSize.AUTO and as_video(tiny()).data.image_size == 64


def test_the_image_task_decides_an_auto_canvas_from_its_training_sizes(tmp_path):
    from pix2seqd.platform.train.image_task import ImageTask
    from pix2seqd.platform.train.inputs import TrainInputs

    records, cmap = _two_images(tmp_path)
    inputs = TrainInputs([], records, cmap, (tmp_path, tmp_path), str(tmp_path), {}, {},
                         sr.segment_sizes(records, cmap))  # fmt: skip
    cfg = override(tiny(), {"data.root": str(tmp_path)})
    resolved = ImageTask(inputs, auto_size=True).resolved(cfg)
    assert resolved.data.image_hw == (96, 96) and resolved.model.num_classes == 3
    fixed = override(cfg, {"data.image_size": 128})
    assert ImageTask(inputs).resolved(fixed).data.image_hw == (128, 128)  # kept, only warned
    # a tool without a training job decides it the same way from data.root's train split
    (tmp_path / "annotations" / "panoptic_val2017.json").rename(
        tmp_path / "annotations" / "panoptic_train2017.json"
    )
    (tmp_path / "train2017").mkdir()
    (tmp_path / "annotations" / "panoptic_val2017").rename(
        tmp_path / "annotations" / "panoptic_train2017"
    )
    assert sr.with_canvas(cfg).data.image_size == 96
    assert sr.with_canvas(fixed) is fixed
