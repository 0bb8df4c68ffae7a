"""Tiny VOC folders written by the tests themselves (images with cv2, XML by hand)."""
import shutil
from pathlib import Path

import cv2
import numpy as np

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def write_image(path, w, h, kind="color"):
    """A w x h image with a known pattern; kind: color, gray, gray16, alpha."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (255, 0, 0)  # BGR blue on the left half
    img[:, w // 2:] = (0, 0, 255)  # red on the right half
    if kind == "gray":
        img = np.full((h, w), 100, np.uint8)
    elif kind == "gray16":
        img = np.full((h, w), 100 * 256, np.uint16)
    elif kind == "alpha":
        img = np.dstack([img, np.full((h, w), 7, np.uint8)])
    assert cv2.imwrite(str(path), img)
    return path


def voc_xml(objects, size=None, filename=None, difficult=None):
    """VOC XML text; objects are (name, xmin, ymin, xmax, ymax) in 1-based file coordinates."""
    parts = ["<annotation>"]
    if filename:
        parts.append(f"<filename>{filename}</filename>")
    if size:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    for name, x0, y0, x1, y1 in objects:
        flag = "" if difficult is None else f"<difficult>{difficult}</difficult>"
        parts.append(f"<object><name>{name}</name>{flag}<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                     f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
    parts.append("</annotation>\n")
    return "".join(parts)


def write_voc(root, images, splits=None):
    """A VOC folder: images maps id -> dict(size=(w, h), objects=[...], ext='.jpg', xml=None, kind='color').

    ``xml`` (text) replaces the generated annotation; ``ext=None`` writes no image. Returns root.
    """
    root = Path(root)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    for image_id, spec in images.items():
        w, h = spec.get("size", (64, 48))
        xml = spec.get("xml")
        if xml is None:
            xml = voc_xml(spec.get("objects", []), size=(w, h))
        (root / "Annotations" / f"{image_id}.xml").write_text(xml, encoding="utf-8")
        ext = spec.get("ext", ".jpg")
        if ext:
            write_image(root / "JPEGImages" / f"{image_id}{ext}", w, h, spec.get("kind", "color"))
    for name, ids in (splits if splits is not None else {"train": list(images)}).items():
        path = root / "ImageSets" / "Main" / f"{name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    return root


def copy_fixture(name, dst):
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURES / name, dst)
    return dst


def voc_config(root, classes=None, splits=None):
    from gluondet.config import DatasetConfig, VOC_DEFAULT_SPLITS

    return DatasetConfig(name=Path(root).name, format="voc", root=Path(root), classes=classes,
                         splits=dict(splits or VOC_DEFAULT_SPLITS))
