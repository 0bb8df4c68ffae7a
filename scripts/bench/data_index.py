"""How long checking and loading a 10,000-image VOC dataset takes, against GluonCV's VOCDetection.

GluonCV parses every XML in VOCDetection's constructor (its baseline here); gluondet parses every
XML, reads every image header and runs every check the first time, then reuses its cache.
Run: .venv/bin/python scripts/bench/data_index.py [N]
"""
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
CLASSES = ("hat", "person")


def make_voc(root, n):
    """VOCdevkit/VOC2007 layout (GluonCV needs it) with n small images of 1-3 objects each."""
    voc = root / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    ok, jpg = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))
    rng = np.random.RandomState(0)
    ids = [f"{i:06d}" for i in range(n)]
    for image_id in ids:
        (voc / "JPEGImages" / f"{image_id}.jpg").write_bytes(jpg.tobytes())
        objects = "".join(
            f"<object><name>{CLASSES[rng.randint(2)]}</name><difficult>0</difficult><bndbox><xmin>{x}</xmin>"
            f"<ymin>{y}</ymin><xmax>{x + 10}</xmax><ymax>{y + 10}</ymax></bndbox></object>"
            for x, y in rng.randint(1, 30, size=(rng.randint(1, 4), 2)))
        (voc / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>64</width><height>48</height>"
            f"<depth>3</depth></size>{objects}</annotation>")
    (voc / "ImageSets/Main/trainval.txt").write_text("\n".join(ids) + "\n")
    return voc


def timed(fn):
    """(wall seconds, result); CPU seconds are printed too, since wall time suffers on a shared machine."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    timed.cpu = time.process_time() - cpu
    return time.perf_counter() - start, out


def main():
    from gluondet.config import DatasetConfig
    from gluondet.data import check_dataset, load_dataset

    tmp = Path(tempfile.mkdtemp(prefix="gluondet-bench-"))
    try:
        make_voc(tmp, N)
        from gluoncv.data import VOCDetection

        class Helmet(VOCDetection):
            CLASSES = CLASSES

        base, gcv = timed(lambda: Helmet(root=str(tmp), splits=[(2007, "trainval")]))
        cpu = {"base": timed.cpu}
        cfg = DatasetConfig(name="bench", format="voc", root=tmp / "VOC2007", classes=list(CLASSES),
                            splits={"train": "trainval"})
        cold, result = timed(lambda: check_dataset(cfg, "train"))
        cpu["cold"] = timed.cpu
        warm, _ = timed(lambda: check_dataset(cfg, "train"))
        cpu["warm"] = timed.cpu
        load, ds = timed(lambda: load_dataset(cfg, "train"))
        cpu["load"] = timed.cpu
        assert len(ds) == len(gcv) == N and result.ok
        # Same boxes as GluonCV reads (both subtract 1 from VOC's 1-based coordinates).
        assert all(np.allclose(ds.label(i)[:, :5], gcv._label_cache[i][:, :5]) for i in range(0, N, 997))
        print(f"{N} annotations                                    wall   ratio     cpu   ratio")
        for label, key, wall in (("gluoncv VOCDetection init (parse XML only)", "base", base),
                                 ("gluondet check, cold (parse + headers + check)", "cold", cold),
                                 ("gluondet check, cached", "warm", warm),
                                 ("gluondet load_dataset, cached", "load", load)):
            print(f"{label:<47} {wall:6.2f} s {wall / base:5.2f}x {cpu[key]:6.2f} s {cpu[key] / cpu['base']:5.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
