"""gluondet.image.read_image (Pillow, the one reader) against OpenCV's imdecode + cvtColor (what
training used before), on the same JPEG and PNG files: decoding is the data loader's main cost.

Legs alternate (OpenCV, gluondet, OpenCV, gluondet, ...); the ratio is gluondet / OpenCV, so below
1.00x gluondet is faster. Run: .venv/bin/python scripts/bench/bench_image_read.py [ROUNDS]
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
FILES = 20
SIZES = {"jpg": (480, 640), "png": (480, 640)}


def opencv_read(path):
    data = np.fromfile(str(path), dtype=np.uint8)
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)


def make_files(folder, ext):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(FILES):
        h, w = SIZES[ext]
        image = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (9, 9), 3)
        path = folder / f"{i}.{ext}"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


def leg(read, paths):
    start = time.perf_counter()
    for p in paths:
        read(p)
    return (time.perf_counter() - start) / len(paths)


def main():
    from gluondet.image import read_image

    tmp = Path(tempfile.mkdtemp(prefix="gluondet-bench-"))
    try:
        print(f"{FILES} files each, median of {ROUNDS} alternated legs, ms per image")
        for ext in SIZES:
            paths = make_files(tmp, ext)
            # the same pixels (PNG exactly; JPEG decoders may round differently)
            diff = max(np.abs(read_image(p).astype(int) - opencv_read(p)).max() for p in paths[:3])
            times = {"opencv": [], "gluondet": []}
            for _ in range(ROUNDS):
                times["opencv"].append(leg(opencv_read, paths))
                times["gluondet"].append(leg(read_image, paths))
            base, ours = statistics.median(times["opencv"]), statistics.median(times["gluondet"])
            print(f"{ext} {SIZES[ext][1]}x{SIZES[ext][0]}: OpenCV {base * 1000:6.2f} ms   "
                  f"gluondet.image {ours * 1000:6.2f} ms   {ours / base:.2f}x   (max pixel diff {diff})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
