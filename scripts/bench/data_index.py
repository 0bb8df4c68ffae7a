"""How long checking and loading a VOC dataset takes: against GluonCV's VOCDetection, and as it grows.

GluonCV parses every XML in VOCDetection's constructor (its baseline here); gluondet parses every
XML, reads every image header and runs every check the first time, then reuses its cache.
Run: .venv/bin/python scripts/bench/data_index.py [N]

``--scaling 1000,10000,50000,100000`` instead times the cached ``check_dataset`` at each size
(small generated files; each size is built once and checked once to fill the cache). Each timed
check runs in a fresh process, as ``gluondet data check`` does: a process that has already
checked a bigger folder reuses the heap that check freed, so there a smaller size read its cache
with about 1/20 of the page faults of a bigger one and the ratios came out too high. Before each
timed check the file-system caches of that size are warmed the same way (every annotation and
image stat'ed, every cache file read). The sizes take turns over --repeat rounds, in alternating
direction (1k 10k 50k 100k, then 100k 50k 10k 1k), and each round's ratio of one size to the
previous is taken within that round: the median and the range over rounds are printed, with the
load average seen during the run. A linear check gives ratios equal to the size ratios (5x for
10k -> 50k, 2x for 50k -> 100k). Wall and CPU seconds are both printed: on a shared machine, wall
time carries the other processes' load; CPU time (user + system, page faults included) is the
check's own.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
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


def warm_file_system(voc):
    """Stat every annotation and image and read every cache file: the same warm start for each size."""
    for sub in ("Annotations", "JPEGImages"):
        for entry in os.scandir(voc / sub):
            entry.stat()
    for path in (voc / ".gluondet_cache").iterdir():
        path.read_bytes()


def time_one_check(voc):
    """One leg of --scaling, in its own process: a cached check of ``voc``, printed as JSON."""
    from gluondet.config import DatasetConfig
    from gluondet.data import check_dataset

    cfg = DatasetConfig(name="bench", format="voc", root=Path(voc), classes=list(CLASSES),
                        splits={"train": "trainval"})
    wall, result = timed(lambda: check_dataset(cfg, "train"))
    assert result.ok
    print(json.dumps({"wall": wall, "cpu": timed.cpu, "files": len(result.entries)}))


def check_in_fresh_process(voc):
    out = subprocess.run([sys.executable, __file__, "--time-check", str(voc)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def scaling(sizes, repeat):
    """The cached check at each size, each in a fresh process, sizes alternating (module docstring)."""
    tmp = Path(tempfile.mkdtemp(prefix="gluondet-bench-"))
    try:
        vocs = {n: make_voc(tmp / str(n), n) for n in sizes}
        for n in sizes:
            assert check_in_fresh_process(vocs[n])["files"] == n  # cold: parses and fills the cache
        times = {n: [] for n in sizes}  # one (wall, cpu) per round
        loads = [os.getloadavg()[0]]
        for r in range(repeat):
            for n in (sizes if r % 2 == 0 else sizes[::-1]):
                warm_file_system(vocs[n])
                got = check_in_fresh_process(vocs[n])
                assert got["files"] == n
                times[n].append((got["wall"], got["cpu"]))
                loads.append(os.getloadavg()[0])
        report_scaling(sizes, times, loads)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report_scaling(sizes, times, loads):
    print(f"cached check_dataset, a fresh process each, median of {len(times[sizes[0]])} rounds; "
          f"load average (1 min) {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs")
    print("  files      wall  per 1k      cpu  per 1k   ratio to the previous size within a round: median [min-max]")
    previous = None
    for n in sizes:
        wall, cpu = (statistics.median(t[k] for t in times[n]) for k in (0, 1))
        line = f"{n:>7} {wall:7.2f} s {1000 * wall / n:6.3f} {cpu:6.2f} s {1000 * cpu / n:6.3f}"
        if previous:
            spans = []
            for k, label in ((1, "cpu"), (0, "wall")):
                ratios = [b[k] / a[k] for a, b in zip(times[previous], times[n])]
                spans.append(f"{label} {statistics.median(ratios):5.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]")
            line += f"   x{n // previous} files: " + ", ".join(spans)
        print(line)
        previous = n


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=10000, help="images, against GluonCV")
    parser.add_argument("--scaling", metavar="N1,N2,...", help="time the cached check at these sizes")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--time-check", metavar="VOC", help=argparse.SUPPRESS)  # one leg of --scaling
    args = parser.parse_args()
    if args.time_check:
        time_one_check(args.time_check)
    elif args.scaling:
        scaling([int(v) for v in args.scaling.split(",")], args.repeat)
    else:
        against_gluoncv(args.n)


if __name__ == "__main__":
    main()
