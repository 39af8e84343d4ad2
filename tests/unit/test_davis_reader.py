"""DAVIS 2017 layout reader: split files, frame/annotation pairing, palette ids, void."""

import numpy as np
import pytest
from PIL import Image

from pix2seqd.platform.data.davis import davis_label_map, load_davis, read_davis_mask
from pix2seqd.platform.synthetic.davis import make_davis


@pytest.fixture()
def davis(tmp_path):
    make_davis(tmp_path, seed=0, n_train=2, n_val=2)
    return tmp_path


def test_records_pair_frames_and_annotations_in_time_order(davis):
    recs = load_davis(davis, "val")
    names = (davis / "ImageSets" / "2017" / "val.txt").read_text().split()
    assert [r.name for r in recs] == names
    for rec in recs:
        assert len(rec.frames) == len(rec.masks) >= 2
        assert (
            [f.stem for f in rec.frames]
            == [m.stem for m in rec.masks]
            == sorted(f.stem for f in rec.frames)
        )
        ids = read_davis_mask(rec.masks[0])
        with Image.open(rec.frames[0]) as im:
            assert ids.shape == (im.height, im.width)
        present = sorted(set(np.unique(ids).tolist()) - {0})
        assert present == list(range(1, len(present) + 1))  # ids 1..k in the first frame


def test_label_map_class_zero_void_255_to_id_0():
    ids = np.array([[0, 1, 255], [2, 2, 0]], np.uint8)
    label = davis_label_map(ids, 16)
    np.testing.assert_array_equal(label[..., 0], 0)
    np.testing.assert_array_equal(label[..., 1], [[0, 1, 0], [2, 2, 0]])
    with pytest.raises(ValueError, match="seq/00003.*max_instances=2"):
        davis_label_map(ids, 2, "seq/00003")


def test_missing_annotation_names_sequence_and_frame(davis):
    rec = load_davis(davis, "train")[0]
    rec.masks[1].unlink()
    with pytest.raises(
        ValueError, match=rf"{rec.name}.*without annotation \['{rec.frames[1].stem}'\]"
    ):
        load_davis(davis, "train")


def test_missing_split_or_sequence_folder_is_named(davis):
    with pytest.raises(FileNotFoundError, match="test.txt"):
        load_davis(davis, "test")
    name = load_davis(davis, "val")[0].name
    (davis / "JPEGImages" / "480p" / name).rename(davis / "moved")
    with pytest.raises(FileNotFoundError, match=name):
        load_davis(davis, "val")


def test_rgb_annotation_is_rejected(tmp_path):
    path = tmp_path / "00000.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    with pytest.raises(ValueError, match="palette"):
        read_davis_mask(path)
