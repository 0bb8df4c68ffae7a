#!/usr/bin/env python
"""Do the demo recipes learn where a user would try them? (issue 20)

For every cell of model x image size x seed this runs what a user runs,

    gluondet data synth DATA --size SIZE --seed SEED [--masks]      # 300 train + 100 val by default
    gluondet train --dataset DATA --model MODEL --seed SEED --out RUN --quiet [--epochs N]

each in a process of its own, with the model YAML's own recipe (configs/models/MODEL.yaml; flags only
for what --epochs and EXTRA change), then reads the run folder: the best validation metric
(best.json), the last epoch's row of metrics.csv (mask model: segm/AP and bbox/AP), and the steps the
divergence guard left out and its rollbacks (metrics.csv columns skipped_steps and rollbacks, written
only when there were any). A cell passes when its best metric reaches the model's floor with no
rollback: a recipe has to learn without the guard's help (the guard is a safety net).

Floors (FLOORS): mask_rcnn_tiny, COCO mask AP@[.5:.95] on the 100 val images >= 0.25 (issue 20);
tiny_ssd, VOC mAP (area under the PR curve, the YAML's validation metric) >= 0.5: the shapes_voc
comment measured val 0.64 after training on 300 images, and an SSD that learned nothing scores
below 0.01 (tests/integration/test_train.py).

Wall time is the whole ``gluondet train`` command (data set-up, training, validations, the end-of-run
report); the machine's load average is read before and after each cell. On a shared machine give
``--threads 1``: MXNet's OpenMP team of 2 on 2 cores busy with other processes waits for preempted
members at every parallel region (measured: mask_rcnn_tiny 0.1 it/s with 2 threads against 1.5 it/s
with 1, load average 8).

Results are appended to ``--results`` (JSON lines) as each cell ends, and cells already there are
not run again, so a matrix can be run in parts; ``--table-only`` prints the table of that file.

    python scripts/bench/bench_recipes.py [--models tiny_ssd,mask_rcnn_tiny] [--sizes 256,128,512]
        [--seeds 101,102,103] [--epochs N] [--threads 1] [--results FILE] [--markdown FILE] [-- EXTRA]
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# model -> (metric read from best.json, its label, floor, data synth flags)
FLOORS = {
    "mask_rcnn_tiny": ("segm/AP", "mask AP", 0.25, ["--masks"]),
    "tiny_ssd": ("val_map", "VOC mAP", 0.5, []),
}
# data and training seeds no recipe was tuned or tested on (tuning: data 0 and 4343, training 0, 1 and 233;
# tests/integration/test_masks.py: 7)
SEEDS = "101,102,103"


def gluondet_command():
    """The gluondet console script beside this Python (a virtualenv), else ``python -m gluondet``."""
    script = Path(sys.executable).with_name("gluondet")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gluondet"]


def _ints(text):
    return [int(x) for x in str(text).split(",") if x.strip()]


def synth(work, size, seed, masks):
    """The generator's data for (size, seed), written once per work folder."""
    root = Path(work) / f"synth-{size}-{seed}{'-masks' if masks else ''}"
    if not (root / "ImageSets").is_dir():
        subprocess.run([*gluondet_command(), "data", "synth", str(root), "--size", str(size), "--seed", str(seed),
                        *(["--masks"] if masks else [])], check=True, capture_output=True, text=True)
    return root


def read_run(run_dir):
    """What the run folder says: best.json, the last metrics row, the guard's skipped steps and rollbacks."""
    best = json.loads((run_dir / "best.json").read_text()) if (run_dir / "best.json").exists() else {}
    rows = []
    if (run_dir / "metrics.csv").exists():
        with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))

    def total(name):
        return sum(int(float(r.get(name) or 0)) for r in rows)

    last = rows[-1] if rows else {}

    def num(name):
        return float(last[name]) if last.get(name) not in (None, "") else None

    return {"best": best.get("map"), "best_epoch": best.get("epoch"), "epochs": len(rows),
            "last_segm_ap": num("segm/AP"), "last_bbox_ap": num("bbox/AP"), "last_val_map": num("val_map"),
            "train_minutes": sum(float(r["seconds"]) for r in rows) / 60,
            "skipped_steps": total("skipped_steps"), "rollbacks": max([0] + [int(float(r.get("rollbacks") or 0))
                                                                           for r in rows])}


def run_cell(model, size, seed, args, work):
    """Generate the data, train, read the run: one result dict."""
    metric, label, floor, synth_flags = FLOORS[model]
    data = synth(work, size, seed, bool(synth_flags))
    run_dir = Path(work) / f"run-{model}-{size}-{seed}-{time.time_ns()}"
    cmd = [*gluondet_command(), "train", "--dataset", str(data), "--model", model, "--seed", str(seed),
           "--out", str(run_dir), "--quiet", *(["--epochs", str(args.epochs)] if args.epochs else []), *args.extra]
    env = dict(os.environ, MXNET_GLUON_REPO="http://127.0.0.1:9/")  # never the network
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    load_before = os.getloadavg()[0]
    tic = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    wall = time.time() - tic
    result = {"model": model, "size": size, "seed": seed, "epochs_flag": args.epochs, "extra": args.extra,
              "threads": args.threads, "metric": label, "floor": floor, "wall_minutes": wall / 60,
              "load": [round(load_before, 1), round(os.getloadavg()[0], 1)], "returncode": out.returncode,
              "run_dir": str(run_dir), **(read_run(run_dir) if run_dir.exists() else {})}
    if out.returncode:
        result["error"] = out.stderr.strip().splitlines()[-1][:300] if out.stderr.strip() else "no output"
    best = result.get("best")
    result["passed"] = bool(out.returncode == 0 and best is not None and best >= floor
                            and not result.get("rollbacks"))
    return result


def _fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def table(results):
    """Markdown table, one row per cell, then the pass count per model and size."""
    lines = ["| model | size | seed | best (floor) | at epoch | last box AP | guard: skipped / rollbacks | "
             "train min | wall min | load | threads | result |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r["model"], r["size"], r["seed"])):
        why = "pass" if r["passed"] else ("error: " + r["error"] if r.get("error") else
                                          "rollback" if r.get("rollbacks") else "below floor")
        epochs = f" ({r['epochs']} ep)" if r.get("epochs_flag") else ""
        threads = r.get("threads") or "default"
        lines.append(f"| {r['model']}{epochs} | {r['size']} | {r['seed']} | {r['metric']} {_fmt(r.get('best'))} "
                     f"(>= {r['floor']}) | {r.get('best_epoch') or '-'} | {_fmt(r.get('last_bbox_ap'))} | "
                     f"{r.get('skipped_steps', '-')} / {r.get('rollbacks', '-')} | {_fmt(r.get('train_minutes'), 1)} | "
                     f"{_fmt(r['wall_minutes'], 1)} | {r['load'][0]}-{r['load'][1]} | {threads} | {why} |")
    groups = {}
    for r in results:
        groups.setdefault((r["model"], r["size"]), []).append(r["passed"])
    summary = ", ".join(f"{m} {s} px: {sum(p)}/{len(p)}" for (m, s), p in sorted(groups.items()))
    return "\n".join(lines) + f"\n\npassed: {summary}\n"


def load_results(path):
    if not path or not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mask_rcnn_tiny,tiny_ssd", help=f"comma list of {', '.join(FLOORS)}")
    parser.add_argument("--sizes", default="256,128,512", help="image sides for gluondet data synth --size")
    parser.add_argument("--seeds", default=SEEDS, help="data and training seeds (both the same number)")
    parser.add_argument("--epochs", type=int, default=None, help="gluondet train --epochs (default: the YAML's)")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for training "
                        "(default: gluondet's choice, every usable CPU)")
    parser.add_argument("--work", default=None, help="folder for data and runs (default: a temporary one, removed)")
    parser.add_argument("--results", default=None,
                        help="JSON lines file: appended cell by cell; cells already in it are skipped")
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    parser.add_argument("--table-only", action="store_true", help="print the table of --results and stop")
    parser.add_argument("extra", nargs="*", help="more gluondet train flags, after --")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in FLOORS]
    if unknown:
        parser.error(f"no floor for {', '.join(unknown)}; known: {', '.join(FLOORS)}")
    results = load_results(args.results)
    if not args.table_only:
        done = {(r["model"], r["size"], r["seed"], r.get("epochs_flag"), tuple(r.get("extra") or ())) for r in results}
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(args.work or tmp)
            work.mkdir(parents=True, exist_ok=True)
            for model in models:  # sizes in the order given: the generator's default first by default
                for size in _ints(args.sizes):
                    for seed in _ints(args.seeds):
                        if (model, size, seed, args.epochs, tuple(args.extra)) in done:
                            continue
                        r = run_cell(model, size, seed, args, work)
                        results.append(r)
                        print(f"{model} {size} px seed {seed}: {r['metric']} {_fmt(r.get('best'))} "
                              f"(floor {r['floor']}), guard skipped {r.get('skipped_steps')} rollbacks "
                              f"{r.get('rollbacks')}, {r['wall_minutes']:.1f} min wall, load {r['load']}: "
                              f"{'pass' if r['passed'] else 'FAIL'}", flush=True)
                        if args.results:
                            with open(args.results, "a", encoding="utf-8") as f:
                                f.write(json.dumps(r) + "\n")
    text = table(results)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    return 0 if results and all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
