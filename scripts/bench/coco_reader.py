"""Reading a COCO-sized instances JSON: gluondet's COCO reader against pycocotools' own ``COCO()``.

Writes a synthetic instances file like COCO train2017 (--images images, --anns annotations with
polygon segmentations, 80 categories) and an image folder of tiny JPEGs, reads it once with
gluondet to fill the image-header cache (as the first training run does), then times the legs,
alternated (A B A B), each in a fresh process so that its peak memory is its own:
  A  pycocotools: ``COCO(path)`` (json.load + createIndex);
  B  gluondet: ``read_coco_dataset`` (json.load, the index, every image found in the folder, its
     header size from the cache, every box converted and validated).
Prints the best wall and CPU seconds and the highest peak RSS (and its rise over the process
before reading) of each, and the ratios.

    .venv/bin/python scripts/bench/coco_reader.py [--images 120000] [--anns 860000] [--repeat 2] [--tmp /dev/shm]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

LEG = r'''
import json, resource, sys, time
from pathlib import Path

def rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024

which, root = sys.argv[1], Path(sys.argv[2])
ann = root / "annotations" / "instances_train.json"
if which == "pycocotools":
    import contextlib, io
    from pycocotools.coco import COCO
    before = rss_kb()
    wall, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        api = COCO(str(ann))
    count = len(api.imgs)
else:
    from gluondet.config import resolve_dataset
    from gluondet.data.coco import read_coco_dataset
    cfg = resolve_dataset(ann)
    before = rss_kb()
    wall, cpu = time.perf_counter(), time.process_time()
    index = read_coco_dataset(cfg, "train")
    count = len(index.entries)
    assert not [p for p in index.problems if p.severity == "error"], index.problems[:3]
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"wall": wall, "cpu": cpu, "peak_kb": peak, "rise_kb": peak - before, "images": count}))
'''


def write_coco(root, num_images, num_anns, seed=0):
    """annotations/instances_train.json (written piece by piece) and train/ with tiny JPEGs."""
    rng = np.random.default_rng(seed)
    images_dir = root / "train"
    images_dir.mkdir(parents=True)
    ok, jpg = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))
    for i in range(num_images):
        (images_dir / f"{i:012d}.jpg").write_bytes(jpg.tobytes())
    path = root / "annotations" / "instances_train.json"
    path.parent.mkdir()
    owners = np.sort(rng.integers(0, num_images, num_anns))
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"info": {"description": "synthetic"}, "licenses": [], "images": [')
        f.write(",".join(json.dumps({"id": i + 1, "file_name": f"{i:012d}.jpg", "width": 8, "height": 8,
                                     "license": 1, "date_captured": "2017-01-01 00:00:00"})
                         for i in range(num_images)))
        f.write('], "categories": [')
        f.write(",".join(json.dumps({"id": c + 1, "name": f"class{c}", "supercategory": "thing"})
                         for c in range(80)))
        f.write('], "annotations": [')
        for start in range(0, num_anns, 10000):
            chunk = []
            for k in range(start, min(num_anns, start + 10000)):
                x, y = (round(v, 2) for v in rng.uniform(0, 4, 2))
                w, h = (round(v, 2) for v in rng.uniform(0.5, 4, 2))
                polygon = [round(float(v), 2) for v in rng.uniform(0, 8, 2 * int(rng.integers(6, 20)))]
                chunk.append(json.dumps({"segmentation": [polygon], "area": round(w * h, 3), "iscrowd": 0,
                                         "image_id": int(owners[k]) + 1, "bbox": [x, y, w, h],
                                         "category_id": int(rng.integers(1, 81)), "id": k + 1}))
            f.write(("," if start else "") + ",".join(chunk))
        f.write("]}")
    return path


def run_leg(which, root):
    out = subprocess.run([sys.executable, "-c", LEG, which, str(root)], capture_output=True, text=True,
                         check=False)
    if out.returncode:
        sys.exit(f"{which} leg failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120000)
    parser.add_argument("--anns", type=int, default=860000)
    parser.add_argument("--repeat", type=int, default=2, help="rounds of A B")
    parser.add_argument("--tmp", help="where to write the data (e.g. /dev/shm: 120,000 small files)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gluondet-coco-", dir=args.tmp) as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        path = write_coco(root, args.images, args.anns)
        print(f"{args.images} images, {args.anns} annotations with polygons: {path.stat().st_size / 2**20:.0f} MiB "
              f"of JSON (written in {time.perf_counter() - t0:.0f} s)")
        cold = run_leg("gluondet", root)
        print(f"gluondet, first read (image headers read and cached): {cold['wall']:.1f} s wall")
        legs = {"pycocotools": [], "gluondet": []}
        for _ in range(args.repeat):
            for which in legs:
                legs[which].append(run_leg(which, root))
    best = {k: {"wall": min(r["wall"] for r in v), "cpu": min(r["cpu"] for r in v),
                "peak": max(r["peak_kb"] for r in v) / 2**10, "rise": max(r["rise_kb"] for r in v) / 2**10}
            for k, v in legs.items()}
    for which, b in best.items():
        print(f"{which:<12} wall {b['wall']:6.2f} s  cpu {b['cpu']:6.2f} s  peak RSS {b['peak']:6.0f} MiB "
              f"(+{b['rise']:.0f} MiB while reading)")
    ref, ours = best["pycocotools"], best["gluondet"]
    print(f"gluondet / pycocotools: wall {ours['wall'] / ref['wall']:.2f}x, cpu {ours['cpu'] / ref['cpu']:.2f}x, "
          f"peak {ours['peak'] / ref['peak']:.2f}x, rise {ours['rise'] / ref['rise']:.2f}x (below 1 is better)")


if __name__ == "__main__":
    main()
