"""How long `data check` takes on a dataset holding a hostile XML (billion laughs, an external
entity), as a ratio to the same dataset without it: refusing entities must cost no more than
reading a plain annotation. (This was a `< 1 s` limit inside a test; speed lives here.)

Legs alternate (clean, hostile, clean, hostile, ...), each on a fresh copy so no cache helps.
Run: .venv/bin/python scripts/bench/bench_hostile_xml.py [ROUNDS]
"""
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "unit" / "fixtures"
N_CLEAN = 50


def make_voc(root, hostile):
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    ok, jpg = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))
    for i in range(N_CLEAN):
        (root / "JPEGImages" / f"{i:04d}.jpg").write_bytes(jpg.tobytes())
        (root / "Annotations" / f"{i:04d}.xml").write_text(
            "<annotation><size><width>64</width><height>48</height></size><object><name>cat</name>"
            "<bndbox><xmin>5</xmin><ymin>5</ymin><xmax>20</xmax><ymax>20</ymax></bndbox></object></annotation>")
    if hostile:
        for name in ("billion_laughs.xml", "external_entity.xml"):
            shutil.copyfile(FIXTURES / name, root / "Annotations" / name)
    return root


def check_seconds(tmp, k, hostile):
    from gluondet.config import DatasetConfig
    from gluondet.data import check_dataset

    root = make_voc(tmp / f"{'hostile' if hostile else 'clean'}{k}", hostile)
    cfg = DatasetConfig(name="bench", format="voc", root=root, classes=["cat"])
    start = time.perf_counter()
    result = check_dataset(cfg)
    seconds = time.perf_counter() - start
    assert [p.problem for p in result.problems] == (["xml-entities"] * 2 if hostile else [])
    return seconds


def main():
    tmp = Path(tempfile.mkdtemp(prefix="gluondet-bench-"))
    try:
        legs = {False: [], True: []}
        for k in range(ROUNDS):
            for hostile in (False, True):
                legs[hostile].append(check_seconds(tmp, k, hostile))
        clean, hostile = statistics.median(legs[False]), statistics.median(legs[True])
        print(f"data check, {N_CLEAN} annotations, median of {ROUNDS} alternated legs (no cache)")
        print(f"clean                     {clean * 1000:7.1f} ms  1.00x")
        print(f"+ billion laughs + entity {hostile * 1000:7.1f} ms  {hostile / clean:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
