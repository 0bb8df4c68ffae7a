#!/usr/bin/env python
"""Does --amp cost accuracy? The tiny SSD demo trained in float32 and with --amp, same seed.

Runs the demo training twice with the model YAML's schedule,

    gluondet train --dataset shapes_voc --model tiny_ssd --metric voc07 --val-interval K --seed S [--amp]

and prints both runs' VOC07 mAP on shapes_voc val (best and last), the difference in points,
and the wall and training minutes of each. The aim: --amp no more than 1 VOC07 mAP point below float32.
On a CPU without native bfloat16, --amp stays in float32 (it says so) and the two runs match.

    .venv/bin/python scripts/bench/bench_amp_tiny.py [--epochs N] [--val-interval K] [--out DIR]
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_tiny_ssd import REPO, gluondet_command, read_curve


def train(out, amp, args):
    command = gluondet_command() + [
        "train", "--dataset", "shapes_voc", "--model", "tiny_ssd", "--ctx", "cpu", "--metric", "voc07",
        "--val-interval", str(args.val_interval), "--seed", str(args.seed), "--out", str(out)]
    if args.epochs is not None:
        command += ["--epochs", str(args.epochs)]
    if amp:
        command.append("--amp")
    print("running:", " ".join(command), flush=True)
    start = time.time()
    if subprocess.run(command, cwd=REPO).returncode != 0:
        sys.exit("gluondet train failed")
    curve = read_curve(out / "metrics.csv")
    maps = [v for _, _, v in curve if v is not None]
    return {"best": max(maps), "last": maps[-1], "train_min": curve[-1][1], "wall_min": (time.time() - start) / 60}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--epochs", type=int, default=None, help="override the YAML's epochs")
    parser.add_argument("--val-interval", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for the two run folders")
    args = parser.parse_args()

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_amp_tiny_"))
    results = {"float32": train(out / "float32", False, args), "--amp": train(out / "amp", True, args)}
    print(f"\n{'':8} {'best mAP':>9} {'last mAP':>9} {'train min':>9} {'wall min':>9}")
    for name, r in results.items():
        print(f"{name:8} {r['best']:9.4f} {r['last']:9.4f} {r['train_min']:9.2f} {r['wall_min']:9.2f}")
    diff = 100 * (results["--amp"]["best"] - results["float32"]["best"])
    # The aim is about what --amp may cost: a run above float32 meets it however far above it is.
    verdict = "meets" if diff >= -1.0 else "MISSES"
    print(f"--amp - float32: {diff:+.2f} VOC07 mAP points (best of each run): {verdict} the aim "
          f"(no more than 1 point below float32)")
    print(f"run folders: {out}")


if __name__ == "__main__":
    main()
