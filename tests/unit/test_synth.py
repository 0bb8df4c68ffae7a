"""The shapes demo generator: boxes match the drawn pixels, VOC files are complete, output is deterministic."""
from xml.etree import ElementTree as ET

import numpy as np
import pytest

from gluondet.data.synth import SHAPES_CLASSES, render_shapes_image, write_shapes_voc
from gluondet.errors import GluondetError


def _changed_pixels(shapes):
    """Pixels where the image differs from its background: what was drawn, found independently of the boxes."""
    return np.any(shapes.image != shapes.background, axis=2)


@pytest.mark.parametrize("index", range(25))
def test_boxes_are_tight_bounds_of_the_drawn_shapes(index):
    shapes = render_shapes_image(np.random.default_rng([7, index]), size=96)
    changed = _changed_pixels(shapes)
    inside_boxes = np.zeros_like(changed)
    for xmin, ymin, xmax, ymax in shapes.boxes:
        assert 0 <= xmin <= xmax < 96 and 0 <= ymin <= ymax < 96
        inside_boxes[ymin:ymax + 1, xmin:xmax + 1] = True
        # each edge of the box holds a drawn pixel: the box is not loose on any side
        assert changed[ymin, xmin:xmax + 1].any(), "top edge touches no shape pixel"
        assert changed[ymax, xmin:xmax + 1].any(), "bottom edge touches no shape pixel"
        assert changed[ymin:ymax + 1, xmin].any(), "left edge touches no shape pixel"
        assert changed[ymin:ymax + 1, xmax].any(), "right edge touches no shape pixel"
    assert not (changed & ~inside_boxes).any(), "a drawn pixel lies outside every box"
    assert len(shapes.class_ids) == len(shapes.boxes)


def test_images_vary_in_content_as_the_demo_needs():
    images = [render_shapes_image(np.random.default_rng([3, i]), size=64) for i in range(80)]
    counts = [len(s.boxes) for s in images]
    assert 0 in counts, "no negative (empty) image in 80"
    assert max(counts) >= 3
    assert set(np.concatenate([s.class_ids for s in images]).tolist()) == set(range(len(SHAPES_CLASSES)))

    def overlaps(a, b):
        return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]

    assert any(overlaps(a, b) for s in images for i, a in enumerate(s.boxes) for b in s.boxes[i + 1:])
    # colour does not give the class away: every class is drawn in both dark and bright colours
    for class_id in range(len(SHAPES_CLASSES)):
        brightness = []
        for s in images:
            drawn = _changed_pixels(s)
            for (xmin, ymin, xmax, ymax), c in zip(s.boxes, s.class_ids):
                if c == class_id:
                    patch = drawn[ymin:ymax + 1, xmin:xmax + 1]
                    brightness.append(s.image[ymin:ymax + 1, xmin:xmax + 1][patch].mean())
        assert min(brightness) < 100 and max(brightness) > 150


def _read_voc(root):
    objects = {}
    for xml_path in sorted((root / "Annotations").glob("*.xml")):
        tree = ET.parse(xml_path).getroot()
        size = tree.find("size")
        assert (size.findtext("width"), size.findtext("height"), size.findtext("depth")) == ("64", "64", "3")
        rows = []
        for obj in tree.findall("object"):
            assert obj.findtext("name") in SHAPES_CLASSES
            assert obj.findtext("difficult") == "0"
            box = obj.find("bndbox")
            rows.append(tuple(int(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")))
        objects[xml_path.stem] = rows
    return objects


def test_write_shapes_voc_writes_a_complete_voc_folder(tmp_path):
    import cv2

    root = write_shapes_voc(tmp_path / "shapes", n_train=6, n_val=4, seed=5, size=64)
    assert root == tmp_path / "shapes"
    splits = {
        name: (root / "ImageSets" / "Main" / f"{name}.txt").read_text().split()
        for name in ("train", "val", "trainval", "test")
    }
    assert len(splits["train"]) == 6 and len(splits["val"]) == 4
    assert not set(splits["train"]) & set(splits["val"])
    assert splits["trainval"] == splits["train"] + splits["val"]
    assert splits["test"] == splits["val"]
    objects = _read_voc(root)
    assert sorted(objects) == sorted(splits["trainval"])
    for index, image_id in enumerate(splits["trainval"]):
        image = cv2.imread(str(root / "JPEGImages" / f"{image_id}.jpg"))
        assert image.shape == (64, 64, 3)
        # the XML holds the generator's 0-based boxes plus one (VOC counts pixels from 1)
        expected = render_shapes_image(np.random.default_rng([5, index]), size=64)
        assert objects[image_id] == [tuple(int(v) + 1 for v in b) for b in expected.boxes]
        # the JPEG is the drawn image, up to compression (pixel noise on small images loses ~10-16 levels)
        decoded = image[:, :, ::-1].astype(int)
        other = render_shapes_image(np.random.default_rng([5, index + 100]), size=64).image
        assert np.abs(decoded - expected.image).mean() < 20
        assert np.abs(decoded - expected.image).mean() < 0.5 * np.abs(decoded - other).mean()


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    def files(root):
        return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    first = files(write_shapes_voc(tmp_path / "a", n_train=4, n_val=2, seed=1, size=64))
    again = files(write_shapes_voc(tmp_path / "b", n_train=4, n_val=2, seed=1, size=64))
    other = files(write_shapes_voc(tmp_path / "c", n_train=4, n_val=2, seed=2, size=64))
    assert first == again
    assert first.keys() == other.keys() and first != other


def test_refuses_to_write_into_a_folder_with_files(tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(GluondetError, match="not an empty folder"):
        write_shapes_voc(tmp_path, n_train=2, n_val=1, size=64)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]  # nothing left behind


def test_writes_into_an_existing_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    root = write_shapes_voc(tmp_path / "empty", n_train=2, n_val=1, size=64)
    assert len(list((root / "JPEGImages").glob("*.jpg"))) == 3


def test_shipped_dataset_config_describes_the_generator():
    import inspect

    from gluondet.config import resolve_dataset

    cfg = resolve_dataset("shapes_voc")
    assert cfg.format == "voc" and cfg.root.name == "shapes_voc"
    assert tuple(cfg.classes) == SHAPES_CLASSES
    assert cfg.splits == {"train": "train", "val": "val", "test": "test"}
    assert set(cfg.synth) == {"train", "val", "seed", "size"}
    # more training images than the generator's default: the demo model needs them (see the YAML)
    defaults = inspect.signature(write_shapes_voc).parameters
    assert cfg.synth["train"] >= defaults["n_train"].default
    assert (cfg.synth["val"], cfg.synth["seed"], cfg.synth["size"]) == (
        defaults["n_val"].default, defaults["seed"].default, defaults["size"].default)


def test_gluondet_voc_reader_gets_back_the_generators_boxes(tmp_path):
    from gluondet.config import DatasetConfig
    from gluondet.data import load_dataset

    root = write_shapes_voc(tmp_path / "shapes", n_train=5, n_val=2, seed=9, size=64)
    cfg = DatasetConfig(name="shapes", format="voc", root=root, classes=list(SHAPES_CLASSES),
                        splits={"train": "train", "val": "val", "test": "test"})
    ds = load_dataset(cfg, "train")
    assert list(ds.classes) == list(SHAPES_CLASSES) and len(ds) == 5
    for i in range(len(ds)):
        index = int(ds.image_id(i).split("_")[-1])
        expected = render_shapes_image(np.random.default_rng([9, index]), size=64)
        img, label = ds[i]
        assert img.shape == (64, 64, 3)
        np.testing.assert_array_equal(label[:, :4], expected.boxes.astype(np.float32))
        np.testing.assert_array_equal(label[:, 4], expected.class_ids.astype(np.float32))
        assert (label[:, 5] == 0).all()
