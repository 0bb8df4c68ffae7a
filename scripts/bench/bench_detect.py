"""Folder detection speed: gluondet's batched, hybridized Detector against the classic tutorial loop.

The baseline is GluonCV's detection demo ("Predict with pre-trained SSD models"): per image
``gluoncv.data.transforms.presets.ssd.load_test`` then ``net(x)`` on the non-hybridized network.
gluondet reads the same images, batches them (--batch-size) through the hybridized network and
maps boxes back to the original pixels. Both sides read and preprocess every image and fetch the
results; neither draws. Same network, same weights, same images; prints images/s and the ratio,
and checks that both find the same top box on every image.

    .venv/bin/python scripts/bench/bench_detect.py [--run RUN_DIR] [--images 64] [--batch-size 8]

Without --run it builds --model (default tiny_ssd; e.g. ssd_300_vgg16_atrous), random weights, at
--data-shape; speed does not depend on what the weights have learnt, but a trained run gives
realistic NMS work.

``--dtype bfloat16`` compares instead gluondet's Detector in float32 against the same Detector
with ``set_dtype("bfloat16")`` (``gluondet detect --dtype bfloat16``), passes alternated, and
counts the images whose top box is the same (same class, IoU >= 0.9); meaningful with --run.
Every clock stops after mx.nd.waitall().
"""
import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def make_images(folder, n, size, seed=0):
    from gluondet.data.synth import render_shapes_image

    paths = []
    for i in range(n):
        sample = render_shapes_image(np.random.default_rng((seed, i)), size=size)
        path = Path(folder) / f"img_{i:04d}.jpg"
        cv2.imwrite(str(path), sample.image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
        paths.append(path)
    return paths


def build_detector(args):
    import mxnet as mx

    from gluondet.predict import Detector, ModelInfo

    if args.run:
        return Detector.load(args.run, hybridize=False)
    from gluondet.models import build_model

    from gluondet.config import resolve_model_config

    classes = ["circle", "square", "triangle"]
    model_cfg = dict(resolve_model_config(args.model), data_shape=args.data_shape)
    net = build_model(model_cfg, classes, pretrained_base=False)
    net(mx.nd.zeros((1, 3, args.data_shape, args.data_shape)))
    return Detector(net, ModelInfo(classes=classes, family="ssd", data_shape=args.data_shape),
                    hybridize=False)


def _hybridized_copy(detector, args):
    """A second Detector on the same weights, hybridized (the baseline keeps the plain network)."""
    import mxnet as mx

    from gluondet.predict import Detector

    if args.run:
        return Detector.load(args.run)
    with tempfile.TemporaryDirectory() as tmp:
        detector.net.save_parameters(f"{tmp}/w.params")
        twin = build_detector(args)
        twin.net.load_parameters(f"{tmp}/w.params", ctx=mx.cpu())
    twin.hybridize()
    return twin


def tutorial_loop(net, paths, data_shape):
    """The GluonCV demo: one image at a time, non-hybridized."""
    from gluoncv.data.transforms.presets.ssd import load_test

    top = []
    for path in paths:
        x, img = load_test(str(path), short=data_shape)
        ids, scores, boxes = net(x)
        scores = scores.asnumpy()  # the demo plots from numpy; this is where the work finishes
        top.append((int(ids[0, 0, 0].asscalar()), boxes[0, 0].asnumpy()))
    return top


def top_box_agreement(a, b, iou_min=0.9):
    """Images whose top detection has the same class and IoU >= iou_min in both result lists
    (two images with no detection agree)."""
    same = 0
    for ra, rb in zip(a, b):
        da, db = ra.detections, rb.detections
        if len(da) == 0 or len(db) == 0:
            same += int(len(da) == len(db) == 0)
            continue
        box_a, box_b = da.boxes[0], db.boxes[0]
        ix = max(0.0, min(box_a[2], box_b[2]) - max(box_a[0], box_b[0]))
        iy = max(0.0, min(box_a[3], box_b[3]) - max(box_a[1], box_b[1]))
        union = np.prod(box_a[2:] - box_a[:2]) + np.prod(box_b[2:] - box_b[:2]) - ix * iy
        same += int(da.class_ids[0] == db.class_ids[0] and union > 0 and ix * iy / union >= iou_min)
    return same


def compare_dtype(args, paths, threads):
    """float32 Detector against the same run's Detector in args.dtype: speed and top-box agreement."""
    import mxnet as mx

    from gluondet.pipeline import detect_files

    detectors = {"float32": _hybridized_copy(build_detector(args), args)}
    detectors[args.dtype] = _hybridized_copy(build_detector(args), args)
    detectors[args.dtype].set_dtype(args.dtype)
    best, results = {}, {}
    for name, det in detectors.items():  # warm-up: builds the cached graphs
        list(detect_files(det, paths[:args.batch_size], thresh=0.0, batch_size=args.batch_size, progress=False))
    for _ in range(args.repeat):
        for name, det in detectors.items():
            mx.nd.waitall()
            t0 = time.perf_counter()
            results[name] = list(detect_files(det, paths, thresh=0.0, max_boxes=100,
                                              batch_size=args.batch_size, progress=False))
            mx.nd.waitall()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
    n = len(paths)
    same = top_box_agreement(results["float32"], results[args.dtype])
    print(f"{n} images {args.size}px, network input {detectors['float32'].info.data_shape}px, batch "
          f"{args.batch_size}, {threads} threads, model {args.run or args.model + ' (random weights)'}")
    for name in detectors:
        print(f"Detector {name:<9} {n / best[name]:7.1f} images/s")
    print(f"speed-up {args.dtype} / float32: {best['float32'] / best[args.dtype]:.2f}x   "
          f"(same top box, class and IoU >= 0.9, on {same}/{n} images = {same / n:.0%})")


def main():
    from gluondet.pipeline import detect_files

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="run folder to benchmark (default: tiny_ssd, random weights)")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=256, help="side of the generated images")
    parser.add_argument("--data-shape", type=int, default=256)
    parser.add_argument("--model", default="tiny_ssd", help="zoo SSD to build without --run (random weights)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="best of N timed passes")
    parser.add_argument("--dtype", choices=["bfloat16", "float16"],
                        help="compare float32 with this dtype instead of with the tutorial loop")
    args = parser.parse_args()

    from gluondet.runtime import configure_threads

    threads = configure_threads()
    import mxnet as mx  # after configure_threads: it sizes MXNet's OpenMP pool before the import

    if args.dtype:
        with tempfile.TemporaryDirectory() as tmp:
            compare_dtype(args, make_images(tmp, args.images, args.size), threads)
        return
    detector = build_detector(args)
    data_shape = detector.info.data_shape
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(tmp, args.images, args.size)

        # Warm both up, then alternate the timed passes so a change in machine load hits both.
        tutorial_loop(detector.net, paths[:2], data_shape)
        fast = _hybridized_copy(detector, args)
        list(detect_files(fast, paths[:args.batch_size], thresh=0.0, batch_size=args.batch_size,
                          progress=False))  # builds the cached graph
        base, ours = [], []
        for _ in range(args.repeat):
            mx.nd.waitall()
            t0 = time.perf_counter()
            top_base = tutorial_loop(detector.net, paths, data_shape)
            mx.nd.waitall()
            base.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            results = list(detect_files(fast, paths, thresh=0.0, max_boxes=100,
                                        batch_size=args.batch_size, progress=False))
            mx.nd.waitall()
            ours.append(time.perf_counter() - t0)

    # same top detection on each image (the baseline's boxes are in network-input pixels)
    agree = 0
    for (cid, box), r in zip(top_base, results):
        if len(r.detections.boxes) == 0:  # nothing left after NMS: the baseline's top is padding (-1)
            agree += int(cid < 0)
            continue
        sx = data_shape / r.image.shape[1]
        sy = data_shape / r.image.shape[0]
        mine = r.detections.boxes[0] * np.array([sx, sy, sx, sy])
        agree += int(cid == r.detections.class_ids[0] and np.abs(mine - box).max() < 1.0)

    n = len(paths)
    base_ips, ours_ips = n / min(base), n / min(ours)
    print(f"{n} images {args.size}px, network input {data_shape}px, {threads} threads, "
          f"model {args.run or args.model + ' (random weights)'}")
    print(f"tutorial loop (per image, not hybridized): {base_ips:7.1f} images/s")
    print(f"gluondet Detector (batch {args.batch_size}, hybridized): {ours_ips:7.1f} images/s")
    # load_test resizes with another interpolation, so a near-tie between two boxes can flip
    print(f"speed-up: {ours_ips / base_ips:.2f}x   (same top box, within 1 px, on {agree}/{n} images)")


if __name__ == "__main__":
    main()
