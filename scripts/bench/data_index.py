"""How long checking and loading a VOC dataset takes: against GluonCV's VOCDetection, and as it grows.

GluonCV parses every XML in VOCDetection's constructor (its baseline here); gluondet parses every
XML, reads every image header and runs every check the first time, then reuses its cache.
Run: .venv/bin/python scripts/bench/data_index.py [N]

``--scaling 1000,10000,50000,100000`` instead times the cached ``check_dataset`` at each size
(small generated files; each size is built once and checked once to fill the cache), the sizes
taking turns over --repeat rounds, and prints seconds per 1,000 files and each size's time over
the previous one's: a linear check gives ratios equal to the size ratios (5x for 10k -> 50k,
2x for 50k -> 100k). Wall and CPU seconds are both printed: on a shared machine, wall time
carries the other processes' load; CPU time is the check's own.
"""
import argparse
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

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


def against_gluoncv(n_images):
    from gluondet.config import DatasetConfig
    from gluondet.data import check_dataset, load_dataset

    tmp = Path(tempfile.mkdtemp(prefix="gluondet-bench-"))
    try:
        make_voc(tmp, n_images)
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
        assert len(ds) == len(gcv) == n_images and result.ok
        # Same boxes as GluonCV reads (both subtract 1 from VOC's 1-based coordinates).
        assert all(np.allclose(ds.label(i)[:, :5], gcv._label_cache[i][:, :5]) for i in range(0, n_images, 997))
        print(f"{n_images} annotations                                    wall   ratio     cpu   ratio")
        for label, key, wall in (("gluoncv VOCDetection init (parse XML only)", "base", base),
                                 ("gluondet check, cold (parse + headers + check)", "cold", cold),
                                 ("gluondet check, cached", "warm", warm),
                                 ("gluondet load_dataset, cached", "load", load)):
            print(f"{label:<47} {wall:6.2f} s {wall / base:5.2f}x {cpu[key]:6.2f} s {cpu[key] / cpu['base']:5.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def scaling(sizes, repeat):
    """Best wall and CPU seconds of a cached check at each size, sizes alternating."""
    from gluondet.config import DatasetConfig
    from gluondet.data import check_dataset

    tmp = Path(tempfile.mkdtemp(prefix="gluondet-bench-"))
    try:
        configs = {}
        for n in sizes:
            voc = make_voc(tmp / str(n), n)
            configs[n] = DatasetConfig(name=f"bench{n}", format="voc", root=voc, classes=list(CLASSES),
                                       splits={"train": "trainval"})
            assert check_dataset(configs[n], "train").ok  # cold: parses and fills the cache
        best = {n: [float("inf"), float("inf")] for n in sizes}
        for _ in range(repeat):
            for n in sizes:
                wall, result = timed(lambda n=n: check_dataset(configs[n], "train"))
                assert len(result.entries) == n
                best[n] = [min(best[n][0], wall), min(best[n][1], timed.cpu)]
                del result
        print(f"cached check_dataset, best of {repeat}       wall   per 1k  ratio      cpu   per 1k  ratio")
        previous = None
        for n in sizes:
            wall, cpu = best[n]
            ratio = (f"{wall / best[previous][0]:5.2f}x", f"{cpu / best[previous][1]:5.2f}x") if previous else ("    -", "    -")
            print(f"{n:>7} files (x{n / previous if previous else 1:<4.0f} files)      {wall:7.2f} s {1000 * wall / n:6.3f} "
                  f"{ratio[0]}  {cpu:7.2f} s {1000 * cpu / n:6.3f} {ratio[1]}")
            previous = n
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=10000, help="images, against GluonCV")
    parser.add_argument("--scaling", metavar="N1,N2,...", help="time the cached check at these sizes")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.scaling:
        scaling([int(v) for v in args.scaling.split(",")], args.repeat)
    else:
        against_gluoncv(args.n)


if __name__ == "__main__":
    main()
