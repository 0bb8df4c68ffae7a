"""Training throughput of a distributed job on this machine: 1 Horovod process, 2 Horovod processes
(horovodrun --gloo on loopback) and 2 dist_sync workers with 1 server (gluondet launch), legs
alternated in one run.

    python scripts/bench/bench_horovod.py [--rounds 2] [--epochs 3] [--batch-size 8] [--train 96]

Every leg is ``gluondet train`` of the tiny SSD on the demo shapes (``gluondet data synth``, 128 px)
with the same batch per process: a job of N processes trains N times the images per step. Its
throughput is rank 0's training img/s (metrics.csv, clocks stopped after ``mx.nd.waitall()``) of the
epochs after the first (which hybridizes) times the processes, as every rank runs the same steps.
The processes of a leg share this machine's cores (each gets cores / N OpenMP threads), so on an
idle 2-core machine two processes cannot be faster than one: the ratio measures what the gradient
exchange and the second process cost, not a speed-up, which needs a core (or GPU) per process.
Where other work loads the cores, two processes also take a larger share of them than one (the
kernel shares the CPUs among runnable threads), which the ratio then shows too.
"""
import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flop_bound import report_bound  # the FLOP bound on the training legs, measured in the same run

BIN = Path(sys.executable).parent


def train_args(data, out, epochs, batch_size, kvstore):
    return ["train", "--dataset", str(data), "--model", "tiny_ssd", "--data-shape", "128", "--epochs", str(epochs),
            "--batch-size", str(batch_size), "--kvstore", kvstore, "--num-workers", "0", "--val-interval",
            str(epochs), "--quiet", "--out", str(out)]


def leg_command(leg, data, out, epochs, batch_size):
    gluondet = [sys.executable, "-m", "gluondet"]
    if leg.startswith("horovod"):
        n = leg.split("x")[1]
        return [str(BIN / "horovodrun"), "-np", n, "-H", f"localhost:{n}", "--gloo", *gluondet,
                *train_args(data, out, epochs, batch_size, "horovod")]
    return [*gluondet, "launch", "-n", "2", "-s", "1", "--", *gluondet,
            *train_args(data, out, epochs, batch_size, "dist_sync")]


def run_leg(leg, data, work, epochs, batch_size, round_):
    out = work / f"{leg.replace(' ', '_')}-{round_}"
    started = time.monotonic()
    done = subprocess.run(leg_command(leg, data, out, epochs, batch_size), capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"})
    if done.returncode != 0:
        sys.exit(f"{leg}: exit {done.returncode}\n{(done.stdout + done.stderr)[-3000:]}")
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    per_rank = statistics.mean(float(r["images_per_sec"]) for r in rows[1:])  # after the hybridizing epoch
    processes = 1 if leg == "horovod x1" else 2
    return per_rank * processes, time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8, help="per process")
    parser.add_argument("--train", type=int, default=96, help="training images of the demo set")
    args = parser.parse_args()
    if not (BIN / "horovodrun").exists():
        sys.exit(f"no horovodrun beside {sys.executable}: scripts/install_horovod.sh installs Horovod")
    legs = ["horovod x1", "horovod x2", "dist_sync x2"]
    with tempfile.TemporaryDirectory(prefix="bench_horovod-") as tmp:
        work = Path(tmp)
        data = work / "shapes"
        subprocess.run([sys.executable, "-m", "gluondet", "data", "synth", str(data), "--train", str(args.train),
                        "--val", "8", "--size", "128"], check=True, capture_output=True)
        load_before = os.getloadavg()[0]
        results = {leg: [] for leg in legs}
        for round_ in range(args.rounds):
            for leg in legs:  # alternated: A B C A B C
                img_s, wall = run_leg(leg, data, work, args.epochs, args.batch_size, round_)
                results[leg].append(img_s)
                print(f"round {round_ + 1} {leg:>13}: {img_s:7.1f} img/s (job), {wall:5.1f} s wall", flush=True)
        load_after = os.getloadavg()[0]
    best = {leg: max(v) for leg, v in results.items()}
    print(f"\ntiny SSD, 128 px, batch {args.batch_size} per process, {args.train} images, epochs 2..{args.epochs} "
          f"timed; {os.cpu_count()} CPUs, load average {load_before:.1f} before, {load_after:.1f} after")
    for leg in legs:
        legs_text = ", ".join(f"{v:.1f}" for v in results[leg])
        print(f"  {leg:>13}: best {best[leg]:7.1f} img/s (legs {legs_text})")
    print(f"  2 Horovod processes / 1: {best['horovod x2'] / best['horovod x1']:.2f}x; "
          f"2 dist_sync workers / 2 Horovod processes: {best['dist_sync x2'] / best['horovod x2']:.2f}x")
    print("  (the processes of a leg share this machine's cores, each with its share of the OpenMP threads:\n"
          "   2 processes of 1 thread outrun 1 of 2 threads where the network's operators are too small to\n"
          "   keep 2 threads busy, as the tiny SSD's; where other work loads the cores, 2 processes also take\n"
          "   a larger share of them than 1. Not a measure of scaling across machines)")
    # every leg's images/s is the whole job's, on this machine's cores: one bound for all
    return 0 if report_bound("tiny_ssd", results, data_shape=128) else 1


if __name__ == "__main__":
    sys.exit(main())
