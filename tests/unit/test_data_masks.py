"""Instance masks: COCO polygons and RLE, the VOC instance layout, synth --masks, and mask checks.

Every mask read is compared pixel for pixel with pycocotools' ``COCO.annToMask`` on the same file.
"""
import contextlib
import io
import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from data_helpers import FIXTURES, write_image
from gluondet.config import resolve_dataset
from gluondet.data import load_dataset
from gluondet.data.check import check_dataset
from gluondet.data.convert import convert_dataset
from gluondet.data.synth import render_masked_shapes_image, write_shapes_voc
from gluondet.errors import GluondetError

SIZE = 96


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes_voc(tmp_path_factory.mktemp("m") / "shapes", n_train=12, n_val=4, seed=5, size=SIZE,
                            masks=True)


def coco_api(path):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def assert_masks_equal_ann_to_mask(ds, ann_path):
    api = coco_api(ann_path)
    assert len(ds) == len(api.imgs)
    for i in range(len(ds)):
        _, label, masks = ds[i]
        anns = api.imgToAnns[int(ds.image_id(i))]
        assert masks.shape == (len(anns), SIZE, SIZE) and label.shape[0] == len(anns)
        for ann, mask in zip(anns, masks):
            np.testing.assert_array_equal(mask, api.annToMask(ann))


def test_synth_masks_are_the_drawn_pixels_exactly():
    for index in range(20):
        shapes = render_masked_shapes_image(np.random.default_rng([9, index]), size=SIZE)
        drawn = np.any(shapes.image != shapes.background, axis=2)
        union = shapes.masks.any(axis=0) if len(shapes.masks) else np.zeros_like(drawn)
        # a shape pixel may by chance get its background's colour back; never the other way round
        assert not (drawn & ~union).any()
        assert (drawn & union).sum() >= 0.97 * union.sum()
        assert (shapes.masks.sum(axis=0) <= 1).all()  # shapes never overlap
        for polygon, mask in zip(shapes.polygons, shapes.masks):
            rle = mask_utils.merge(mask_utils.frPyObjects([polygon], SIZE, SIZE))
            np.testing.assert_array_equal(mask_utils.decode(rle), mask)


def test_coco_polygons_read_as_ann_to_mask(shapes):
    ds = load_dataset(resolve_dataset(shapes / "coco.yaml"), "train", masks=True)
    assert sum(ds.label(i).shape[0] for i in range(len(ds))) > 10
    assert_masks_equal_ann_to_mask(ds, shapes / "annotations" / "instances_train.json")


@pytest.mark.parametrize("compressed", [False, True])
def test_coco_rle_reads_as_ann_to_mask(shapes, tmp_path, compressed):
    root = tmp_path / "rle"
    shutil.copytree(shapes, root)
    path = root / "annotations" / "instances_train.json"
    doc = json.loads(path.read_text())
    for ann in doc["annotations"]:
        rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], SIZE, SIZE))
        if compressed:
            ann["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        else:  # uncompressed, as COCO's crowd regions are written: column-major run lengths
            flat = mask_utils.decode(rle).ravel(order="F")
            changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
            counts = np.diff(np.concatenate([[0], changes])).tolist()
            ann["segmentation"] = {"size": [SIZE, SIZE], "counts": counts}
    path.write_text(json.dumps(doc))
    ds = load_dataset(resolve_dataset(root / "coco.yaml"), "train", masks=True)
    assert_masks_equal_ann_to_mask(ds, path)


def test_voc_instance_pngs_give_the_coco_masks(shapes):
    voc = load_dataset(resolve_dataset(shapes), "val", masks=True)
    coco = load_dataset(resolve_dataset(shapes / "coco.yaml"), "val", masks=True)
    assert len(voc) == len(coco) == 4
    for i in range(len(voc)):
        _, voc_label, voc_masks = voc[i]
        _, coco_label, coco_masks = coco[i]
        np.testing.assert_array_equal(voc_masks, coco_masks)
        # VOC boxes are inclusive pixel indices, COCO's continuous: xmax differs by one pixel
        np.testing.assert_array_equal(voc_label[:, :4] + [0, 0, 1, 1], coco_label[:, :4])
    class_png = np.array(Image.open(shapes / "SegmentationClass" / f"{voc.image_id(0)}.png"))
    _, label, masks = voc[0]
    for row, mask in zip(label, masks):
        assert (class_png[mask > 0] == row[4] + 1).all()


def test_objects_without_masks_are_refused_for_a_mask_model(tmp_path, shapes):
    root = tmp_path / "nomask"
    shutil.copytree(shapes, root)
    victim = sorted((root / "SegmentationObject").glob("*.png"))[0]
    victim.unlink()
    load_dataset(resolve_dataset(root), "trainval")  # boxes alone are fine
    with pytest.raises(GluondetError, match=r"objects without a mask.*Annotations/" + victim.stem):
        load_dataset(resolve_dataset(root), "trainval", masks=True)


# ----------------------------------------------------------------------------- checks
def write_coco_masks(root, segmentations, bbox=(10, 10, 20, 20), size=(64, 48)):
    """One image and one annotation per segmentation (all with ``bbox``)."""
    write_image(root / "images" / "a.jpg", *size)
    anns = [{"id": k, "image_id": 1, "category_id": 1, "bbox": list(bbox), "area": 1.0, "iscrowd": 0,
             "segmentation": seg} for k, seg in enumerate(segmentations, 1)]
    doc = {"images": [{"id": 1, "file_name": "a.jpg", "width": size[0], "height": size[1]}],
           "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}
    path = root / "annotations" / "instances_default.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc))
    return path


SQUARE = [10, 10, 30, 10, 30, 30, 10, 30]  # fills pixels 10..29: pycocotools' box [10, 10, 20, 20]


@pytest.mark.parametrize("segmentation, code, detail", [
    ([SQUARE], None, None),
    ([[10, 10, 30, 10]], "polygon-too-few-points", "polygon 1 has 2 points"),
    ([SQUARE, [1, 2, 3, 4, 5]], "polygon-too-few-points", "polygon 2 has 2.5 points"),
    ([[10, 10, 90, 10, 90, 30, 10, 30]], "polygon-outside-image", "x 10..90"),
    ([[10, 10, 20, 20, 30, 30]], "empty-mask", "no area"),
    ({"size": [48, 64], "counts": [3072]}, "empty-mask", "no area"),
    ([[40, 10, 60, 10, 60, 30, 40, 30]], "box-mask-mismatch", "box [10, 10, 30, 30]"),
    ([["a", 1, 2, 3, 4, 5]], "bad-mask", "not a list of numbers"),
    ({"size": [48, 60], "counts": "abc"}, "mask-size-mismatch", "60x48"),
    ({"size": [48, 64], "counts": [5, 10]}, "bad-mask", "cover 15 pixels"),
])
def test_each_coco_mask_problem_is_one_line_naming_the_file(tmp_path, segmentation, code, detail):
    path = write_coco_masks(tmp_path, [segmentation])
    result = check_dataset(resolve_dataset(path), "train")
    if code is None:
        assert result.ok and not result.problems
        return
    [problem] = result.problems
    assert (problem.severity, problem.problem) == ("error", code)
    assert problem.file.endswith("a.jpg") and "object 1 (thing)" in problem.detail and detail in problem.detail
    assert "\n" not in str(problem)


def test_voc_mask_png_of_another_size_is_reported(tmp_path, shapes):
    root = tmp_path / "voc"
    shutil.copytree(shapes, root)
    png = sorted((root / "SegmentationObject").glob("*.png"))[0]
    Image.fromarray(np.zeros((SIZE, SIZE + 2), np.uint8)).save(png)
    result = check_dataset(resolve_dataset(root), None)
    [problem] = result.errors
    assert problem.file == str(png) and problem.problem == "mask-size-mismatch"
    assert f"{SIZE + 2}x{SIZE}" in problem.detail and f"{SIZE}x{SIZE}" in problem.detail


def test_voc_box_disagreeing_with_its_instance_png(tmp_path, shapes):
    root = tmp_path / "voc"
    shutil.copytree(shapes, root)
    png = next(p for p in sorted((root / "SegmentationObject").glob("*.png")) if np.array(Image.open(p)).max())
    values = np.array(Image.open(png))
    values[values == 1] = 0  # object 1's pixels move to the image's far corner
    values[:3, :3] = 1
    Image.fromarray(values).save(png)  # greyscale ("L"): also one index per pixel
    result = check_dataset(resolve_dataset(root), None)
    [problem] = result.errors
    assert problem.file.endswith(f"Annotations/{png.stem}.xml")
    assert problem.problem == "box-mask-mismatch" and "object 1" in problem.detail
    assert "[0, 0, 2, 2]" in problem.detail  # the mask's span, inclusive pixel indices like VOC boxes


def _png_with_objects(root, folder="SegmentationObject"):
    """The first (sorted) PNG of ``folder`` with objects, and the image's XML class names in order."""
    from xml.etree import ElementTree as ET

    png = next(p for p in sorted((root / folder).glob("*.png")) if np.array(Image.open(p)).max())
    names = [o.findtext("name") for o in ET.parse(root / "Annotations" / f"{png.stem}.xml").iter("object")]
    return png, names


def test_segmentation_class_carrying_another_class_is_one_line_per_object(tmp_path, shapes):
    assert {p.problem for p in check_dataset(resolve_dataset(shapes), None).problems} <= {"no-objects"}
    root = tmp_path / "voc"
    shutil.copytree(shapes, root)
    png, names = _png_with_objects(root, "SegmentationClass")
    objects = np.array(Image.open(root / "SegmentationObject" / png.name))
    im = Image.open(png)
    values = np.array(im)
    classes = ["circle", "square", "triangle"]  # the synth's order; SegmentationClass holds index + 1
    assert values[objects == 1].max() == classes.index(names[0]) + 1  # the data agrees before the edit
    wrong = next(c for c in classes if c != names[0])
    values[objects == 1] = classes.index(wrong) + 1
    values[:2, :2] = 255  # void pixels are not counted
    edited = Image.fromarray(values, mode="P")
    edited.putpalette(im.getpalette())  # VOC's palette PNG, as the tools write it
    edited.save(png)
    result = check_dataset(resolve_dataset(root), None)
    [problem] = [p for p in result.problems if p.problem != "no-objects"]  # the synth's negatives
    assert not result.errors  # training reads the XML's class, not this PNG: a warning
    assert (problem.severity, problem.file, problem.problem) == ("warning", str(png), "segmentation-class-mismatch")
    assert problem.detail == (f"object 1 of {png.stem}.xml is '{names[0]}' in the XML but its pixels here are "
                              f"class {classes.index(wrong) + 1} ({wrong})")
    assert "\n" not in str(problem)


def test_segmentation_class_png_of_another_size_is_reported(tmp_path, shapes):
    root = tmp_path / "voc"
    shutil.copytree(shapes, root)
    png, _ = _png_with_objects(root, "SegmentationClass")
    Image.fromarray(np.zeros((SIZE + 3, SIZE), np.uint8)).save(png)
    result = check_dataset(resolve_dataset(root), None)
    [problem] = [p for p in result.problems if p.problem != "no-objects"]  # the synth's negatives
    assert (problem.severity, problem.file, problem.problem) == ("warning", str(png), "mask-size-mismatch")
    assert f"SegmentationClass PNG is {SIZE}x{SIZE + 3}" in problem.detail


def test_instance_layout_without_segmentation_class_is_fine(tmp_path, shapes):
    root = tmp_path / "voc"
    shutil.copytree(shapes, root)
    shutil.rmtree(root / "SegmentationClass")
    result = check_dataset(resolve_dataset(root), None)
    assert result.ok and {p.problem for p in result.problems} <= {"no-objects"}
    ds = load_dataset(resolve_dataset(root), "train", masks=True)
    assert sum(len(ds.masks(i)) for i in range(len(ds))) > 0


# ----------------------------------------------------------------------------- labelme
def test_labelme_circles_and_rectangles_become_polygons(tmp_path):
    src = tmp_path / "labelme"
    shutil.copytree(FIXTURES / "labelme", src)
    write_image(src / "hats.jpg", 64, 48)
    summary = convert_dataset("labelme", src, tmp_path / "coco", "coco")
    ann_path = summary["output"]
    api = coco_api(ann_path)
    by_box = {tuple(a["bbox"]): a for a in api.dataset["annotations"]}
    circle = by_box[(15.0, 30.0, 10.0, 10.0)]  # centre (20, 35), radius 5
    [polygon] = circle["segmentation"]
    xs, ys = np.array(polygon[0::2]), np.array(polygon[1::2])
    assert len(xs) == 32 and np.allclose(np.hypot(xs - 20, ys - 35), 5)
    assert circle["area"] == pytest.approx(32 / 2 * 25 * math.sin(2 * math.pi / 32))  # a regular 32-gon
    rectangle = by_box[(4.0, 2.0, 26.5, 18.25)]
    assert rectangle["segmentation"] == [[4.0, 2.0, 30.5, 2.0, 30.5, 20.25, 4.0, 20.25]]
    ds = load_dataset(resolve_dataset(ann_path), "train", masks=True)
    i = [ds.image_id(k) for k in range(len(ds))].index(str(circle["image_id"]))
    _, _, masks = ds[i]
    anns = api.imgToAnns[circle["image_id"]]
    for ann, mask in zip(anns, masks):
        np.testing.assert_array_equal(mask, api.annToMask(ann))
    assert check_dataset(resolve_dataset(ann_path), "train").ok


def test_cli_synth_masks_then_check_both_layouts(tmp_path):
    from click.testing import CliRunner

    from gluondet.cli import main as cli

    runner = CliRunner()
    out = tmp_path / "demo"
    result = runner.invoke(cli, ["data", "synth", str(out), "--train", "3", "--val", "1", "--size", "64", "--masks"])
    assert result.exit_code == 0, result.output
    assert f"COCO --dataset {out}/coco.yaml" in result.output
    for target in (str(out), str(out / "coco.yaml")):
        result = runner.invoke(cli, ["data", "check", target])
        assert result.exit_code == 0 and "0 error(s)" in result.output, result.output
    path = write_coco_masks(tmp_path / "bad", [[[10, 10, 30, 10]]])
    result = runner.invoke(cli, ["data", "check", str(path)])
    assert result.exit_code == 1
    assert f"{tmp_path}/bad/images/a.jpg: error: polygon-too-few-points: object 1 (thing)" in result.output
