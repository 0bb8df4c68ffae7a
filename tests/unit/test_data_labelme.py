"""labelme JSON conversion to VOC and COCO, read back through gluondet's own readers."""
import json
import shutil

import numpy as np
import pytest

from data_helpers import FIXTURES, voc_config, write_image
from gluondet.config import resolve_dataset
from gluondet.data import load_dataset
from gluondet.data.convert import convert_dataset
from gluondet.errors import GluondetError


@pytest.fixture
def src(tmp_path):
    """The two labelme fixtures: hats.json beside hats.jpg, embedded.json with only imageData."""
    src = tmp_path / "labelme"
    shutil.copytree(FIXTURES / "labelme", src)
    write_image(src / "hats.jpg", 64, 48)
    return src


def test_convert_to_voc(src, tmp_path):
    summary = convert_dataset("labelme", src, tmp_path / "voc", "voc")
    assert summary["images"] == 2 and summary["boxes"] == 4 and summary["classes"] == ["hat", "person", "安全帽"]
    [point_warning] = summary["warnings"]
    assert "shape 4" in point_warning and "point" in point_warning
    ds = load_dataset(voc_config(tmp_path / "voc"), None)
    assert [ds.image_path(i).name for i in range(2)] == ["embedded.png", "hats.jpg"]
    # continuous labelme boxes -> 1-based VOC pixels -> gluondet's 0-based inclusive labels
    np.testing.assert_array_equal(ds.label(0), [[0, 0, 3, 5, 0, 0]])
    # rectangle, corners in any order; its fractional corner (30.5, 20.25) is kept, not widened
    np.testing.assert_array_equal(ds.label(1), [[4, 2, 29.5, 19.25, 2, 0],
                                                [40, 10, 59, 43, 1, 0],  # polygon extent
                                                [15, 30, 24, 39, 1, 0]])  # circle: centre (20, 35), radius 5
    img, _ = ds[0]  # the embedded 8x6 PNG: left half red
    assert img.shape == (6, 8, 3) and img.asnumpy()[0, 0].tolist() == [255, 0, 0]


def test_convert_to_coco_keeps_polygons(src, tmp_path):
    summary = convert_dataset("labelme", src, tmp_path / "coco", "coco")
    doc = json.loads((tmp_path / "coco" / "annotations" / "instances_default.json").read_text(encoding="utf-8"))
    polygon = next(a for a in doc["annotations"] if a["bbox"] == [40.0, 10.0, 20.0, 34.0])
    assert polygon["segmentation"] == [[40.0, 10.0, 60.0, 12.0, 58.0, 40.0, 42.0, 44.0]]
    assert polygon["area"] == pytest.approx(558.0)  # shoelace by hand
    ds = load_dataset(resolve_dataset(summary["output"]), "train")
    assert ds.classes == ["hat", "person", "安全帽"] and len(ds) == 2
    np.testing.assert_allclose(ds.label(1)[0], [4, 2, 30.5, 20.25, 2, 0])


def test_image_path_outside_src_is_refused(src, tmp_path):
    doc = json.loads((src / "hats.json").read_text(encoding="utf-8"))
    doc["imagePath"] = "..\\secret.jpg"
    write_image(tmp_path / "secret.jpg", 64, 48)
    (src / "hats.json").write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(GluondetError, match=r"hats\.json: imagePath .* points outside"):
        convert_dataset("labelme", src, tmp_path / "out", "voc")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_missing_image_without_image_data(src, tmp_path):
    (src / "hats.jpg").unlink()
    with pytest.raises(GluondetError, match=r"hats\.json: image hats\.jpg not found and no imageData"):
        convert_dataset("labelme", src, tmp_path / "out", "voc")


def test_exif_rotated_photo_is_kept_and_read_turned_as_labelme_showed_it(tmp_path):
    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: labelme shows (and the user labels) a 20x40 image
    Image.new("RGB", (40, 20), (10, 20, 30)).save(src / "r.jpg", exif=exif)
    shape = {"label": "a", "points": [[2, 3], [12, 30]], "shape_type": "rectangle"}
    (src / "r.json").write_text(json.dumps({"shapes": [shape], "imagePath": "r.jpg", "imageData": None,
                                            "imageWidth": 20, "imageHeight": 40}))
    summary = convert_dataset("labelme", src, tmp_path / "voc", "voc")
    assert summary["warnings"] == []
    assert (tmp_path / "voc" / "JPEGImages" / "r.jpg").read_bytes() == (src / "r.jpg").read_bytes()
    ds = load_dataset(voc_config(tmp_path / "voc"), None)
    assert ds.image_size(0) == (20, 40) and ds[0][0].shape == (40, 20, 3)


def test_non_empty_destination_is_refused(src, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(GluondetError, match="not an empty folder"):
        convert_dataset("labelme", src, tmp_path / "out", "voc")


def test_unknown_shape_type_is_reported_and_left_out(src, tmp_path):
    doc = json.loads((src / "hats.json").read_text(encoding="utf-8"))
    n = len(doc["shapes"])
    doc["shapes"].append({"label": "hat", "points": [[1, 1], [30, 30]], "shape_type": "banana"})
    (src / "hats.json").write_text(json.dumps(doc), encoding="utf-8")
    summary = convert_dataset("labelme", src, tmp_path / "voc", "voc")
    assert any(f"shape {n + 1}: unknown shape_type 'banana'" in w and "left out" in w for w in summary["warnings"])
    assert summary["boxes"] == 4  # as without it
