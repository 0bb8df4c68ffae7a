"""MXNet's engine on CPUs: training and detection images/s, asynchronous engine against gluondet's choice.

gluondet starts MXNet on its synchronous engine (``NaiveEngine``) for work on CPUs only
(gluondet/runtime.py ``configure_engine``), with the OpenMP pool sized to the usable CPUs. The
baseline is the same command on MXNet's default, asynchronous engine (``MXNET_ENGINE_TYPE=
ThreadedEnginePerDevice``, which gluondet respects), with the same threads. Per model, on the
same generated data (``data synth --masks``, 128 px; ``--data-shape`` for the SSDs), random init:

- training: the real ``gluondet train``, two "epochs" of ``--iters`` iterations, the second one's
  images/s from metrics.csv (graph building left out; the trainer waits for each step's work);
- detection: ``pipeline.detect_files`` over ``--detect-images`` images on the network trained by
  the synchronous leg, set up as ``gluondet detect --ctx cpu`` is, the clock stopped after
  ``mx.nd.waitall()``, the first image (graph building) left out.

Legs alternate (asynchronous, synchronous, asynchronous, ...), each in its own process, and the
best of each is printed with the ratio. Measure on an idle machine, or say how loaded it was.

Beside each training images/s: the FLOP bound (``flop_bound.py``): the model's FLOP per training
image, counted once from its graph at the data shape it trains at, against a float32 convolution
peak measured before every training leg (the best of the model's legs counts). A training figure
above peak / FLOP per image is refused: an ERROR row, and the script exits 1. Each training leg
names the 1-minute load average at its end. Detection has no bound here: flop_bound.py counts a
training step (forward and gradients, the R-CNNs' sampled RoIs), while detection runs the inference
graph (no gradients, the R-CNNs' test-time proposals, box decoding and NMS) on files it reads and
resizes itself, so its count would be another one; its clock stops after ``mx.nd.waitall()`` all the
same.

    .venv/bin/python scripts/bench/bench_engine.py [--models tiny_ssd,mask_rcnn_tiny] [--iters 20]
        [--rounds 2] [--detect-images 32]      (add ssd_512_vgg16_atrous: minutes more)
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench_mask_rcnn import GLUONDET_DETECT as DETECT  # set up as `gluondet detect --ctx cpu`
from bench_mask_rcnn import run_leg, train_images_per_sec
from flop_bound import best_peak, bound_rows, count_line, cpu_line, flop_bound

ASYNC = {"MXNET_ENGINE_TYPE": "ThreadedEnginePerDevice"}


def _env(engine):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MXNET_ENGINE_TYPE")}
    return dict(env, MXNET_GLUON_REPO="http://127.0.0.1:9/", **engine)


def train_leg(model, root, args, work, engine):
    run_dir = Path(work) / f"{model}-{time.time_ns()}"
    dataset = root / "coco.yaml" if model.startswith("mask") else root
    flags = ["--dataset", dataset, "--model", model, "--no-pretrained-base", "--max-iters", args.iters, "--lr", 0.001]
    if not model.startswith("mask"):
        flags += ["--data-shape", args.data_shape, "--batch-size", args.batch_size]
    return train_images_per_sec(flags, run_dir, env=_env(engine)), run_dir


def detect_leg(run_dir, images, engine):
    return run_leg(DETECT, run_dir, json.dumps(images), env=_env(engine))


def measure(model, root, images, args, work):
    """({(task, engine): [images/s per round]}, {engine: [load average after each training leg]},
    [convolution peak before each training leg]) for one model, legs alternated."""
    legs, loads, peaks = {}, {}, []
    for _ in range(args.rounds):
        for name, engine in (("asynchronous", ASYNC), ("synchronous", {})):
            peaks.append(flop_bound("peak"))  # before every training leg: the load changes
            speed, run_dir = train_leg(model, root, args, work, engine)
            legs.setdefault(("train", name), []).append(speed)
            loads.setdefault(name, []).append(os.getloadavg()[0])
            if name == "synchronous":
                trained = run_dir
        for name, engine in (("asynchronous", ASYNC), ("synchronous", {})):
            legs.setdefault(("detect", name), []).append(detect_leg(trained, images, engine))
    return legs, loads, peaks


def report(model, flop, measured):
    """Print one model's training rows (each with its FLOP bound) and detection row; returns whether
    every training leg is within the bound."""
    legs, loads, peaks = measured
    peak, line = best_peak(peaks, before="each training leg")
    names = {engine: f"{model} train, {engine}" for engine in ("asynchronous", "synchronous")}
    rows, within = bound_rows({names[e]: legs[("train", e)] for e in names},
                              {names[e]: loads[e] for e in names}, peak["gflops"], flop["total"])
    ratio = max(legs[("train", "synchronous")]) / max(legs[("train", "asynchronous")])
    print("\n".join([line, *rows, f"{model:22s} train : ratio {ratio:.2f}x synchronous / asynchronous"]))
    slow, fast = max(legs[("detect", "asynchronous")]), max(legs[("detect", "synchronous")])
    every = " / ".join(", ".join(f"{v:.2f}" for v in legs[("detect", e)]) for e in ("asynchronous", "synchronous"))
    print(f"{model:22s} detect: asynchronous {slow:7.2f} img/s, synchronous {fast:7.2f} img/s, "
          f"ratio {fast / slow:.2f}x  (legs {every})", flush=True)
    return within


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny_ssd,mask_rcnn_tiny")
    parser.add_argument("--iters", type=int, default=20, help="iterations per epoch (the 2nd epoch is timed)")
    parser.add_argument("--rounds", type=int, default=2, help="asynchronous/synchronous pairs, alternated")
    parser.add_argument("--detect-images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4, help="SSD models (Mask R-CNN: one image per step)")
    parser.add_argument("--data-shape", type=int, default=128, help="SSD models")
    args = parser.parse_args()

    from gluondet.data.synth import write_shapes_voc
    from gluondet.runtime import usable_cpus

    within = True
    with tempfile.TemporaryDirectory() as work:
        root = write_shapes_voc(Path(work) / "shapes", n_train=max(64, args.iters * args.batch_size * 2),
                                n_val=args.detect_images, seed=0, size=128, masks=True)
        images = [str(p) for p in sorted((root / "JPEGImages").glob("*.jpg"))[-args.detect_images:]]
        print(f"{cpu_line()}, {usable_cpus()} usable CPUs, {args.iters} timed iterations, "
              f"{args.detect_images} detect images, {args.rounds} rounds; load {os.getloadavg()[0]:.1f}")
        for model in args.models.split(","):
            # trained at --data-shape, as train_leg passes it (Mask R-CNN: its own)
            shape = [] if model.startswith("mask") else ["--data-shape", str(args.data_shape)]
            flop = flop_bound("count", "--model", model, *shape)
            print(f"{model} at {flop['data_shape']} px: {count_line(flop)}")
            within = report(model, flop, measure(model, root, images, args, work)) and within
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
