#!/usr/bin/env python
"""OpenMP's wait policy on a CPU that is not all MXNet's: how long a finished thread spins
before it sleeps, OpenMP's default against shorter spins (``GOMP_SPINCOUNT``, what
gluondet/runtime.py ``configure_threads`` sets) and none (``OMP_WAIT_POLICY=PASSIVE``).

MXNet runs each operator as an OpenMP parallel region over the usable CPUs. At a region's end the
threads that finished wait for the others, spinning first (libgomp: ~300,000 rounds). When anything
else runs on the machine (another job, a loader process, the OS), a spinning thread keeps its core
from the member the region is waiting for, and every region lasts a scheduler time slice. A thread
that sleeps at once pays a wake-up at the next region instead, which on an idle machine costs the
small operators of the tiny models dearly; a short spin covers the gap between two operators.

Per leg, in processes of their own (the policy is read once, when OpenMP starts): ``gluondet
train`` for two epochs of ``--iters`` steps on generated shapes data (128 px, with masks), the second
epoch's images/s from metrics.csv (the trainer waits for each step's work), and the model's forward
pass in predict mode on random images, the clock stopped after ``mx.nd.waitall()`` after untimed
warm-up passes; both on gluondet's choices (MXNet's synchronous engine, its OpenMP pool).
``--busy N``: N other processes spin on a CPU each for the whole leg (started before it, stopped
after), the stand-in for "anything else on the machine". Each busy level runs every setting, legs
alternated (A B C A B C ...), and prints the best of the rounds with its ratio to the first setting
and every leg with the load average.

    .venv/bin/python scripts/bench/bench_omp_wait.py [--model tiny_ssd|mask_rcnn_tiny] [--busy 0,1]
        [--rounds 2] [--iters 20] [--batch-size 8] [--settings default,spin=3000,PASSIVE]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_mask_rcnn import train_images_per_sec  # `gluondet train` in a process of its own, 2nd epoch timed
from flop_bound import cpu_line

from gluondet.runtime import OMP_SPIN_COUNT

DETECT_LEG = r"""
import json, os, sys, time
from gluondet.runtime import configure_engine, configure_threads
threads = configure_threads()
configure_engine("cpu")
import mxnet as mx
from gluondet.config import resolve_model_config
from gluondet.families import family_of
from gluondet.models import build_model

model, batch, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cfg = resolve_model_config(model)
side = int(cfg["data_shape"])
net = build_model(cfg, ["a", "b", "c"], pretrained_base=False)
net.initialize(mx.init.Xavier(magnitude=2))
family_of(cfg).hybridize_for_prediction(net)
x = mx.nd.random.uniform(shape=(batch, 3, side, side))
for _ in range(3):  # the first builds the graph and oneDNN's primitives
    net(x)
mx.nd.waitall()
start = time.perf_counter()
for _ in range(iters):
    net(x)
mx.nd.waitall()
print(json.dumps({"detect": batch * iters / (time.perf_counter() - start), "threads": threads}))
"""

SPIN = "while True: pass"


def leg_env(setting):
    """The environment of a leg: ``default`` (OpenMP's own: spin a while, then sleep), ``PASSIVE``,
    ``ACTIVE``, or ``spin=N`` (libgomp's GOMP_SPINCOUNT: spin N rounds, then sleep)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "MXNET_ENGINE_TYPE")}
    env["MXNET_GLUON_REPO"] = "http://127.0.0.1:9/"
    env["OMP_WAIT_POLICY"] = ""  # set, so that configure_threads leaves it to the leg
    if setting.startswith("spin="):
        env["GOMP_SPINCOUNT"] = setting.split("=", 1)[1]
    elif setting != "default":
        env["OMP_WAIT_POLICY"] = setting
    return env


def run_leg(setting, args, root, work):
    """{"train": img/s of ``gluondet train`` (its second epoch), "detect": img/s of forward passes}."""
    env = leg_env(setting)
    run_dir = Path(work) / f"run-{time.time_ns()}"
    dataset = root / "coco.yaml" if args.model.startswith("mask") else root
    flags = ["--dataset", dataset, "--model", args.model, "--no-pretrained-base", "--max-iters", args.iters,
             "--lr", 0.001]
    if not args.model.startswith(("mask", "faster")):
        flags += ["--batch-size", args.batch_size]
    rates = {"train": train_images_per_sec(flags, run_dir, env=env)}
    batch = 1 if args.model.startswith(("mask", "faster")) else args.batch_size
    out = subprocess.run([sys.executable, "-c", DETECT_LEG, args.model, str(batch), str(args.iters)],
                         env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode:
        sys.exit(f"leg failed:\n{out.stderr[-3000:]}")
    return dict(rates, **json.loads(out.stdout.strip().splitlines()[-1]))


def with_busy(n, fn):
    """``fn()`` while ``n`` processes spin, one CPU each."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(n)]
    try:
        return fn()
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_ssd")
    parser.add_argument("--busy", default="0,1", help="busy-level list: processes spinning beside each leg")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--settings", default=f"default,spin={OMP_SPIN_COUNT},PASSIVE",
                        help="legs: default, PASSIVE, ACTIVE, spin=N (GOMP_SPINCOUNT); the first is the baseline")
    args = parser.parse_args()

    from gluondet.data.synth import write_shapes_voc
    from gluondet.runtime import usable_cpus

    print(f"{cpu_line()}: {args.model}, batch {args.batch_size}, {args.iters} timed steps per leg, "
          f"{usable_cpus()} usable CPUs, {args.rounds} rounds; load average at the start {os.getloadavg()[0]:.1f}")
    settings = args.settings.split(",")
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        root = write_shapes_voc(work / "shapes", n_train=max(64, 2 * args.iters * args.batch_size), n_val=4, seed=0,
                                size=128, masks=True)
        for busy in (int(b) for b in args.busy.split(",")):
            legs = {s: [] for s in settings}
            for _ in range(args.rounds):
                for setting in settings:
                    got = with_busy(busy, lambda: run_leg(setting, args, root, work))
                    legs[setting].append(dict(got, load=os.getloadavg()[0]))
            report(busy, settings, legs)


def report(busy, settings, legs):
    """Each task's best img/s per setting, its ratio to the first setting, and every leg."""
    for task in ("train", "detect"):
        best = {s: max(leg[task] for leg in legs[s]) for s in settings}
        cells = ", ".join(f"{s} {best[s]:.1f} ({best[s] / best[settings[0]]:.2f}x)" for s in settings)
        every = " / ".join(", ".join(f"{leg[task]:.1f} (load {leg['load']:.1f})" for leg in legs[s])
                           for s in settings)
        print(f"{busy} busy, {task:6s} img/s: {cells}  (legs {every})", flush=True)


if __name__ == "__main__":
    main()
