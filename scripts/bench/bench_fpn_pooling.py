"""FPN RoI pooling on the CPU: gluondet's pooling against pooling every RoI at every level.

``--share`` first: how much of a real mask_rcnn_tiny training step and a real detect batch RoI
pooling costs (MXNet's profiler, operator times summed over ``gluondet train`` and
``pipeline.detect_files`` on generated masked shapes, with the pooling gluondet has now, at
MXNet's default OpenMP thread count unless OMP_NUM_THREADS is set); that bounds what cheaper
pooling can still gain.

Then the two poolings alone, hybridized (static_alloc, static_shape) at mask_rcnn_tiny's shapes
(64 FPN channels, 7x7 bins, a 128 x 170 image): "every level" is the form gluondet used before
(ROIAlign of all RoIs at each of the 4 levels, the other levels' rows zeroed with ``where``);
"own level" is ``gluondet.models.rcnn_fpn.pyramid_roi_features`` now. Training: forward + backward
with ``--train-rois`` RoIs; detection: forward of ``--detect-rois``. Legs alternate (A B A B), each
``--iters`` calls, clocks stopped after ``mx.nd.waitall()``; the best leg of each is printed with
the ratio. Also printed: whether this MXNet's CPU ROIAlign still writes a skipped row's zero into
another row (why gluondet's pooling pads, see its docstring).

    .venv/bin/python scripts/bench/bench_fpn_pooling.py [--share] [--rounds 3] [--iters 50]
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import mxnet as mx
import numpy as np

from gluondet.models.rcnn_fpn import pyramid_roi_features

STRIDES = (4, 8, 16, 32, 64)
ROI_SIZE = (7, 7)
CHANNELS = 64  # mask_rcnn_tiny's num_fpn_filters
IMAGE = (128, 170)
POOLING_OPS = ("_contrib_ROIAlign", "_backward_ROIAlign")


def every_level(net, F, features, rois, roi_size, strides, roi_mode="align", sampling_ratio=2):
    """The baseline: every RoI pooled at every level, the other levels' rows zeroed."""
    max_stage = net._max_stage - 1 if net._max_stage > 5 else net._max_stage
    _, x1, y1, x2, y2 = F.split(rois, axis=-1, num_outputs=5)
    level = F.floor(4 + F.log2(F.sqrt((x2 - x1 + 1) * (y2 - y1 + 1)) / 224.0 + 1e-6))
    level = F.squeeze(F.clip(level, net._min_stage, max_stage))
    pooled = []
    for i, stage in enumerate(range(net._min_stage, max_stage + 1)):
        feature = F.contrib.ROIAlign(features[i], rois, roi_size, 1. / strides[i], sample_ratio=sampling_ratio)
        pooled.append(F.where(level == stage, feature, F.zeros_like(feature)))
    return F.ElementWiseSum(*pooled)


class Pooling(mx.gluon.HybridBlock):
    def __init__(self, pool):
        super().__init__()
        self._pool, self._min_stage, self._max_stage = pool, 2, 6

    def hybrid_forward(self, F, rois, *features):
        return self._pool(self, F, features, rois, ROI_SIZE, STRIDES)


def random_rois(rng, n):
    """RoIs spread over the 4 levels as a 128 px image's proposals are (sqrt(area) 8..200 px)."""
    side = np.exp(rng.uniform(np.log(8), np.log(200), n))
    x1 = rng.uniform(0, IMAGE[1] - side / 2)
    y1 = rng.uniform(0, IMAGE[0] - side / 2)
    return mx.nd.array(np.stack([np.zeros(n), x1, y1, x1 + side, y1 + side], 1))


def features(rng):
    return [mx.nd.array(rng.normal(size=(1, CHANNELS, -(-IMAGE[0] // s), -(-IMAGE[1] // s)))) for s in STRIDES[:4]]


def leg(pool, rois, feats, iters, train):
    block = Pooling(pool)
    block.hybridize(static_alloc=True, static_shape=True)
    for f in feats:
        f.attach_grad()
    head = mx.nd.ones((rois.shape[0], CHANNELS) + ROI_SIZE)

    def call():
        if train:
            with mx.autograd.record():
                out = block(rois, *feats)
            out.backward(head)
        else:
            block(rois, *feats)

    call()  # builds the graph
    mx.nd.waitall()
    tic = time.perf_counter()
    for _ in range(iters):
        call()
    mx.nd.waitall()
    return (time.perf_counter() - tic) / iters * 1e3


def stray_zero_check():
    """Does a row with batch index -1 get its zero written into another row (CPU ROIAlign)?"""
    feature = mx.nd.ones((1, 1, 8, 8))
    rois = mx.nd.array([[0, 0, 0, 7, 7], [-1, 0, 0, 7, 7], [-1, 0, 0, 7, 7]])
    out = mx.nd.contrib.ROIAlign(feature, rois, (2, 2), 1.0, sample_ratio=2).asnumpy()
    return int((out[0] != 1).sum())


def profile_share(iters):
    """Share of RoI pooling (ROIAlign forward and backward) in operator time, training and detection."""
    from gluondet.cli import main
    from gluondet.data.synth import write_shapes_voc
    from gluondet.pipeline import detect_files
    from gluondet.predict import Detector

    results = {}
    with tempfile.TemporaryDirectory() as work:
        root = write_shapes_voc(Path(work) / "shapes", n_train=64, n_val=32, seed=0, size=128, masks=True)
        mx.profiler.set_config(profile_symbolic=True, profile_imperative=True, aggregate_stats=True,
                               filename=str(Path(work) / "profile.json"))
        mx.profiler.set_state("run")
        main(["train", "--dataset", str(root / "coco.yaml"), "--model", "mask_rcnn_tiny", "--epochs", "1",
              "--max-iters", str(iters), "--lr", "0.003", "--warmup-epochs", "0", "--val-interval", "100",
              "--num-workers", "0", "--out", str(Path(work) / "run"), "--quiet"], standalone_mode=False)
        mx.nd.waitall()
        results["training"] = _pooling_share(json.loads(mx.profiler.dumps(reset=True, format="json")))
        det = Detector.load(Path(work) / "run", which="last")
        images = [str(p) for p in sorted((root / "JPEGImages").glob("*.jpg"))[-32:]]
        for _ in detect_files(det, images, thresh=0.5, progress=False):
            pass
        mx.nd.waitall()
        mx.profiler.set_state("stop")
        results["detection"] = _pooling_share(json.loads(mx.profiler.dumps(reset=True, format="json")))
    return results


def _pooling_share(stats):
    ops = {}
    for domain in stats["Time"].values():
        for name, row in domain.items():
            ops[name] = ops.get(name, 0.0) + row["Total"]
    total = sum(v for k, v in ops.items() if not k.startswith(("[", "Waitall")))
    pooling = sum(ops.get(k, 0.0) for k in POOLING_OPS)
    return pooling, total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--train-rois", type=int, default=64, help="mask_rcnn_tiny's num_sample")
    parser.add_argument("--detect-rois", type=int, default=100, help="its rpn_test_post_nms and rcnn_max_dets")
    parser.add_argument("--share", action="store_true", help="profile gluondet train and detect first")
    parser.add_argument("--share-iters", type=int, default=20)
    args = parser.parse_args()

    print(f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"CPU ROIAlign: a valid row's values zeroed by 2 rows of batch index -1: {stray_zero_check()} of 4")
    if args.share:
        for name, (pooling, total) in profile_share(args.share_iters).items():
            print(f"{name}: ROIAlign forward+backward {pooling / 1e3:.2f} s of {total / 1e3:.2f} s operator "
                  f"time ({100 * pooling / total:.1f}%)")
    rng = np.random.default_rng(0)
    feats = features(rng)
    for name, n, train in (("training", args.train_rois, True), ("detection", args.detect_rois, False)):
        rois = random_rois(rng, n)
        legs = {"every level": [], "own level": []}
        for _ in range(args.rounds):
            legs["every level"].append(leg(every_level, rois, feats, args.iters, train))
            legs["own level"].append(leg(pyramid_roi_features, rois, feats, args.iters, train))
        old, new = min(legs["every level"]), min(legs["own level"])
        print(f"{name} ({n} RoIs{', forward + backward' if train else ', forward'}): every level {old:.3f} ms, "
              f"own level {new:.3f} ms, {old / new:.2f}x faster (legs: {legs}); "
              f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
