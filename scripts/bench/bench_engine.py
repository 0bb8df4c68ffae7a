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

    .venv/bin/python scripts/bench/bench_engine.py [--models tiny_ssd,mask_rcnn_tiny] [--iters 20]
        [--rounds 2] [--detect-images 32]      (add ssd_512_vgg16_atrous: minutes more)
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from bench_mask_rcnn import GLUONDET_DETECT as DETECT  # set up as `gluondet detect --ctx cpu`
from bench_mask_rcnn import run_leg, train_images_per_sec

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
    """{(task, engine): [images/s per round]} for one model, legs alternated."""
    legs = {}
    for _ in range(args.rounds):
        for name, engine in (("asynchronous", ASYNC), ("synchronous", {})):
            speed, run_dir = train_leg(model, root, args, work, engine)
            legs.setdefault(("train", name), []).append(speed)
            if name == "synchronous":
                trained = run_dir
        for name, engine in (("asynchronous", ASYNC), ("synchronous", {})):
            legs.setdefault(("detect", name), []).append(detect_leg(trained, images, engine))
    return legs


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

    with tempfile.TemporaryDirectory() as work:
        root = write_shapes_voc(Path(work) / "shapes", n_train=max(64, args.iters * args.batch_size * 2),
                                n_val=args.detect_images, seed=0, size=128, masks=True)
        images = [str(p) for p in sorted((root / "JPEGImages").glob("*.jpg"))[-args.detect_images:]]
        print(f"{usable_cpus()} usable CPUs, {args.iters} timed iterations, {args.detect_images} detect images, "
              f"{args.rounds} rounds; load {os.getloadavg()[0]:.1f}")
        for model in args.models.split(","):
            legs = measure(model, root, images, args, work)
            for task in ("train", "detect"):
                slow, fast = max(legs[(task, "asynchronous")]), max(legs[(task, "synchronous")])
                every = " / ".join(", ".join(f"{v:.2f}" for v in legs[(task, e)]) for e in ("asynchronous", "synchronous"))
                print(f"{model:22s} {task:6s}: asynchronous {slow:7.2f} img/s, synchronous {fast:7.2f} img/s, "
                      f"ratio {fast / slow:.2f}x  (legs {every})", flush=True)


if __name__ == "__main__":
    main()
