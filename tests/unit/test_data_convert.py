"""gluondet data convert: round trips between VOC, COCO, YOLO and labelme, checked against pycocotools
and against the formats' pixel conventions replayed by hand."""
import contextlib
import io
import itertools
import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from data_helpers import FIXTURES, voc_config, voc_xml, write_image, write_voc
from gluondet.config import resolve_dataset
from gluondet.data import load_dataset
from gluondet.data.convert import convert_dataset
from gluondet.data.voc import parse_voc_xml
from gluondet.errors import GluondetError

# id -> (size, objects in 1-based VOC pixels, difficult)
IMAGES = {
    "a": ((64, 48), [("cat", 1, 1, 64, 48)], 0),  # the whole image
    "b": ((50, 40), [("dog", 5, 6, 20, 30), ("cat", 10, 10, 11, 12)], 1),  # two pixels by three
    "c": ((32, 32), [], 0),  # a negative
    "d": ((40, 30), [("dog", 3, 2, 39, 29), ("bird", 1, 29, 40, 30)], 0),
}
CLASSES = ["dog", "cat", "bird"]  # not sorted: the order must survive
SPLITS = {"train": ["a", "b"], "val": ["c", "d"]}


@pytest.fixture
def voc(tmp_path):
    spec = {i: {"size": size, "xml": voc_xml(objs, size=size, difficult=diff)}
            for i, (size, objs, diff) in IMAGES.items()}
    root = write_voc(tmp_path / "voc", spec, splits=SPLITS)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    return root


def voc_objects(root):
    """{id: [[name, xmin, ymin, xmax, ymax, difficult], ...]} as written in the XML files."""
    return {p.stem: parse_voc_xml(p)["objects"] for p in sorted((root / "Annotations").glob("*.xml"))}


def expected_objects(keep_difficult=True):
    return {i: [[n, x0, y0, x1, y1, d if keep_difficult else 0] for n, x0, y0, x1, y1 in objs]
            for i, (_, objs, d) in IMAGES.items()}


def split_ids(root, name):
    return (root / "ImageSets" / "Main" / f"{name}.txt").read_text().split()


def pycocotools_api(path):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_voc_to_coco_to_voc_gives_back_the_same_files(voc, tmp_path):
    summary = convert_dataset("voc", voc, tmp_path / "coco", "coco")
    assert summary["classes"] == CLASSES and summary["splits"] == {"train": 2, "val": 2}
    assert any("difficult" in n for n in summary["notes"])
    # pycocotools reads what was written: VOC pixels i..j (1-based) are x = i - 1, w = j - i + 1
    api = pycocotools_api(tmp_path / "coco" / "annotations" / "instances_train.json")
    assert [c["name"] for c in api.loadCats(api.getCatIds())] == CLASSES
    by_file = {img["file_name"]: img["id"] for img in api.dataset["images"]}
    for name, (_, objs, diff) in ((n, IMAGES[n]) for n in SPLITS["train"]):
        anns = api.loadAnns(api.getAnnIds(imgIds=[by_file[f"{name}.jpg"]]))
        assert [a["bbox"] for a in anns] == [[x0 - 1, y0 - 1, x1 - x0 + 1, y1 - y0 + 1] for _, x0, y0, x1, y1 in objs]
        assert [api.cats[a["category_id"]]["name"] for a in anns] == [o[0] for o in objs]
        assert all(a.get("difficult", 0) == diff and a["iscrowd"] == 0 for a in anns)

    convert_dataset("coco", tmp_path / "coco", tmp_path / "back", "voc")
    back = tmp_path / "back"
    assert voc_objects(back) == expected_objects()
    assert (back / "classes.txt").read_text().split() == CLASSES
    assert {n: split_ids(back, n) for n in SPLITS} == SPLITS


def test_coco_root_folder_reads_like_the_voc_it_came_from(voc, tmp_path):
    convert_dataset("voc", voc, tmp_path / "coco", "coco", copy=True)
    cfg = resolve_dataset(tmp_path / "coco")  # a COCO root folder: instances_train.json, instances_val.json
    assert cfg.format == "coco"
    for role in ("train", "val"):
        from_voc = load_dataset(voc_config(voc, classes=CLASSES), role)
        from_coco = load_dataset(cfg, role)
        assert from_coco.classes == CLASSES and len(from_coco) == len(from_voc) == 2
        for i in range(2):  # VOC labels are inclusive pixel indices, COCO's continuous edges
            np.testing.assert_array_equal(from_coco.label(i), from_voc.label(i) + [0, 0, 1, 1, 0, 0])
    assert not os.path.islink(tmp_path / "coco" / "images" / "a.jpg")  # --copy


def test_voc_to_yolo_to_voc_and_the_yolo_numbers(voc, tmp_path):
    summary = convert_dataset("voc", voc, tmp_path / "yolo", "yolo")
    assert any("difficult objects written as plain boxes" in n for n in summary["notes"])
    yolo = tmp_path / "yolo"
    assert (yolo / "classes.txt").read_text().split() == CLASSES
    assert os.path.islink(yolo / "images" / "b.jpg")  # linked by default
    for name, ((w, h), objs, _) in IMAGES.items():
        rows = [line.split() for line in (yolo / "labels" / f"{name}.txt").read_text().splitlines()]
        assert [int(r[0]) for r in rows] == [CLASSES.index(o[0]) for o in objs]
        expected = [((x0 - 1 + x1) / 2 / w, (y0 - 1 + y1) / 2 / h, (x1 - x0 + 1) / w, (y1 - y0 + 1) / h)
                    for _, x0, y0, x1, y1 in objs]
        np.testing.assert_allclose(np.reshape([[float(v) for v in r[1:]] for r in rows], (-1, 4)),
                                   np.reshape(expected, (-1, 4)),
                                   rtol=0, atol=1e-9)
    convert_dataset("yolo", yolo, tmp_path / "back", "voc")
    assert voc_objects(tmp_path / "back") == expected_objects(keep_difficult=False)
    assert (tmp_path / "back" / "classes.txt").read_text().split() == CLASSES
    assert split_ids(tmp_path / "back", "train") == SPLITS["train"]


@pytest.fixture
def labelme(tmp_path):
    src = tmp_path / "labelme"
    shutil.copytree(FIXTURES / "labelme", src)
    write_image(src / "hats.jpg", 64, 48)
    return src


def test_labelme_to_coco_to_voc_equals_labelme_to_voc(labelme, tmp_path):
    convert_dataset("labelme", labelme, tmp_path / "direct", "voc")
    convert_dataset("labelme", labelme, tmp_path / "coco", "coco")
    summary = convert_dataset("coco", tmp_path / "coco" / "annotations" / "instances_default.json",
                              tmp_path / "via", "voc")
    assert summary["classes"] == ["hat", "person", "安全帽"]
    assert any("polygon outlines not kept" in n for n in summary["notes"])
    assert voc_objects(tmp_path / "via") == voc_objects(tmp_path / "direct")
    assert voc_objects(tmp_path / "via")["hats"]  # not trivially empty


def test_coco_polygons_crowd_and_rle_reach_yolo_or_are_reported(tmp_path):
    write_image(tmp_path / "src" / "images" / "p.jpg", 100, 50)
    poly = [10.0, 10.0, 60.0, 10.0, 60.0, 40.0]
    doc = {"images": [{"id": 1, "file_name": "p.jpg", "width": 100, "height": 50}],
           "categories": [{"id": 5, "name": "tri"}, {"id": 2, "name": "blob"}],
           "annotations": [
               {"id": 1, "image_id": 1, "category_id": 5, "bbox": [10, 10, 50, 30], "area": 750,
                "segmentation": [poly], "iscrowd": 0},
               {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 100, 50], "area": 5000,
                "segmentation": {"counts": [0, 5000], "size": [50, 100]}, "iscrowd": 1}]}
    (tmp_path / "src" / "annotations").mkdir(parents=True)
    (tmp_path / "src" / "annotations" / "instances_default.json").write_text(json.dumps(doc))
    summary = convert_dataset("coco", tmp_path / "src", tmp_path / "yolo", "yolo")
    notes = " | ".join(summary["notes"])
    assert "1 crowd regions left out" in notes and "1 polygon outlines not kept" in notes and "1 RLE" in notes
    assert (tmp_path / "yolo" / "labels" / "p.txt").read_text().split() == ["0", "0.35", "0.5", "0.5", "0.6"]
    # and COCO -> VOC keeps the crowd region as a difficult object, saying so
    summary = convert_dataset("coco", tmp_path / "src", tmp_path / "voc", "voc")
    assert any("crowd regions written as difficult" in n for n in summary["notes"])
    assert voc_objects(tmp_path / "voc")["p"] == [["tri", 11, 11, 60, 40, 0], ["blob", 1, 1, 100, 50, 1]]


def write_yolo_ultralytics(root, labels, names):
    """images/{train,val}/NAME.jpg (100x50) and labels/{train,val}/NAME.txt; labels None: no file."""
    for split, files in labels.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            write_image(root / "images" / split / f"{name}.jpg", 100, 50)
            if text is not None:
                (root / "labels" / split).mkdir(parents=True, exist_ok=True)
                (root / "labels" / split / f"{name}.txt").write_text(text)
    (root / "data.yaml").write_text(f"path: /somewhere/else\ntrain: images/train\nval: images/val\nnames: {names}\n")


def test_yolo_reader_ultralytics_layout_segments_and_negatives(tmp_path):
    src = tmp_path / "y"
    write_yolo_ultralytics(src, {"train": {"t1": "1 0.5 0.5 0.2 0.4\n0 0.1 0.2 0.3 0.2 0.2 0.8\n", "t2": None},
                                 "val": {"v1": ""}}, "{0: person, 1: car}")
    summary = convert_dataset("yolo", src, tmp_path / "coco", "coco")
    assert summary["classes"] == ["person", "car"] and summary["splits"] == {"train": 2, "val": 1}
    assert summary["warnings"] == ["1 images have no label file: taken as negatives (Ultralytics' rule)"]
    api = pycocotools_api(tmp_path / "coco" / "annotations" / "instances_train.json")
    [t1] = [i["id"] for i in api.dataset["images"] if i["file_name"] == "t1.jpg"]
    box, seg = api.loadAnns(api.getAnnIds(imgIds=[t1]))
    assert box["bbox"] == pytest.approx([40, 15, 20, 20]) and box["category_id"] == 2
    assert seg["bbox"] == pytest.approx([10, 10, 20, 30])  # the polygon's extent
    np.testing.assert_allclose(seg["segmentation"][0], [10, 10, 30, 10, 20, 40])
    assert len(api.dataset["images"]) == 2


@pytest.mark.parametrize("line, message", [("2 0.5 0.5 0.1 0.1", "class index 2 is not in 0..1"),
                                           ("0 0.5 0.5 1.2 0.1", "coordinates must be normalized"),
                                           ("0 0.5 0.5 0.1", "expected 'class cx cy w h'"),
                                           ("x 0.5 0.5 0.1 0.1", "not a class index")])
def test_yolo_bad_lines_are_refused_naming_file_and_line(tmp_path, line, message):
    src = tmp_path / "y"
    write_yolo_ultralytics(src, {"train": {"t": f"0 0.5 0.5 0.1 0.1\n{line}\n"}, "val": {}}, "[a, b]")
    with pytest.raises(GluondetError, match=rf"t\.txt:2: {message}"):
        convert_dataset("yolo", src, tmp_path / "out", "voc")
    assert not (tmp_path / "out").exists()


def test_refusals(voc, tmp_path):
    with pytest.raises(GluondetError, match="is voc already"):
        convert_dataset("voc", voc, tmp_path / "o", "voc")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(GluondetError, match="not an empty folder"):
        convert_dataset("voc", voc, tmp_path / "full", "coco")
    (voc / "Annotations" / "a.xml").write_text(voc_xml([("cat", 1, 1, 99, 48)], size=(64, 48)))
    with pytest.raises(GluondetError, match=r"a\.xml: error: box-outside-image"):
        convert_dataset("voc", voc, tmp_path / "o", "coco")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "voc"]  # no temporary folder left


def test_cli_convert_lists_formats_and_reports(voc, tmp_path):
    from gluondet.cli import main

    runner = CliRunner(mix_stderr=False)
    result = runner.invoke(main, ["data", "convert", "--help"])
    assert result.exit_code == 0 and all(f in result.output for f in ("voc", "coco", "yolo", "labelme"))
    result = runner.invoke(main, ["data", "convert", "voc", str(voc), str(tmp_path / "y"), "--to", "yolo"])
    assert result.exit_code == 0, result.stderr
    assert "converted 4 images, 5 boxes (dog, cat, bird); splits: train 2, val 2" in result.stdout
    assert "note: 2 difficult objects written as plain boxes" in result.stderr


def test_yolo_photo_with_exif_rotation_is_written_upright(tmp_path):
    from PIL import Image

    src = tmp_path / "y"
    (src / "images").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees: a 20x40 image to the labeller and to Ultralytics
    Image.new("RGB", (40, 20), (10, 20, 30)).save(src / "images" / "r.jpg", exif=exif)
    (src / "labels").mkdir()
    (src / "labels" / "r.txt").write_text("0 0.5 0.5 0.5 0.25\n")
    (src / "classes.txt").write_text("a\n")
    summary = convert_dataset("yolo", src, tmp_path / "voc", "voc")
    assert "1 photos with an EXIF rotation written upright" in summary["warnings"][0]
    assert voc_objects(tmp_path / "voc")["r"] == [["a", 6, 16, 15, 25, 0]]  # 10x10 centred in 20x40
    with Image.open(tmp_path / "voc" / "JPEGImages" / "r.jpg") as im:
        assert im.size == (20, 40)


def test_two_images_with_one_file_name_are_refused(tmp_path):
    for sub in ("a", "b"):
        write_image(tmp_path / "src" / "images" / sub / "x.jpg", 20, 10)
    doc = {"images": [{"id": 1, "file_name": "a/x.jpg", "width": 20, "height": 10},
                      {"id": 2, "file_name": "b/x.jpg", "width": 20, "height": 10}],
           "annotations": [], "categories": [{"id": 1, "name": "c"}]}
    (tmp_path / "src" / "annotations").mkdir()
    (tmp_path / "src" / "annotations" / "instances_default.json").write_text(json.dumps(doc))
    with pytest.raises(GluondetError, match=r"x\.jpg: 2 images have this file name"):
        convert_dataset("coco", tmp_path / "src", tmp_path / "out", "yolo")


def test_a_failed_write_leaves_nothing_and_says_so(voc, tmp_path, monkeypatch):
    import gluondet.data.convert as convert

    def no_links(src, dst):
        raise OSError(1, "Operation not permitted", str(dst))

    monkeypatch.setattr(convert.os, "symlink", no_links)
    with pytest.raises(GluondetError, match=r"out: writing failed, nothing kept .*pass --copy"):
        convert_dataset("voc", voc, tmp_path / "out", "coco")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["voc"]


# ----------------------------------------------------------------------------- fractional boxes
# Continuous boxes (x0, y0, x1, y1) with 0 to 3 decimals, as CVAT (<xmin>200.1</xmin>) and
# LabelImg write them; the image sizes make a YOLO value's last printed digit matter.
FRACTION_SIZES = {"f1": (1000, 750), "f2": (333, 201), "f3": (64, 48)}


def fractional_truth(seed=0):
    """{stem: (size, [(label, x0, y0, x1, y1)])}: whole, 1-, 2- and 3-decimal values mixed."""
    rng = np.random.RandomState(seed)
    truth = {}
    for stem, (w, h) in FRACTION_SIZES.items():
        boxes = []
        for k in range(6):
            decimals = k % 4  # every image holds whole-pixel boxes and fractional ones
            x0, x1 = sorted(rng.uniform(0, w, 2).round(decimals))
            y0, y1 = sorted(rng.uniform(0, h, 2).round(decimals))
            if x1 - x0 >= 1 and y1 - y0 >= 1:
                boxes.append((CLASSES[k % 3], float(x0), float(y0), float(x1), float(y1)))
        truth[stem] = ((w, h), boxes)
    return truth


def decimal_text(value):
    """How a careful VOC writer prints a value: up to 3 decimals, no trailing zeros (as CVAT)."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def write_fractional_source(fmt, root, truth):
    """The truth in format ``fmt`` at ``root``, written here by hand from each format's definition."""
    if fmt == "voc":
        spec = {stem: {"size": size, "xml": voc_xml([(n, decimal_text(x0 + 1), decimal_text(y0 + 1),
                                                      decimal_text(x1), decimal_text(y1))
                                                     for n, x0, y0, x1, y1 in boxes], size=size)}
                for stem, (size, boxes) in truth.items()}
        write_voc(root, spec, splits={})
        (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
        return root
    for stem, ((w, h), _) in truth.items():
        write_image(root / "images" / f"{stem}.jpg", w, h)
    if fmt == "coco":
        doc = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]}
        for i, (stem, ((w, h), boxes)) in enumerate(truth.items(), 1):
            doc["images"].append({"id": i, "file_name": f"{stem}.jpg", "width": w, "height": h})
            doc["annotations"] += [{"id": len(doc["annotations"]) + k, "image_id": i, "iscrowd": 0,
                                    "category_id": CLASSES.index(n) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                                    "area": (x1 - x0) * (y1 - y0)} for k, (n, x0, y0, x1, y1) in enumerate(boxes, 1)]
        (root / "annotations").mkdir()
        (root / "annotations" / "instances_default.json").write_text(json.dumps(doc))
        return root
    (root / "labels").mkdir()
    for stem, ((w, h), boxes) in truth.items():
        (root / "labels" / f"{stem}.txt").write_text("".join(
            f"{CLASSES.index(n)} {(x0 + x1) / 2 / w!r} {(y0 + y1) / 2 / h!r} {(x1 - x0) / w!r} {(y1 - y0) / h!r}\n"
            for n, x0, y0, x1, y1 in boxes))
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def read_boxes(fmt, root):
    """{stem: [(label, x0, y0, x1, y1)]} from a dataset in ``fmt``, read by hand; VOC gives its texts."""
    from xml.etree import ElementTree as ET

    out = {}
    if fmt == "voc":
        for path in sorted((root / "Annotations").glob("*.xml")):
            out[path.stem] = [(o.findtext("name"),) + tuple(o.find("bndbox").findtext(t)
                                                            for t in ("xmin", "ymin", "xmax", "ymax"))
                              for o in ET.parse(path).getroot().iter("object")]
    elif fmt == "coco":
        for path in sorted((root / "annotations").glob("instances_*.json")):
            api = pycocotools_api(path)
            for img in api.dataset["images"]:
                anns = api.loadAnns(api.getAnnIds(imgIds=[img["id"]]))
                out[os.path.splitext(img["file_name"])[0]] = [
                    (api.cats[a["category_id"]]["name"], a["bbox"][0], a["bbox"][1],
                     a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]) for a in anns]
    else:
        names = (root / "classes.txt").read_text().split()
        for path in sorted((root / "labels").glob("*.txt")):
            w, h = FRACTION_SIZES[path.stem]
            rows = [line.split() for line in path.read_text().splitlines()]
            out[path.stem] = [(names[int(r[0])], (float(r[1]) - float(r[3]) / 2) * w, (float(r[2]) - float(r[4]) / 2) * h,
                               (float(r[1]) + float(r[3]) / 2) * w, (float(r[2]) + float(r[4]) / 2) * h) for r in rows]
    return out


def assert_boxes_are_the_truth(fmt, root, truth):
    """VOC: the very texts of the truth (integers stay integers); COCO and YOLO: its numbers to their precision."""
    got = read_boxes(fmt, root)
    assert sorted(got) == sorted(truth)
    for stem, ((w, h), boxes) in truth.items():
        if fmt == "voc":
            assert got[stem] == [(n, decimal_text(x0 + 1), decimal_text(y0 + 1), decimal_text(x1), decimal_text(y1))
                                 for n, x0, y0, x1, y1 in boxes]
            continue
        assert [b[0] for b in got[stem]] == [b[0] for b in boxes]
        # COCO holds JSON floats; YOLO prints 10 significant digits of a fraction of the side
        atol = 1e-9 if fmt == "coco" else 1e-9 * max(w, h)
        np.testing.assert_allclose([b[1:] for b in got[stem]], [b[1:] for b in boxes], rtol=0, atol=atol)


FORMATS = ("voc", "coco", "yolo")
# every format to every other and back, directly and through the third one
ROUTES = [(source, middle) for source in FORMATS
          for n in (1, 2) for middle in itertools.permutations([f for f in FORMATS if f != source], n)]


@pytest.mark.parametrize("source, middle", ROUTES, ids=["-".join((s,) + m + (s,)) for s, m in ROUTES])
def test_fractional_boxes_come_back_with_the_sources_numbers(tmp_path, source, middle):
    truth = fractional_truth()
    assert any(b[1] != int(b[1]) for _, boxes in truth.values() for b in boxes)  # fractional ones,
    assert any(b[1:] == tuple(map(int, b[1:])) for _, boxes in truth.values() for b in boxes)  # and whole ones
    here, fmt = write_fractional_source(source, tmp_path / source, truth), source
    for k, target in enumerate(middle + (source,)):
        summary = convert_dataset(fmt, here, tmp_path / f"{k}-{target}", target)
        assert not any("rounded" in n or "widened" in n for n in summary["notes"]), summary["notes"]
        here, fmt = tmp_path / f"{k}-{target}", target
        assert_boxes_are_the_truth(fmt, here, truth)  # every step holds the numbers, not just the last


def test_voc_integer_widens_to_whole_pixels_and_counts(tmp_path):
    from gluondet.cli import main

    truth = fractional_truth()
    src = write_fractional_source("coco", tmp_path / "coco", truth)
    runner = CliRunner(mix_stderr=False)
    result = runner.invoke(main, ["data", "convert", "coco", str(src), str(tmp_path / "int"), "--voc-integer"])
    assert result.exit_code == 0, result.stderr
    fractional = sum(any(v != int(v) for v in b[1:]) for _, boxes in truth.values() for b in boxes)
    assert f"note: {fractional} boxes not on whole pixels were widened" in result.stderr
    got = read_boxes("voc", tmp_path / "int")
    for stem, (_, boxes) in truth.items():  # the smallest whole-pixel box covering each, 1-based inclusive
        assert got[stem] == [(n, str(int(np.floor(x0)) + 1), str(int(np.floor(y0)) + 1),
                              str(int(np.ceil(x1))), str(int(np.ceil(y1)))) for n, x0, y0, x1, y1 in boxes]
    result = runner.invoke(main, ["data", "convert", "coco", str(src), str(tmp_path / "y"), "--to", "yolo",
                                  "--voc-integer"])
    assert result.exit_code == 2 and "--voc-integer: applies to --to voc only" in result.stderr


def test_more_than_three_decimals_are_rounded_and_counted(tmp_path):
    truth = {"f3": ((64, 48), [("cat", 1.23456, 2.0, 30.5, 40.0001)])}
    src = write_fractional_source("coco", tmp_path / "coco", truth)
    summary = convert_dataset("coco", src, tmp_path / "voc", "voc")
    assert "1 boxes rounded to 3 decimals of a pixel" in summary["notes"]
    assert read_boxes("voc", tmp_path / "voc")["f3"] == [("cat", "2.235", "3", "30.5", "40")]
