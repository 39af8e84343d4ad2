"""COCO-panoptic reader: JSON loading, category mapping and (class, id) label maps."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pix2seqd.platform.data.coco_panoptic import (
    CategoryMap,
    decode_label_map,
    id_to_rgb,
    load_coco_panoptic,
    rgb_to_id,
)

# Listed out of id order on purpose: classes follow sorted ids (1 -> 1, 3 -> 2, 17 -> 3).
CATEGORIES = [
    {"id": 17, "name": "sky", "isthing": 0, "supercategory": "sky"},
    {"id": 1, "name": "person", "isthing": 1, "supercategory": "person"},
    {"id": 3, "name": "car", "isthing": 1, "supercategory": "vehicle"},
]
SKY_ID, PERSON_ID, CAR_ID = 3_000_000, 5, 70_000  # ids that use all three RGB channels
PNG_IDS = np.array(
    [
        [SKY_ID, SKY_ID, SKY_ID, SKY_ID],
        [PERSON_ID, PERSON_ID, 0, CAR_ID],
        [PERSON_ID, PERSON_ID, 0, CAR_ID],
    ]
)
SEGMENTS = [  # segments_info order fixes the instance ids: sky 1, person 2, car 3
    {"id": SKY_ID, "category_id": 17, "iscrowd": 0, "area": 4, "bbox": [0, 0, 4, 1]},
    {"id": 12, "category_id": 3, "iscrowd": 0, "area": 0, "bbox": [0, 0, 0, 0]},  # no pixels
    {"id": PERSON_ID, "category_id": 1, "iscrowd": 1, "area": 4, "bbox": [0, 1, 2, 2]},
    {"id": CAR_ID, "category_id": 3, "iscrowd": 0, "area": 2, "bbox": [3, 1, 1, 2]},
]


def _write_png(path: Path, ids: np.ndarray) -> None:
    ids = ids.astype(np.uint32)
    Image.fromarray(np.stack([ids & 255, ids >> 8 & 255, ids >> 16], -1).astype(np.uint8)).save(
        path
    )


def make_dataset(
    root: Path, split: str = "val2017", segments=SEGMENTS, png_ids=PNG_IDS, **overrides
):
    """Write a one-image COCO-panoptic set (image id 42); `overrides` replace JSON keys."""
    (root / split).mkdir(parents=True)
    (root / "annotations" / f"panoptic_{split}").mkdir(parents=True)
    (root / split / "000042.jpg").write_bytes(b"")  # the reader does not open images
    _write_png(root / "annotations" / f"panoptic_{split}" / "000042.png", png_ids)
    data = {
        "images": [{"id": 42, "file_name": "000042.jpg", "width": 4, "height": 3}],
        "annotations": [{"image_id": 42, "file_name": "000042.png", "segments_info": segments}],
        "categories": CATEGORIES,
    } | overrides
    (root / "annotations" / f"panoptic_{split}.json").write_text(json.dumps(data))
    return root


def test_categories_map_to_contiguous_classes_in_sorted_id_order():
    cmap = CategoryMap.from_coco(CATEGORIES)
    assert cmap.num_classes == 4
    assert cmap.class_to_category.tolist() == [0, 1, 3, 17]
    assert [cmap.class_of(i) for i in (1, 3, 17)] == [1, 2, 3]
    assert cmap.isthing == (False, True, True, False)
    assert [c["id"] for c in cmap.to_coco()] == [1, 3, 17]
    with pytest.raises(ValueError, match="duplicate category ids"):
        CategoryMap.from_coco(CATEGORIES + CATEGORIES[:1])


def test_load_returns_records_and_categories(tmp_path):
    records, cmap = load_coco_panoptic(make_dataset(tmp_path), "val2017")
    (rec,) = records
    assert (rec.image_id, rec.width, rec.height) == (42, 4, 3)
    assert rec.image_path == tmp_path / "val2017" / "000042.jpg"
    assert rec.png_path == tmp_path / "annotations" / "panoptic_val2017" / "000042.png"
    assert [s.id for s in rec.segments] == [SKY_ID, 12, PERSON_ID, CAR_ID]
    assert rec.segments[2].iscrowd and rec.segments[3].bbox == (3, 1, 1, 2)
    assert cmap.num_classes == 4


def test_decode_gives_classes_and_compact_ids_with_crowd_as_segment(tmp_path):
    records, cmap = load_coco_panoptic(make_dataset(tmp_path), "val2017")
    label = decode_label_map(records[0].png_path, records[0].segments, cmap)
    assert label.dtype == np.int32 and label.shape == (3, 4, 2)
    np.testing.assert_array_equal(label[..., 0], [[3, 3, 3, 3], [1, 1, 0, 2], [1, 1, 0, 2]])
    # Segment 12 has no pixels and takes no id, so ids stay 1..3.
    np.testing.assert_array_equal(label[..., 1], [[1, 1, 1, 1], [2, 2, 0, 3], [2, 2, 0, 3]])


def test_decode_with_crowd_as_void(tmp_path):
    records, cmap = load_coco_panoptic(make_dataset(tmp_path), "val2017")
    label = decode_label_map(records[0].png_path, records[0].segments, cmap, crowd="void")
    np.testing.assert_array_equal(label[..., 0], [[3, 3, 3, 3], [0, 0, 0, 2], [0, 0, 0, 2]])
    np.testing.assert_array_equal(label[..., 1], [[1, 1, 1, 1], [0, 0, 0, 2], [0, 0, 0, 2]])


def test_decode_accepts_bytes_and_arrays_alike(tmp_path):
    records, cmap = load_coco_panoptic(make_dataset(tmp_path), "val2017")
    rec = records[0]
    want = decode_label_map(rec.png_path, rec.segments, cmap)
    rgb = np.asarray(Image.open(rec.png_path))
    for png in (rec.png_path.read_bytes(), rgb, rgb_to_id(rgb)):
        np.testing.assert_array_equal(decode_label_map(png, rec.segments, cmap), want)


def test_png_id_missing_from_json_names_file_and_id(tmp_path):
    make_dataset(tmp_path, segments=[s for s in SEGMENTS if s["id"] != CAR_ID])
    records, cmap = load_coco_panoptic(tmp_path, "val2017")
    with pytest.raises(
        ValueError, match=rf"000042\.png: PNG segment ids \[{CAR_ID}\] are not in segments_info"
    ):
        decode_label_map(records[0].png_path, records[0].segments, cmap)


def test_unknown_category_names_file_and_segment(tmp_path):
    segments = [dict(s, category_id=99) if s["id"] == CAR_ID else s for s in SEGMENTS]
    records, cmap = load_coco_panoptic(make_dataset(tmp_path, segments=segments), "val2017")
    with pytest.raises(
        ValueError, match=rf"000042\.png: segment {CAR_ID} has unknown category_id 99"
    ):
        decode_label_map(records[0].png_path, records[0].segments, cmap)


def test_too_many_segments_for_max_instances(tmp_path):
    records, cmap = load_coco_panoptic(make_dataset(tmp_path), "val2017")
    rec = records[0]
    assert decode_label_map(rec.png_path, rec.segments, cmap, max_instances=4)[..., 1].max() == 3
    with pytest.raises(ValueError, match=r"000042\.png: 3 segments, but max_instances=3 allows 2"):
        decode_label_map(rec.png_path, rec.segments, cmap, max_instances=3)


def test_grayscale_png_is_rejected():
    buf = io.BytesIO()
    Image.fromarray(np.ones((2, 2), np.uint8)).save(buf, format="PNG")
    with pytest.raises(ValueError, match="x.png: panoptic PNG must be RGB or RGBA, got mode L"):
        decode_label_map(buf.getvalue(), [], CategoryMap.from_coco(CATEGORIES), name="x.png")


def test_rgb_id_round_trip():
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 3_000_000, 2**24 - 1]], dtype=np.uint32)
    assert id_to_rgb(ids)[1, 2].tolist() == [
        3_000_000 % 256,
        3_000_000 // 256 % 256,
        3_000_000 // 65536,
    ]
    np.testing.assert_array_equal(rgb_to_id(id_to_rgb(ids)), ids)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"images": [{"id": 42, "file_name": "a.jpg", "width": 4, "height": 3}] * 2},
            "duplicate image id 42",
        ),
        (
            {"images": [{"id": 42, "file_name": "a.jpg", "width": 4}]},
            r"images\[0\] lacks keys \['height'\]",
        ),
        (
            {"annotations": [{"image_id": 8, "file_name": "a.png", "segments_info": []}]},
            "unknown image id 8",
        ),
        (
            {"annotations": [{"image_id": 42, "segments_info": []}]},
            r"annotations\[0\] lacks keys \['file_name'\]",
        ),
        (
            {"annotations": [{"image_id": 42, "file_name": "a.png", "segments_info": [{"id": 1}]}]},
            r"image 42: segments_info\[0\] is malformed",
        ),
        ({"categories": [{"id": 1, "name": "person"}]}, "malformed category entry"),
    ],
)
def test_malformed_json_names_the_file(tmp_path, overrides, message):
    make_dataset(tmp_path, **overrides)
    with pytest.raises(ValueError, match=message) as err:
        load_coco_panoptic(tmp_path, "val2017")
    assert "panoptic_val2017.json" in str(err.value)


def test_missing_files_and_keys_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="panoptic_val2017.json"):
        load_coco_panoptic(tmp_path, "val2017")
    make_dataset(tmp_path)
    (tmp_path / "val2017" / "000042.jpg").unlink()
    (tmp_path / "val2017").rmdir()
    with pytest.raises(FileNotFoundError, match="folder not found: .*val2017"):
        load_coco_panoptic(tmp_path, "val2017")
    (tmp_path / "annotations" / "panoptic_val2017.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match=r"missing top-level keys \['annotations', 'categories'\]"):
        load_coco_panoptic(tmp_path, "val2017")
