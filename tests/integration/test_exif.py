"""Phone photos with EXIF orientation 6, annotated the LabelImg way and the labelme way, through
the real commands: both train, evaluate as the same pictures do without EXIF, and detect puts
boxes on the pixels the annotator saw (files generated here, the shared tiny SSD run).

The picture P is a held-back shapes image cropped to 192 x 176 (not square, so its size tells the
two readings apart). LabelImg way: the file stores P itself, with EXIF 6 ("turn clockwise to
view"), and the annotation (size and boxes) describes the stored P, as LabelImg writes it. labelme
way: the file stores P turned counter-clockwise, EXIF 6 turns it back, and the annotation describes
P as labelme shows it. The reference stores P with no EXIF at all.
"""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gluondet.data.synth import SHAPES_CLASSES

from cli_helpers import invoke_cli

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 192, 176
N_PHOTOS = 8


def _cli(*args):
    return invoke_cli(args)


def _pictures(held_back_shapes):
    """N_PHOTOS held-back shapes pictures, cropped to HEIGHT rows with every object inside."""
    pictures, seed = [], 2000
    while len(pictures) < N_PHOTOS:
        sample = held_back_shapes(seed=seed)
        seed += 1
        if sample.boxes[:, 3].max() < HEIGHT:
            pictures.append((sample.image[:HEIGHT], sample.boxes, sample.class_ids))
    return pictures


def _xml(image_id, size, boxes, class_ids):
    objects = "".join(
        f"<object><name>{SHAPES_CLASSES[c]}</name><difficult>0</difficult><bndbox><xmin>{x0 + 1}</xmin>"
        f"<ymin>{y0 + 1}</ymin><xmax>{x1 + 1}</xmax><ymax>{y1 + 1}</ymax></bndbox></object>"
        for (x0, y0, x1, y1), c in zip(boxes.tolist(), class_ids.tolist()))
    return (f"<annotation><filename>{image_id}.jpg</filename><size><width>{size[0]}</width>"
            f"<height>{size[1]}</height><depth>3</depth></size>{objects}</annotation>")


def _write_voc(root, pictures, way):
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    ids = [f"photo_{i}" for i in range(len(pictures))]
    for image_id, (picture, boxes, class_ids) in zip(ids, pictures):
        stored = np.rot90(picture, k=1) if way == "labelme" else picture  # k=1: counter-clockwise
        exif = Image.Exif()
        if way != "reference":
            exif[0x0112] = 6
        Image.fromarray(np.ascontiguousarray(stored)).save(
            root / "JPEGImages" / f"{image_id}.jpg", exif=exif.tobytes(), quality=100, subsampling=0)
        (root / "Annotations" / f"{image_id}.xml").write_text(_xml(image_id, (WIDTH, HEIGHT), boxes, class_ids))
    for split in ("train", "val"):
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory, held_back_shapes):
    pictures = _pictures(held_back_shapes)
    base = tmp_path_factory.mktemp("exif")
    return {way: _write_voc(base / way, pictures, way) for way in ("reference", "labelimg", "labelme")}


def _eval_map(run, root):
    result = _cli("eval", run, "--dataset", root, "--split", "val", "--metric", "voc", "--json", "-",
                  "--num-workers", 0, "-q")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["map"]


def test_both_ways_evaluate_as_the_pictures_without_exif(trained_tiny_run, photos):
    reference = _eval_map(trained_tiny_run, photos["reference"])
    assert reference > 0.3  # the tiny run finds these shapes, so a misread picture would show
    # LabelImg way: the stored pixels, decoded exactly as the reference's
    assert _eval_map(trained_tiny_run, photos["labelimg"]) == reference
    # labelme way: the turned pixels (one more JPEG rounding of the turned copy)
    assert _eval_map(trained_tiny_run, photos["labelme"]) == pytest.approx(reference, abs=0.05)


def test_data_check_warns_about_the_labelimg_way_only(photos):
    for way, expected in (("labelimg", N_PHOTOS), ("labelme", 0), ("reference", 0)):
        result = _cli("data", "check", photos[way], "--json")
        assert result.exit_code == 0, result.stderr
        warned = [p for p in json.loads(result.stdout) if p["problem"] == "exif-orientation"]
        assert len(warned) == expected, (way, warned)
        assert all("read as stored" in p["detail"] for p in warned)


def test_detect_turns_the_photo_and_finds_what_the_reference_finds(trained_tiny_run, photos, box_iou):
    boxes = {}
    for way in ("reference", "labelme"):
        result = _cli("detect", photos[way] / "JPEGImages", "--run", trained_tiny_run, "--no-draw",
                      "--json", "-", "--thresh", "0.3")
        assert result.exit_code == 0, result.stderr
        images = json.loads(result.stdout)["images"]
        assert [(r["width"], r["height"]) for r in images] == [(WIDTH, HEIGHT)] * N_PHOTOS
        boxes[way] = {Path(r["file"]).name: r["boxes"] for r in images}
    assert sum(map(len, boxes["reference"].values())) >= N_PHOTOS  # something to compare
    for name, reference in boxes["reference"].items():
        for ref in reference:
            same = [b for b in boxes["labelme"][name] if b["class"] == ref["class"]]
            assert max((box_iou(ref["bbox"], b["bbox"]) for b in same), default=0) > 0.8, (name, ref, same)


@pytest.mark.parametrize("way", ["labelimg", "labelme"])
def test_both_ways_train(photos, way, tmp_path):
    run_dir = tmp_path / "run"
    result = _cli("train", "--dataset", photos[way], "--model", "tiny_ssd", "--data-shape", 64, "--epochs", 1,
                  "--max-iters", 1, "--batch-size", 2, "--num-workers", 0, "--out", run_dir, "-q")
    assert result.exit_code == 0, result.stderr
    assert (run_dir / "best.params").is_file()
