"""Training images/s: gluondet's loop against the classic GluonCV custom-SSD tutorial loop.

The tutorial loop (GluonCV's "finetune a detection model" tutorial, as people copy it): SSD train
transform run in the main process (``num_workers=0``), hybridized network, ``split_and_load``,
SSDMultiBoxLoss, and ``mx.metric.Loss`` updated and read every batch. It runs twice: in the default
environment (MXNet's own OpenMP sizing, half the cores) and with ``OMP_NUM_THREADS`` set to the
usable CPUs (its best thread setting). gluondet runs the real ``gluondet train`` command.

Every configuration runs in its own process (thread settings apply only before MXNet is imported),
on the same generated data, network (ssd_512_vgg16_atrous, random init), data shape and batch
size. Each trains two "epochs" of ``--iters`` iterations; the second one is timed, so graph
building and first-touch allocation are left out for all alike. Both clocks stop only once MXNet
has finished the epoch's last update (``mx.nd.waitall()`` in the tutorial loop; gluondet's
trainer waits for the whole step before it logs img/s in metrics.csv). The three configurations
take turns for --rounds rounds (A B C A B C), so a change in machine load hits all of them.
Printed: the best images/s of each and the ratios gluondet / tutorial.

Beside each images/s: the FLOP bound (``flop_bound.py``). The network's FLOP per training image
is counted once from its graph (2 FLOP per multiply-add of every convolution and dense layer:
forward, plus the input and weight gradients where they are needed: ~3x the forward pass), and a
convolution peak is measured before every leg (large 3x3 convolutions timed between
``mx.nd.waitall()`` calls; the best of the run counts). A leg faster than peak / FLOP per image is
refused: an error row, and the script exits 1. Every leg names the 1-minute load average at its end;
absolute images/s are only comparable on an idle machine, ratios of alternated legs also under load.

    .venv/bin/python scripts/bench/bench_train_throughput.py [--batch-size 4] [--iters 4] [--data-shape 512] [--rounds 2]
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

from flop_bound import THREAD_VARS, best_peak, bound_rows, count_line, cpu_line, flop_bound

TUTORIAL_LOOP = r'''
import json, sys, time
import mxnet as mx
from mxnet import autograd, gluon
import gluoncv as gcv
from gluoncv.data import VOCDetection
from gluoncv.data.batchify import Stack, Tuple
from gluoncv.data.transforms.presets.ssd import SSDDefaultTrainTransform

root, classes, batch_size, iters, shape = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])

class Shapes(VOCDetection):
    CLASSES = classes

ctx = [mx.cpu()]
net = gcv.model_zoo.get_model("ssd_512_vgg16_atrous_custom", classes=classes, pretrained_base=False)
net.initialize()
dataset = Shapes(root=root, splits=[(0, "train")])
with autograd.train_mode():
    _, _, anchors = net(mx.nd.zeros((1, 3, shape, shape)))
batchify_fn = Tuple(Stack(), Stack(), Stack())
train_data = gluon.data.DataLoader(dataset.transform(SSDDefaultTrainTransform(shape, shape, anchors)),
                                   batch_size, True, batchify_fn=batchify_fn, last_batch="rollover",
                                   num_workers=0)
net.collect_params().reset_ctx(ctx)
trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.0002, "wd": 0.0005, "momentum": 0.9})
mbox_loss = gcv.loss.SSDMultiBoxLoss()
ce_metric = mx.metric.Loss("CrossEntropy")
smoothl1_metric = mx.metric.Loss("SmoothL1")
timed = None
for epoch in range(2):
    ce_metric.reset(); smoothl1_metric.reset()
    tic = time.time()
    net.hybridize(static_alloc=True, static_shape=True)
    for i, batch in enumerate(train_data):
        if i == iters:
            break
        batch_size = batch[0].shape[0]
        data = gluon.utils.split_and_load(batch[0], ctx_list=ctx, batch_axis=0)
        cls_targets = gluon.utils.split_and_load(batch[1], ctx_list=ctx, batch_axis=0)
        box_targets = gluon.utils.split_and_load(batch[2], ctx_list=ctx, batch_axis=0)
        with autograd.record():
            cls_preds, box_preds = [], []
            for x in data:
                cls_pred, box_pred, _ = net(x)
                cls_preds.append(cls_pred)
                box_preds.append(box_pred)
            sum_loss, cls_loss, box_loss = mbox_loss(cls_preds, box_preds, cls_targets, box_targets)
            autograd.backward(sum_loss)
        trainer.step(1)
        ce_metric.update(0, [l * batch_size for l in cls_loss])
        smoothl1_metric.update(0, [l * batch_size for l in box_loss])
        name1, loss1 = ce_metric.get()
        name2, loss2 = smoothl1_metric.get()
    mx.nd.waitall()  # the metrics wait for the forward losses only: the last backward and update may still run
    timed = (iters * batch_size) / (time.time() - tic)
print(json.dumps({"images_per_sec": timed}))
'''


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env.update(extra)
    return env


def run_tutorial(root, classes, args, env):
    out = subprocess.run([sys.executable, "-c", TUTORIAL_LOOP, str(root), json.dumps(classes),
                          str(args.batch_size), str(args.iters), str(args.data_shape)],
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(f"tutorial loop failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["images_per_sec"]


def run_gluondet(root, args, work):
    run_dir = Path(work) / f"run-{time.time_ns()}"
    cmd = [sys.executable, "-c", "from gluondet.cli import main; main()", "train", "--dataset", str(root),
           "--model", "ssd_512_vgg16_atrous", "--no-pretrained-base", "--data-shape", str(args.data_shape),
           "--batch-size", str(args.batch_size), "--epochs", "2", "--max-iters", str(args.iters),
           "--lr", "0.0002", "--warmup-epochs", "0", "--val-split", "val", "--out", str(run_dir)]
    out = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(f"gluondet train failed:\n{out.stderr[-3000:]}")
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return float(rows[1]["images_per_sec"])  # the second epoch, like the tutorial's


def keep_images_with_objects(root, split):
    """Drop images without objects from a split: GluonCV's VOCDetection + SSD transform crash on
    them (a 1-D empty label), and both loops must see the same images."""
    split_file = Path(root) / "ImageSets" / "Main" / f"{split}.txt"
    ids = [i for i in split_file.read_text().split()
           if "<object>" in (Path(root) / "Annotations" / f"{i}.xml").read_text()]
    split_file.write_text("".join(f"{i}\n" for i in ids))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--iters", type=int, default=4, help="iterations per epoch (the 2nd epoch is timed)")
    parser.add_argument("--data-shape", type=int, default=512)
    parser.add_argument("--images", type=int, default=32, help="generated training images")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the three legs, alternated")
    args = parser.parse_args()

    from gluondet.data.synth import SHAPES_CLASSES, write_shapes_voc
    from gluondet.runtime import usable_cpus

    # Both loops build GluonCV's ssd_512_vgg16_atrous_custom and train every parameter: one count.
    flop = flop_bound("count", "--model", "ssd_512_vgg16_atrous", "--data-shape", str(args.data_shape))
    with tempfile.TemporaryDirectory() as work:
        root = write_shapes_voc(Path(work) / "shapes", n_train=args.images, n_val=2, seed=0, size=256)
        keep_images_with_objects(root, "train")
        # GluonCV's VOCDetection reads <root>/VOC<year>/...: give it the same folder under that name.
        voc_root = Path(work) / "voc"
        voc_root.mkdir()
        (voc_root / "VOC0").symlink_to(root)
        classes = list(SHAPES_CLASSES)
        cpus = usable_cpus()
        print(cpu_line())
        print(f"ssd_512_vgg16_atrous, data shape {args.data_shape}, batch {args.batch_size}, "
              f"{args.iters} timed iterations, {cpus} usable CPUs")
        print(count_line(flop))
        names = {"default": "tutorial loop, default environment",
                 "tuned": f"tutorial loop, OMP_NUM_THREADS={cpus}", "gluondet": "gluondet train"}
        legs = {names[k]: [] for k in names}
        loads = {names[k]: [] for k in names}
        peaks = []
        for _ in range(args.rounds):
            for key, run_leg in (
                    ("default", lambda: run_tutorial(voc_root, classes, args, clean_env())),
                    ("tuned", lambda: run_tutorial(voc_root, classes, args, clean_env(OMP_NUM_THREADS=str(cpus)))),
                    ("gluondet", lambda: run_gluondet(root, args, work))):
                peaks.append(flop_bound("peak"))  # before every leg: the load changes
                legs[names[key]].append(run_leg())
                loads[names[key]].append(os.getloadavg()[0])
        peak, line = best_peak(peaks)
        print(line)
        lines, within = bound_rows(legs, loads, peak["gflops"], flop["total"])
        print("\n".join(lines))
        default, tuned, ours = (max(legs[names[k]]) for k in ("default", "tuned", "gluondet"))
        print(f"ratio gluondet / tutorial (default env):  {ours / default:.2f}x")
        print(f"ratio gluondet / tutorial (OMP threads):  {ours / tuned:.2f}x")
        if not within:
            sys.exit(1)


if __name__ == "__main__":
    main()
