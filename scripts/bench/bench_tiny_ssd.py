#!/usr/bin/env python
"""Benchmark (3) of the training issue: the tiny SSD's VOC07 mAP on shapes_voc val against minutes.

Runs the real command once,

    gluondet train --dataset shapes_voc --model tiny_ssd --metric voc07 --val-interval K --out DIR

with the model YAML's schedule (configs/models/tiny_ssd.yaml), then reads the run's metrics.csv and
prints validation mAP against cumulative training minutes (validation time excluded, as the
engine's per-epoch ``seconds`` counts training only) and the wall-clock and CPU minutes of the
whole command. The aim (issue 4) is VOC07 mAP >= 0.8 within 15 minutes on 2 CPU cores; the script
says whether and when the run got there. Timings on a shared machine are noisy: CPU minutes next
to wall minutes show how much of the wall time was the machine being busy with something else.

    python scripts/bench/bench_tiny_ssd.py [--epochs N] [--val-interval K] [--out DIR] [--target 0.8]
"""
import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def gluondet_command():
    """The gluondet console script beside this Python (a virtualenv), else ``python -m gluondet.cli``."""
    script = Path(sys.executable).with_name("gluondet")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gluondet.cli"]


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_curve(metrics_csv):
    """[(epoch, cumulative training minutes, mAP or None)] from the run's metrics.csv."""
    curve, minutes = [], 0.0
    with open(metrics_csv, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            minutes += float(row["seconds"]) / 60
            value = row.get("val_map") or ""
            curve.append((int(row["epoch"]), minutes, float(value) if value else None))
    return curve


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--epochs", type=int, default=None, help="override the YAML's epochs")
    parser.add_argument("--val-interval", type=int, default=5)
    parser.add_argument("--out", default=None, help="run folder (default: a new temporary folder)")
    parser.add_argument("--target", type=float, default=0.8, help="mAP aimed at")
    parser.add_argument("--minutes", type=float, default=15.0, help="within this many training minutes")
    parser.add_argument("extra", nargs="*", help="more gluondet train flags, after --")
    args = parser.parse_args()

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_tiny_ssd_")) / "run"
    command = gluondet_command() + [
        "train", "--dataset", "shapes_voc", "--model", "tiny_ssd", "--ctx", "cpu",
        "--metric", "voc07", "--val-interval", str(args.val_interval), "--out", str(out),
    ]
    if args.epochs is not None:
        command += ["--epochs", str(args.epochs)]
    command += args.extra
    print("running:", " ".join(command), flush=True)
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(gluondet sizes it)')}, "
          f"usable CPUs {len(os.sched_getaffinity(0))}", flush=True)
    cpu_before, wall_start = children_cpu_seconds(), time.time()
    done = subprocess.run(command, cwd=REPO)
    wall_minutes = (time.time() - wall_start) / 60
    cpu_minutes = (children_cpu_seconds() - cpu_before) / 60
    if done.returncode != 0:
        sys.exit(f"gluondet train failed with exit status {done.returncode}")

    curve = read_curve(out / "metrics.csv")
    print(f"\n{'epoch':>5} {'train min':>9} {'VOC07 mAP':>9}")
    for epoch, minutes, value in curve:
        if value is not None:
            print(f"{epoch:5d} {minutes:9.2f} {value:9.4f}")
    reached = next(((e, m, v) for e, m, v in curve if v is not None and v >= args.target), None)
    print(f"\nwhole command: {wall_minutes:.2f} wall minutes, {cpu_minutes:.2f} CPU minutes "
          f"(CPU/wall {cpu_minutes / max(wall_minutes, 1e-9):.2f})")
    if reached:
        epoch, minutes, value = reached
        verdict = "within" if minutes <= args.minutes else "OVER"
        print(f"mAP {value:.4f} >= {args.target} at epoch {epoch}, after {minutes:.2f} training minutes "
              f"({verdict} the {args.minutes:g}-minute aim; ratio {minutes / args.minutes:.2f})")
    else:
        best = max((v for _, _, v in curve if v is not None), default=float("nan"))
        print(f"mAP never reached {args.target} (best {best:.4f})")
    print(f"run folder: {out}")


if __name__ == "__main__":
    main()
