"""Whole-file image check speed: what `gluondet data check` adds to find cut and corrupt images.

Legs, alternated A B A B on the same files (the page cache is warm after the first pass):
- header: Pillow reads each image header (what the index did before; the floor);
- quick: gluondet's check as run by default (end markers; Pillow decodes only files without one);
- full-serial: Pillow decodes every pixel, one file after another;
- full-threads: the same in gluondet's thread pool (--full-decode).
Prints seconds per leg and ratios against `header` and `full-serial`; no cache is involved.

    .venv/bin/python scripts/bench/bench_check_images.py [--images 400] [--size 640] [--rounds 2]
"""
import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np


def make_images(folder, n, size):
    paths = []
    for i in range(n):
        rng = np.random.RandomState(i)
        img = cv2.resize(rng.randint(0, 256, (size // 8, size // 8, 3)).astype(np.uint8), (size, size))
        path = Path(folder) / f"img_{i:04d}.jpg"
        cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        paths.append(str(path))
    return paths


def main():
    from gluondet.image import read_header
    from gluondet.data.integrity import file_problem
    from gluondet.runtime import usable_cpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    workers = usable_cpus()
    legs = {
        "header": lambda paths: [read_header(p) for p in paths],
        "quick": lambda paths: [file_problem(p) for p in paths],
        "full-serial": lambda paths: [file_problem(p, True) for p in paths],
        "full-threads": lambda paths: list(ThreadPoolExecutor(workers).map(file_problem, paths,
                                                                           [True] * len(paths))),
    }
    with tempfile.TemporaryDirectory() as folder:
        paths = make_images(folder, args.images, args.size)
        times = {name: [] for name in legs}
        for _ in range(args.rounds):
            for name, leg in legs.items():
                t0 = time.perf_counter()
                assert all(r is None or isinstance(r, tuple) for r in leg(paths))
                times[name].append(time.perf_counter() - t0)
    best = {name: min(t) for name, t in times.items()}
    print(f"{args.images} JPEGs of {args.size}x{args.size}, {workers} usable CPUs, best of {args.rounds}:")
    for name, t in best.items():
        print(f"  {name:13s} {t:7.3f} s  {t / best['header']:6.1f}x header  "
              f"{best['full-serial'] / t:5.2f}x faster than full-serial")


if __name__ == "__main__":
    main()
