"""VOC reader: what LabelImg, labelme's exporter and CVAT write, and generated folders."""
import pickle

import numpy as np
import pytest

from data_helpers import copy_fixture, voc_config, write_image, write_voc
from gluondet.data import load_dataset
from gluondet.data.voc import read_split_file, voc_to_label_coords
from gluondet.errors import GluondetError


def one_file_voc(tmp_path, fixture, image_name, size, kind="color"):
    copy_fixture(fixture, tmp_path / "Annotations" / f"{image_name.rsplit('.', 1)[0]}.xml")
    write_image(tmp_path / "JPEGImages" / image_name, *size, kind=kind)
    return voc_config(tmp_path)


def test_labelimg_file_non_ascii_and_upper_case_names(tmp_path):
    cfg = one_file_voc(tmp_path, "labelimg.xml", "IMG_0001.jpg", (64, 48))
    ds = load_dataset(cfg, None)
    assert ds.classes == sorted(["安全帽", "Person"]) == ["Person", "安全帽"]  # exact, not lower-cased
    # 1-based file coordinates minus one; xmin=1 (LabelImg's smallest) becomes 0, xmax=64=W becomes 63.
    expected = np.array([[0, 2, 19, 17, 1, 0], [29, 9, 63, 47, 0, 1]], np.float32)
    np.testing.assert_array_equal(ds.label(0), expected)
    assert ds.image_id(0) == "IMG_0001" and ds.image_size(0) == (64, 48)


def test_labelme_exporter_file_empty_difficult_and_float_coords(tmp_path):
    cfg = one_file_voc(tmp_path, "labelme2voc.xml", "2011_000003.jpg", (64, 48))
    ds = load_dataset(cfg, None)
    assert ds.classes == ["person"]
    x0, y0, x1, y1 = voc_to_label_coords(0.0, 4.612903225806452, 31.483870967741936, 47.0)
    assert (x0, y0, x1, y1) == (0.0, pytest.approx(3.612903225806452), pytest.approx(30.483870967741936), 46.0)
    np.testing.assert_allclose(ds.label(0), [[x0, y0, x1, y1, 0, 0]], rtol=1e-6)


def test_cvat_file_png_occluded_and_nested_attribute_names(tmp_path):
    cfg = one_file_voc(tmp_path, "cvat.xml", "frame_000001.png", (64, 48))
    ds = load_dataset(cfg, None)
    assert ds.classes == ["Helmet"]  # the <attributes><attribute><name> inside is not an object name
    np.testing.assert_allclose(ds.label(0), [[9.5, 0, 29.25, 19.75, 0, 0]])
    assert ds.image_path(0).name == "frame_000001.png"


def test_size_missing_is_read_from_bmp_header(tmp_path):
    cfg = one_file_voc(tmp_path, "no_size.xml", "photo.bmp", (40, 36))
    ds = load_dataset(cfg, None)
    assert ds.image_size(0) == (40, 36)
    img, label = ds[0]
    assert img.shape == (36, 40, 3)
    np.testing.assert_array_equal(label, [[4, 5, 24, 29, 0, 0]])


def test_image_found_by_xml_filename_and_jpeg_extension(tmp_path):
    write_voc(tmp_path, {"a": {"ext": ".jpeg", "objects": [("x", 2, 2, 10, 10)]},
                         "b": {"ext": None, "xml": "<annotation><filename>IMG B.JPG</filename><object><name>x</name>"
                                                   "<bndbox><xmin>2</xmin><ymin>2</ymin><xmax>9</xmax><ymax>9</ymax>"
                                                   "</bndbox></object></annotation>"}})
    write_image(tmp_path / "JPEGImages" / "IMG B.JPG", 20, 30)
    ds = load_dataset(voc_config(tmp_path), "train")
    assert [ds.image_path(i).name for i in range(len(ds))] == ["a.jpeg", "IMG B.JPG"]
    assert ds.image_size(1) == (20, 30)


def test_image_without_objects_is_a_negative(tmp_path):
    write_voc(tmp_path, {"pos": {"objects": [("cat", 5, 5, 20, 20)]}, "neg": {"objects": []}},
              {"train": ["pos", "neg"]})
    ds = load_dataset(voc_config(tmp_path), "train")
    assert ds.label(1).shape == (0, 6) and ds.label(1).dtype == np.float32
    assert ds[1][1].shape == (0, 6)
    assert [p.problem for p in ds.problems] == ["no-objects"]


def test_items_are_rgb_uint8_ndarrays_for_color_grey_16bit_and_alpha(tmp_path):
    write_voc(tmp_path, {"c": {"ext": ".png"}, "g": {"ext": ".png", "kind": "gray"},
                         "g16": {"ext": ".png", "kind": "gray16"}, "a": {"ext": ".png", "kind": "alpha"}},
              {"train": ["c", "g", "g16", "a"]})
    ds = load_dataset(voc_config(tmp_path), "train")
    imgs = [ds[i][0] for i in range(4)]
    for img in imgs:
        assert img.shape == (48, 64, 3) and img.dtype == np.uint8 and type(img).__name__ == "NDArray"
    color = imgs[0].asnumpy()
    assert color[0, 0].tolist() == [0, 0, 255] and color[0, -1].tolist() == [255, 0, 0]  # BGR file -> RGB
    assert (imgs[1].asnumpy() == 100).all() and (imgs[2].asnumpy() == 100).all()
    # alpha 7 of 255 over white, as gluondet.image composites it everywhere
    over_white = color * (7 / 255) + 255 * (1 - 7 / 255)
    np.testing.assert_allclose(imgs[3].asnumpy(), over_white, atol=1)


def test_missing_or_corrupt_image_at_getitem_names_the_file(tmp_path):
    write_voc(tmp_path, {"a": {"objects": [("x", 1, 1, 9, 9)]}, "b": {"objects": [("x", 1, 1, 9, 9)]}},
              {"train": ["a", "b"]})
    ds = load_dataset(voc_config(tmp_path), "train")
    (tmp_path / "JPEGImages" / "a.jpg").unlink()
    (tmp_path / "JPEGImages" / "b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(GluondetError, match=r"a\.jpg"):
        ds[0]
    with pytest.raises(GluondetError, match=r"b\.jpg.*not a readable image"):
        ds[1]


def test_dataset_pickles_with_its_labels(tmp_path):
    write_voc(tmp_path, {"a": {"objects": [("x", 3, 4, 20, 30)]}})
    ds = load_dataset(voc_config(tmp_path), "train")
    again = pickle.loads(pickle.dumps(ds))
    assert again.classes == ds.classes and len(again) == 1
    np.testing.assert_array_equal(again.label(0), ds.label(0))
    np.testing.assert_array_equal(again[0][0].asnumpy(), ds[0][0].asnumpy())


def test_config_classes_set_ids_and_argument_overrides(tmp_path):
    write_voc(tmp_path, {"a": {"objects": [("b", 2, 2, 9, 9), ("a", 3, 3, 9, 9)]}})
    ds = load_dataset(voc_config(tmp_path, classes=["b", "a"]), "train")
    assert ds.label(0)[:, 4].tolist() == [0, 1]
    ds = load_dataset(voc_config(tmp_path, classes=["b", "a"]), "train", classes=["c", "a", "b"])
    assert ds.classes == ["c", "a", "b"] and ds.label(0)[:, 4].tolist() == [2, 1]


def test_classes_discovered_from_whole_dataset_not_the_split(tmp_path):
    write_voc(tmp_path, {"a": {"objects": [("zebra", 2, 2, 9, 9)]}, "b": {"objects": [("ant", 2, 2, 9, 9)]}},
              {"train": ["a"], "val": ["b"]})
    train, val = (load_dataset(voc_config(tmp_path), s) for s in ("train", "val"))
    assert train.classes == val.classes == ["ant", "zebra"]
    assert val.label(0)[0, 4] == 0 and train.label(0)[0, 4] == 1


def test_voc_coordinate_convention_clamps_only_the_underflow():
    assert voc_to_label_coords(0, 0.5, 1, 10) == (0.0, 0.0, 0.0, 9.0)
    assert voc_to_label_coords(-3, 2, 5, 6) == (-4.0, 1.0, 4.0, 5.0)  # negative: check reports it


def test_vocdevkit_split_specs(tmp_path):
    write_voc(tmp_path / "VOC2007", {"07a": {"objects": [("x", 1, 1, 9, 9)]}, "07b": {"objects": []}},
              {"trainval": ["07a", "07b"], "test": ["07b"]})
    write_voc(tmp_path / "VOC2012", {"12a": {"objects": [("y", 1, 1, 9, 9)]}}, {"trainval": ["12a"]})
    cfg = voc_config(tmp_path, splits={"train": "2007/trainval+2012/trainval", "val": "VOC2007/test"})
    train = load_dataset(cfg, "train")
    assert [train.image_id(i) for i in range(len(train))] == ["07a", "07b", "12a"]
    assert train.classes == ["x", "y"]
    assert len(load_dataset(cfg, "val")) == 1
    with pytest.raises(GluondetError, match="several VOC folders.*2007/trainval"):
        load_dataset(cfg, "trainval")
    with pytest.raises(GluondetError, match="no VOC folder '2010'"):
        load_dataset(cfg, "2010/trainval")


def test_missing_split_file_says_how_to_make_one(tmp_path):
    write_voc(tmp_path, {"a": {"objects": [("x", 1, 1, 9, 9)]}})
    with pytest.raises(GluondetError, match=r"val\.txt: split file not found.*gluondet data split"):
        load_dataset(voc_config(tmp_path), "val")


def test_split_file_formats(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("\ufeff000005 -1\n000007  1\nIMG 001\n\n# note\nplain\n", encoding="utf-8")
    assert read_split_file(path) == ["000005", "000007", "IMG 001", "plain"]


def _flip_label(img, label):
    return img, label[:, ::-1]


def test_transform_keeps_dataset_attributes_and_pickles(tmp_path):
    write_voc(tmp_path, {"a": {"objects": [("x", 3, 4, 20, 30)]}})
    ds = load_dataset(voc_config(tmp_path), "train").transform(_flip_label)
    again = pickle.loads(pickle.dumps(ds))
    assert again.classes == ["x"] and len(again) == 1 and again.image_id(0) == "a"
    np.testing.assert_array_equal(again[0][1], [[0, 0, 29, 19, 3, 2]])  # [2, 3, 19, 29, 0, 0] reversed


def test_annotations_are_the_regular_xml_files_in_name_order_symlinks_followed(tmp_path):
    from gluondet.data.voc import read_voc

    write_voc(tmp_path, {i: {"objects": [("hat", 2, 3, 20, 30)]} for i in ("b", "a", "c")})
    (tmp_path / "Annotations" / "folder.xml").mkdir()  # named like an annotation, not one
    (tmp_path / "Annotations" / "notes.txt").write_text("not an annotation")
    (tmp_path / "Annotations" / "c.xml").rename(tmp_path / "c-real.xml")
    (tmp_path / "Annotations" / "c.xml").symlink_to(tmp_path / "c-real.xml")
    (tmp_path / "Annotations" / "gone.xml").symlink_to(tmp_path / "missing.xml")  # dangling: skipped
    index = read_voc(tmp_path, None)
    assert [e.image_id for e in index.entries] == ["a", "b", "c"]
    assert not [p for e in index.entries for p in e.problems] and not index.problems
    assert index.entries[2].objects == [("hat", 1.0, 2.0, 19.0, 29.0, 0)]
