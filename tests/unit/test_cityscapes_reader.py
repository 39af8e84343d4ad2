"""Cityscapes panoptic layout (cityscapesscripts' createPanopticImgs.py output): records,
label ids -> contiguous classes, instance ids for things and stuff, crowd, string image ids."""

import numpy as np
import pytest
from helpers_ckpt import tiny_at_64
from PIL import Image

from pix2seqd.platform.data.coco_panoptic import (
    decode_label_map,
    load_cityscapes_panoptic,
    read_id_png,
    record_item,
)
from pix2seqd.platform.data.pipeline import TrainDecoder, image_seed
from pix2seqd.platform.synthetic.cityscapes import make_cityscapes


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    make_cityscapes(root, seed=3, n_train=40, n_val=3, min_size=48, max_size=64)
    return root


def test_records_point_at_city_folders_and_panoptic_pngs(cityscapes):
    recs, cmap = load_cityscapes_panoptic(cityscapes, "val")
    assert len(recs) == 3 and cmap.num_classes == 20  # 19 evaluated labels + void
    for rec in recs:
        city = rec.image_id.split("_")[0]
        assert (
            rec.image_path
            == cityscapes / "leftImg8bit" / "val" / city / f"{rec.image_id}_leftImg8bit.png"
        )
        assert (
            rec.png_path
            == cityscapes
            / "gtFine"
            / "cityscapes_panoptic_val"
            / f"{rec.image_id}_gtFine_panoptic.png"
        )
        assert rec.image_path.is_file() and rec.png_path.is_file()
        with Image.open(rec.image_path) as im:
            assert im.size == (rec.width, rec.height)


def test_label_ids_become_classes_and_every_segment_an_instance(cityscapes):
    recs, cmap = load_cityscapes_panoptic(cityscapes, "train")
    for rec in recs:
        label = decode_label_map(rec.png_path, rec.segments, cmap)
        ids = read_id_png(rec.png_path)
        for seg in rec.segments:
            mask = ids == seg.id
            classes, inst = label[..., 0][mask], label[..., 1][mask]
            assert (classes == cmap.class_of(seg.category_id)).all()
            assert len(np.unique(inst)) == 1 and inst[0] > 0  # stuff gets an id too
        assert ((ids == 0) == (label[..., 0] == 0)).all()  # VOID stays void


def test_crowd_is_a_segment_by_default_and_void_on_request(cityscapes):
    recs, cmap = load_cityscapes_panoptic(cityscapes, "train")
    crowded = [r for r in recs if any(s.iscrowd for s in r.segments)]
    assert crowded, "the generator makes crowds"
    rec = crowded[0]
    crowd = next(s for s in rec.segments if s.iscrowd)
    ids = read_id_png(rec.png_path)
    assert (decode_label_map(rec.png_path, rec.segments, cmap)[..., 1][ids == crowd.id] > 0).all()
    void = decode_label_map(rec.png_path, rec.segments, cmap, crowd="void")
    assert (void[ids == crowd.id] == 0).all()


def test_string_image_ids_train_deterministically(cityscapes):
    recs, cmap = load_cityscapes_panoptic(cityscapes, "train")
    assert (
        image_seed(recs[0].image_id)
        == image_seed(str(recs[0].image_id))
        != image_seed(recs[1].image_id)
    )
    assert image_seed(7) == 7
    decoder = TrainDecoder(tiny_at_64(), cmap)
    one = decoder.example(record_item(recs[0], epoch=1), (16, 16))
    two = decoder.example(record_item(recs[0], epoch=1), (16, 16))
    assert np.array_equal(one.mask, two.mask) and np.array_equal(one.image, two.image)


def test_missing_cityscapes_folder_is_named(tmp_path):
    make_cityscapes(tmp_path, seed=0, n_train=1, n_val=1)
    (tmp_path / "leftImg8bit" / "val").rename(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="leftImg8bit/val"):
        load_cityscapes_panoptic(tmp_path, "val")
