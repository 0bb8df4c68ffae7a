"""YOLOv3 training images/s: ``gluondet train`` against a loop written like GluonCV's train_yolo3.py.

The reference is the loop of GluonCV's scripts/detection/yolo/train_yolo3.py: ``MixupDetection``
over the dataset (Beta(1.5, 1.5)), one ``YOLO3DefaultTrainTransform(s, s, net, mixup=True)`` per
input side (each runs the network once for its anchors), ``RandomTransformDataLoader`` drawing a
side every 10 batches (``--workers`` processes; with one side, ``--sizes`` not given, the script's
``--no-random-shape`` DataLoader), ``net.hybridize()``, ``split_and_load``,
``net(x, gt_boxes, *targets)`` in ``autograd.record()``, ``autograd.backward`` of the summed
losses, ``trainer.step(batch_size)`` with no-wd and label smoothing set as the script sets them,
and its four ``mx.metric.Loss`` updates every batch; MXNet's default engine. Images without
objects are left out of its dataset (GluonCV's transform fails on them; the script trains on VOC,
which has none). gluondet runs the real ``gluondet train`` as a user would (its engine and data
loading; on CPUs the synchronous engine, data read in the main process) with the same model,
data, batch, options (mixup, label smoothing, no-wd, random sides) and OpenMP threads. Both run
two "epochs" of ``--iters`` iterations and time the second (graphs traced and memory allocated in
the first: the reference hybridizes once, as gluondet does without a validation between), clocks
stopped after ``mx.nd.waitall()``.

Legs alternate (reference, gluondet, reference, gluondet; each in its own process); the best of
each is printed with the ratio. Measure on an idle machine, or say how loaded it was.

    .venv/bin/python scripts/bench/bench_yolo3.py [--model yolo3_tiny] [--data-shape 192]
        [--sizes LOW,HIGH] [--batch-size 8] [--iters 20] [--rounds 2] [--workers 1] [--gluondet-workers N]
        [--threads N]
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

from flop_bound import report_bound  # the FLOP bound on the training legs, measured in the same run

REFERENCE = r'''
import json, sys, time, warnings
import numpy as np
import mxnet as mx
from mxnet import autograd, gluon
from gluoncv.data import MixupDetection
from gluoncv.data.batchify import Pad, Stack, Tuple
from gluoncv.data.dataloader import RandomTransformDataLoader
from gluoncv.data.transforms.presets.yolo import YOLO3DefaultTrainTransform
from gluondet.config import resolve_dataset, resolve_model_config
from gluondet.data import load_dataset
from gluondet.models import build_model

root, model, data_shape, low, high, batch_size, iters, workers = sys.argv[1:9]
data_shape, low, high, batch_size, iters, workers = map(int, (data_shape, low, high, batch_size, iters, workers))
dataset = load_dataset(resolve_dataset(root), "train")

class WithObjects(gluon.data.Dataset):
    def __init__(self, ds):
        self.ds, self.keep = ds, [i for i in range(len(ds)) if len(ds.label(i))]
    def __len__(self):
        return len(self.keep)
    def __getitem__(self, i):
        return self.ds[self.keep[i]]

cfg = dict(resolve_model_config(model), data_shape=data_shape)
net = build_model(cfg, dataset.classes, pretrained_base=False)
train_dataset = MixupDetection(WithObjects(dataset))
batchify_fn = Tuple(*([Stack() for _ in range(6)] + [Pad(axis=0, pad_val=-1) for _ in range(1)]))
if low == high:  # the script's --no-random-shape branch
    train_data = gluon.data.DataLoader(
        train_dataset.transform(YOLO3DefaultTrainTransform(low, low, net, mixup=True)), batch_size, True,
        batchify_fn=batchify_fn, last_batch="rollover", num_workers=workers)
else:
    transform_fns = [YOLO3DefaultTrainTransform(x, x, net, mixup=True) for x in range(low, high + 1, 32)]
    train_data = RandomTransformDataLoader(transform_fns, train_dataset, batch_size=batch_size, interval=10,
                                           last_batch="rollover", shuffle=True, batchify_fn=batchify_fn,
                                           num_workers=workers)
ctx = [mx.cpu()]
net.collect_params().reset_ctx(ctx)
for k, v in net.collect_params(".*beta|.*gamma|.*bias").items():
    v.wd_mult = 0.0
net._target_generator._label_smooth = True
trainer = gluon.Trainer(net.collect_params(), "sgd", {"wd": 0.0005, "momentum": 0.9, "learning_rate": 0.001},
                        kvstore="local")
metrics = [mx.metric.Loss(n) for n in ("ObjLoss", "BoxCenterLoss", "BoxScaleLoss", "ClassLoss")]
speed = None
net.hybridize()
for epoch in range(2):
    train_dataset.set_mixup(np.random.beta, 1.5, 1.5)
    mx.nd.waitall()
    tic, n = time.time(), 0
    for i, batch in enumerate(train_data):
        if i == iters:
            break
        data = gluon.utils.split_and_load(batch[0], ctx_list=ctx, batch_axis=0)
        fixed_targets = [gluon.utils.split_and_load(batch[it], ctx_list=ctx, batch_axis=0) for it in range(1, 6)]
        gt_boxes = gluon.utils.split_and_load(batch[6], ctx_list=ctx, batch_axis=0)
        sum_losses, losses = [], [[], [], [], []]
        with autograd.record():
            for ix, x in enumerate(data):
                obj_loss, center_loss, scale_loss, cls_loss = net(x, gt_boxes[ix], *[ft[ix] for ft in fixed_targets])
                sum_losses.append(obj_loss + center_loss + scale_loss + cls_loss)
                for part, value in zip(losses, (obj_loss, center_loss, scale_loss, cls_loss)):
                    part.append(value)
            autograd.backward(sum_losses)
        trainer.step(batch[0].shape[0])
        for metric, part in zip(metrics, losses):
            metric.update(0, part)
        n += batch[0].shape[0]
    mx.nd.waitall()
    speed = n / (time.time() - tic)
print(json.dumps({"images_per_sec": speed}))
'''


def _env(threads):
    return dict(os.environ, MXNET_GLUON_REPO="http://127.0.0.1:9/", OMP_NUM_THREADS=str(threads))


def reference_leg(args, root):
    low, high = args.sizes
    out = subprocess.run([sys.executable, "-c", REFERENCE, str(root), args.model, str(args.data_shape), str(low),
                          str(high), str(args.batch_size), str(args.iters), str(args.workers)],
                         capture_output=True, text=True, check=False, env=_env(args.threads))
    if out.returncode:
        sys.exit(f"reference leg failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["images_per_sec"]


def gluondet_leg(args, root, work):
    """``gluondet train`` for two epochs: the second epoch's images/s from metrics.csv."""
    run_dir = Path(work) / f"run-{time.time_ns()}"
    low, high = args.sizes
    options = {"mixup": True, "no_mixup_epochs": 0, "label_smooth": True, "no_wd": True, "random_shape": low != high,
               "random_shape_range": [low, high], "random_shape_every": 10}
    cmd = [sys.executable, "-c", "from gluondet.cli import main; main()", "train", "--dataset", str(root),
           "--model", args.model, "--data-shape", str(args.data_shape), "--batch-size", str(args.batch_size),
           "--max-iters", str(args.iters), "--epochs", "2", "--lr", "0.001", "--lr-mode", "step",
           "--warmup-epochs", "0", "--augment", "ssd", "--no-pretrained-base", "--val-interval", "100",
           "--out", str(run_dir), "--quiet"]
    for key, value in options.items():
        cmd += ["--model-option", f"{key}={json.dumps(value)}"]
    if args.gluondet_workers is not None:
        cmd += ["--num-workers", str(args.gluondet_workers)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=_env(args.threads))
    if out.returncode:
        sys.exit(f"gluondet train failed:\n{out.stderr[-3000:]}")
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as f:
        return float(list(csv.DictReader(f))[1]["images_per_sec"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolo3_tiny", help="a gluondet YOLOv3 model (configs/models)")
    parser.add_argument("--data-shape", type=int, default=192)
    parser.add_argument("--sizes", default=None,
                        help="low,high random input sides (by 32; default: --data-shape alone). Random sides make "
                             "the legs noisy: a side drawn every 10 iterations changes a leg's cost 2.6x (160 vs 256)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--iters", type=int, default=20, help="iterations per epoch (the 2nd epoch is timed)")
    parser.add_argument("--rounds", type=int, default=2, help="reference/gluondet pairs, alternated")
    parser.add_argument("--workers", type=int, default=1, help="the reference's DataLoader worker processes")
    parser.add_argument("--gluondet-workers", type=int, default=None,
                        help="gluondet train --num-workers (default: gluondet's own choice)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="OpenMP threads, both legs")
    args = parser.parse_args()
    args.sizes = [int(v) for v in args.sizes.split(",")] if args.sizes else [args.data_shape] * 2

    from gluondet.data.synth import write_shapes_voc

    with tempfile.TemporaryDirectory() as work:
        root = write_shapes_voc(Path(work) / "shapes", n_train=max(64, args.batch_size * args.iters + 16), n_val=8,
                                seed=0, size=256)
        legs = {"reference": [], "gluondet": []}
        for r in range(args.rounds):
            legs["reference"].append(reference_leg(args, root))
            legs["gluondet"].append(gluondet_leg(args, root, work))
            print(f"round {r + 1}: reference {legs['reference'][-1]:.2f} img/s, "
                  f"gluondet {legs['gluondet'][-1]:.2f} img/s", flush=True)
    best = {k: max(v) for k, v in legs.items()}
    load = os.getloadavg()
    sides = f"random {args.sizes[0]}-{args.sizes[1]}" if args.sizes[0] != args.sizes[1] else "fixed"
    print(f"{args.model} at {args.data_shape} px ({sides}), batch {args.batch_size}, "
          f"{args.threads} thread(s), mixup + label smoothing + no-wd: GluonCV train_yolo3.py loop "
          f"{best['reference']:.2f} img/s (legs {', '.join(f'{v:.2f}' for v in legs['reference'])}), "
          f"gluondet train {best['gluondet']:.2f} img/s (legs {', '.join(f'{v:.2f}' for v in legs['gluondet'])}): "
          f"{best['gluondet'] / best['reference']:.2f}x; load average {load[0]:.1f}")
    # the bound at the smallest side a leg trains at (random shapes: a smaller image costs less)
    return 0 if report_bound(args.model, legs, data_shape=args.sizes[0]) else 1


if __name__ == "__main__":
    sys.exit(main())
