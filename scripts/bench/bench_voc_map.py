"""VOC mAP speed: gluondet's vectorised metric against GluonCV's on the same detections.

2,000 images, about 50 detections each (padded with -1 per batch, as a validation loop passes
them), 20 classes, about 3 objects per image with some difficult ones. Times update() over all
batches plus get(), for both the area and the VOC07 11-point metric, the legs alternated in one run
(GluonCV, gluondet, gluondet + matching, GluonCV, ... --repeat times; the best of each counts);
asserts both give the same numbers (to 1e-6) and prints the timings, their ratio and the load
average. The third leg adds the ``matching()`` call the eval folder's analysis makes after get().

    .venv/bin/python scripts/bench/bench_voc_map.py [--images 2000] [--dets 50] [--batch-size 8]
"""
import argparse
import os
import time
import warnings

import numpy as np
from gluoncv.utils.metrics import voc_detection as gcv_voc

from gluondet.eval.voc_metric import VOC07MApMetric, VOCMApMetric


def make_batches(num_images, dets_per_image, num_classes, batch_size, seed=0):
    """Detections scattered around the ground truth (hits, near misses, duplicates) plus clutter."""
    rng = np.random.default_rng(seed)
    batches = []
    for start in range(0, num_images, batch_size):
        size = min(batch_size, num_images - start)
        num_gts = rng.integers(1, 7, size)
        num_dets = rng.poisson(dets_per_image, size)
        pb, pl, ps = (np.full((size, num_dets.max(), k), -1, np.float32) for k in (4, 1, 1))
        gb, gl, gd = (np.full((size, num_gts.max(), k), -1, np.float32) for k in (4, 1, 1))
        for i in range(size):
            m, n = num_gts[i], num_dets[i]
            xy = rng.uniform(0, 400, (m, 2))
            gb[i, :m] = np.concatenate([xy, xy + rng.uniform(10, 200, (m, 2))], 1)
            gl[i, :m, 0] = rng.integers(0, num_classes, m)
            gd[i, :m, 0] = rng.random(m) < 0.1
            source = rng.integers(0, m, n)
            size_of = gb[i, source, 2:] - gb[i, source, :2]
            boxes = gb[i, source] + rng.normal(0, 0.15, (n, 4)) * np.tile(size_of, 2)
            clutter = rng.random(n) < 0.5
            xy = rng.uniform(0, 400, (n, 2))
            boxes[clutter] = np.concatenate([xy, xy + rng.uniform(10, 200, (n, 2))], 1)[clutter]
            pb[i, :n] = boxes
            mislabelled = rng.random(n) >= 0.8
            labels = np.where(mislabelled, rng.integers(0, num_classes, n), gl[i, source, 0])
            pl[i, :n, 0] = np.where(clutter, rng.integers(0, num_classes, n), labels)
            ps[i, :n, 0] = np.where(clutter, rng.random(n) * 0.5, rng.random(n))
        batches.append((pb, pl, ps, gb, gl, gd))
    return batches


def time_once(metric_class, batches, class_names, with_matching=False):
    """Wall-clock and CPU seconds of update() over all batches plus get() (and matching()), and
    the result. Both clocks are kept because the machine may be shared: CPU time is what the
    metric itself costs."""
    metric = metric_class(iou_thresh=0.5, class_names=class_names)
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        metric.update(*batch)
    result = metric.get()
    if with_matching:
        metric.matching()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def time_alternated(legs, batches, class_names, repeat):
    """{leg: (best wall, best CPU, result)} with the legs taking turns, A B C A B C ..."""
    best = {name: [float("inf"), float("inf"), None] for name in legs}
    for _ in range(repeat):
        for name, (metric_class, with_matching) in legs.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # GluonCV's nanmean over classes without objects
                wall, cpu, result = time_once(metric_class, batches, class_names, with_matching)
            best[name] = [min(best[name][0], wall), min(best[name][1], cpu), result]
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--dets", type=int, default=50, help="mean detections per image")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=7, help="rounds of the legs; the best counts")
    args = parser.parse_args()

    batches = make_batches(args.images, args.dets, args.classes, args.batch_size)
    num_dets = sum(int((b[1] >= 0).sum()) for b in batches)
    class_names = ["class%d" % c for c in range(args.classes)]
    load_before = os.getloadavg()[0]
    print("%d images, %d detections (%.1f per image), %d classes, batches of %d, best of %d "
          "alternated rounds" % (args.images, num_dets, num_dets / args.images, args.classes,
                                 args.batch_size, args.repeat))
    for label, reference_class, our_class in (
            ("VOC area", gcv_voc.VOCMApMetric, VOCMApMetric),
            ("VOC07 11-point", gcv_voc.VOC07MApMetric, VOC07MApMetric)):
        best = time_alternated({"GluonCV": (reference_class, False), "gluondet": (our_class, False),
                                "+ matching": (our_class, True)}, batches, class_names, args.repeat)
        names, reference = best["GluonCV"][2]
        for leg in ("gluondet", "+ matching"):
            assert best[leg][2][0] == names
            np.testing.assert_allclose(best[leg][2][1], reference, rtol=0, atol=1e-6, equal_nan=True)
        print("%-15s mAP %.6f, equal to GluonCV's" % (label, best["gluondet"][2][1][-1]))
        for clock, k in (("wall", 0), ("CPU", 1)):
            ref, ours, analysed = best["GluonCV"][k], best["gluondet"][k], best["+ matching"][k]
            print("  %-5s GluonCV %.3f s  gluondet %.3f s  speed-up %.1fx  (with the analysis's "
                  "matching: %.3f s, %.1fx)" % (clock + ":", ref, ours, ref / ours, analysed,
                                                ref / analysed))
    print("load average (1 min): %.1f before, %.1f after, on %d CPUs"
          % (load_before, os.getloadavg()[0], os.cpu_count()))


if __name__ == "__main__":
    main()
