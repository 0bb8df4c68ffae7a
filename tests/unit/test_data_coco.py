"""COCO reader: contiguous ids, crowd flags, negatives, xywh -> xyxy, and its check problems."""
import json

import numpy as np
import pytest

from data_helpers import write_image
from gluondet.config import DatasetConfig, resolve_dataset
from gluondet.data import load_dataset
from gluondet.data.check import check_dataset
from gluondet.errors import GluondetError


def write_coco(root, images, annotations, categories):
    """root/annotations/instances_default.json and root/images/*.jpg (sizes from ``images``)."""
    for img in images:
        write_image(root / "images" / img["file_name"], img["width"], img["height"])
    path = root / "annotations" / "instances_default.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}),
                    encoding="utf-8")
    return path


CATS = [{"id": 3, "name": "person"}, {"id": 7, "name": "安全帽"}, {"id": 1, "name": "Dog"}]


def img(i, w=64, h=48):
    return {"id": i, "file_name": f"{i:04d}.jpg", "width": w, "height": h}


def ann(i, image_id, cat, bbox, crowd=0):
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": bbox, "iscrowd": crowd,
            "area": bbox[2] * bbox[3]}


def test_coco_reader_ids_crowd_negatives_and_boxes(tmp_path):
    path = write_coco(tmp_path, [img(10), img(11), img(12)],
                      [ann(1, 10, 7, [4, 5, 10, 20]), ann(2, 10, 1, [0, 0, 64, 48], crowd=1),
                       ann(3, 12, 3, [1.5, 2.5, 3, 4])], CATS)
    cfg = resolve_dataset(path)  # annotations/instances_default.json with images/ beside it
    ds = load_dataset(cfg, "train")
    assert ds.classes == ["person", "安全帽", "Dog"]  # category list order, names as written
    assert [ds.image_id(i) for i in range(3)] == ["10", "11", "12"]
    np.testing.assert_array_equal(ds.label(0), [[4, 5, 14, 25, 1, 0], [0, 0, 64, 48, 2, 2]])
    assert ds.label(1).shape == (0, 6)
    np.testing.assert_array_equal(ds.label(2), [[1.5, 2.5, 4.5, 6.5, 0, 0]])
    image, label = ds[2]
    assert image.shape == (48, 64, 3) and ds.image_size(2) == (64, 48)


def test_config_classes_map_categories_by_name(tmp_path):
    path = write_coco(tmp_path, [img(1)], [ann(1, 1, 1, [4, 5, 10, 20])], CATS)
    cfg = DatasetConfig(name="c", format="coco", root=tmp_path, classes=["Dog", "person", "安全帽"],
                        splits={"train": {"annotations": str(path), "images": "images"}})
    assert load_dataset(cfg, "train").label(0)[0, 4] == 0


def test_boxes_a_rounding_error_outside_are_clipped(tmp_path):
    path = write_coco(tmp_path, [img(1)], [ann(1, 1, 3, [60, -0.4, 4.5, 10])], CATS)
    ds = load_dataset(resolve_dataset(path), "train")
    np.testing.assert_allclose(ds.label(0), [[60, 0, 64, 9.6, 0, 0]], rtol=1e-6)


def test_coco_problems(tmp_path):
    path = write_coco(tmp_path, [img(1), img(2), img(3), img(4, w=10), img(2)],
                      [ann(1, 1, 99, [1, 1, 5, 5]), ann(2, 2, 3, [50, 1, 30, 5]), ann(3, 3, 3, [1, 1, 0, 5]),
                       ann(4, 42, 3, [1, 1, 5, 5]), ann(5, 3, 3, [1, 1, "x", 5])], CATS)
    (tmp_path / "images" / "0001.jpg").unlink()
    write_image(tmp_path / "images" / "0004.jpg", 64, 48)  # the JSON says width 10
    result = check_dataset(resolve_dataset(path))
    got = sorted((p.file.rsplit("/", 1)[-1], p.problem) for p in result.problems)
    assert got == [("0001.jpg", "missing-image"), ("0001.jpg", "unknown-class"),
                   ("0002.jpg", "box-outside-image"), ("0003.jpg", "bad-box"), ("0003.jpg", "zero-area-box"),
                   ("0004.jpg", "no-objects"), ("0004.jpg", "size-mismatch"),
                   ("instances_default.json", "duplicate-id"), ("instances_default.json", "missing-image")]


def test_file_name_may_not_leave_the_image_folder(tmp_path):
    path = write_coco(tmp_path, [img(1)], [], CATS)
    doc = json.loads(path.read_text())
    doc["images"][0]["file_name"] = "../annotations/instances_default.json"
    path.write_text(json.dumps(doc))
    [problem] = [p for p in check_dataset(resolve_dataset(path)).problems if p.severity == "error"]
    assert problem.problem == "bad-value" and "not a file inside" in problem.detail


def test_broken_json_is_one_clear_error(tmp_path):
    path = tmp_path / "instances_x.json"
    path.write_text("{ broken")
    with pytest.raises(GluondetError, match=r"instances_x\.json: not valid JSON"):
        check_dataset(resolve_dataset(path))


def test_whole_coco_root_counts_each_image_once_across_overlapping_split_files(tmp_path):
    from gluondet.data import READERS

    path = write_coco(tmp_path, [img(1), img(2), img(3)], [ann(1, 1, 3, [4, 5, 10, 20])], CATS)
    doc = json.loads(path.read_text(encoding="utf-8"))
    for name, ids in (("train", [1, 2]), ("val", [3]), ("trainval", [1, 2, 3])):
        part = dict(doc, images=[i for i in doc["images"] if i["id"] in ids])
        (path.parent / f"instances_{name}.json").write_text(json.dumps(part), encoding="utf-8")
    cfg = resolve_dataset(tmp_path)  # instances_{default,train,trainval,val}.json
    entries = READERS["coco"](cfg, None).entries
    assert sorted(e.image_id for e in entries) == ["1", "2", "3"]
    assert len(READERS["coco"](cfg, "train").entries) == 2


def test_supercategories_reach_the_dataset_from_the_file_or_the_yaml(tmp_path):
    cats = [dict(CATS[0], supercategory="people"), dict(CATS[1], supercategory="headwear"),
            dict(CATS[2], supercategory="")]
    path = write_coco(tmp_path, [img(1)], [ann(1, 1, 3, [4, 5, 10, 20])], cats)
    ds = load_dataset(resolve_dataset(path), "train")
    assert ds.supercategories == {"person": "people", "安全帽": "headwear"}  # an empty one is none
    # a dataset YAML's own supercategories win over the file's
    yaml_path = tmp_path / "mine.yaml"
    yaml_path.write_text(f"format: coco\nroot: {tmp_path}\nsplits: {{train: {{annotations: {path}, "
                         "images: images}}\nsupercategories: {安全帽: gear, Dog: animal}\n", encoding="utf-8")
    assert load_dataset(resolve_dataset(yaml_path), "train").supercategories == {"安全帽": "gear", "Dog": "animal"}
