"""CenterNet training images/s: ``gluondet train`` against a loop written like GluonCV's
scripts/detection/center_net/train_center_net.py.

The reference loop is the script's: GluonCV's zoo CenterNet (``center_net_<base>_voc``, its classes
reset to the data's with ``reset_class``, random init), ``CenterNetDefaultTrainTransform`` targets
in a DataLoader (``Tuple(Stack() x 6)``, shuffled, ``last_batch="rollover"``), hybridized with
static alloc and shape, ``split_and_load`` of the six arrays, HeatmapFocalLoss + MaskedL1Loss (wh
x 0.1, offset x 1), ``autograd.backward`` of the per-device sums, ``trainer.step(number of
devices)``, Adam with biases out of weight decay, and its three ``mx.metric.Loss`` updated every
batch. gluondet runs the real ``gluondet train`` command, as a user runs it.

Same generated data (images without objects left out: GluonCV's VOCDetection gives them a label
its transform cannot index), same network, data shape, batch, lr and threads (``OMP_NUM_THREADS``
= the usable CPUs, or --threads, for both; the reference's data loader in its main process unless --workers).
Each leg runs in a process of its own, for two "epochs" of --iters iterations; the second is timed,
so graph building is left out for both. Both clocks stop only after MXNet finished the epoch's last
update (``mx.nd.waitall()`` in the loop; gluondet's trainer waits for the whole step before it
writes img/s to metrics.csv). The legs alternate (A B A B) for --rounds rounds. Printed: every leg,
the best of each, and the ratio gluondet / reference.

    .venv/bin/python scripts/bench/bench_center_net.py [--model center_net_resnet18_v1b] [--data-shape 256]
        [--batch-size 4] [--iters 3] [--rounds 2] [--workers 0] [--threads N]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_throughput import clean_env, keep_images_with_objects  # noqa: E402
from flop_bound import report_bound  # noqa: E402 (the FLOP bound on the training legs)

REFERENCE_LOOP = r'''
import json, sys, time, warnings
import mxnet as mx
from mxnet import autograd, gluon
import gluoncv as gcv
from gluoncv.data import VOCDetection
from gluoncv.data.batchify import Stack, Tuple
from gluoncv.data.transforms.presets.center_net import CenterNetDefaultTrainTransform

root, classes, zoo_name = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
batch_size, iters, shape, workers, lr = (int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]),
                                         float(sys.argv[8]))

class Shapes(VOCDetection):
    CLASSES = classes

ctx = [mx.cpu()]
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    net = gcv.model_zoo.get_model(zoo_name, pretrained_base=False, norm_layer=gluon.nn.BatchNorm)
    net.initialize()
    net(mx.nd.zeros((1, 3, shape, shape)))  # reset_class reads the heads' input channels
    net.reset_class(classes)
dataset = Shapes(root=root, splits=[(0, "train")])
train_data = gluon.data.DataLoader(
    dataset.transform(CenterNetDefaultTrainTransform(shape, shape, num_class=len(classes), scale_factor=net.scale)),
    batch_size, True, batchify_fn=Tuple([Stack() for _ in range(6)]), last_batch="rollover", num_workers=workers)
net.collect_params().reset_ctx(ctx)
for k, v in net.collect_params(".*bias").items():
    v.wd_mult = 0.0
trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": lr, "wd": 0.0001})
heatmap_loss = gcv.loss.HeatmapFocalLoss(from_logits=True)
wh_loss = gcv.loss.MaskedL1Loss(weight=0.1)
center_reg_loss = gcv.loss.MaskedL1Loss(weight=1.0)
metrics = [mx.metric.Loss("HeatmapFocal"), mx.metric.Loss("WHL1"), mx.metric.Loss("CenterRegL1")]
timed = None
for epoch in range(2):
    for m in metrics:
        m.reset()
    tic = time.time()
    net.hybridize(static_alloc=True, static_shape=True)
    for i, batch in enumerate(train_data):
        if i == iters:
            break
        split_data = [gluon.utils.split_and_load(batch[ind], ctx_list=ctx, batch_axis=0) for ind in range(6)]
        with autograd.record():
            sum_losses, heatmap_losses, wh_losses, center_reg_losses = [], [], [], []
            for x, heatmap_target, wh_target, wh_mask, center_reg_target, center_reg_mask in zip(*split_data):
                heatmap_pred, wh_pred, center_reg_pred = net(x)
                wh_losses.append(wh_loss(wh_pred, wh_target, wh_mask))
                center_reg_losses.append(center_reg_loss(center_reg_pred, center_reg_target, center_reg_mask))
                heatmap_losses.append(heatmap_loss(heatmap_pred, heatmap_target))
                sum_losses.append(heatmap_losses[-1] + wh_losses[-1] + center_reg_losses[-1])
            autograd.backward(sum_losses)
        trainer.step(len(sum_losses))
        for m, losses in zip(metrics, (heatmap_losses, wh_losses, center_reg_losses)):
            m.update(0, losses)
    mx.nd.waitall()  # the last backward and update may still run
    timed = iters * batch_size / (time.time() - tic)
print(json.dumps({"images_per_sec": timed}))
'''


def run_reference(root, classes, args, env):
    out = subprocess.run([sys.executable, "-c", REFERENCE_LOOP, str(root), json.dumps(classes), f"{args.model}_voc",
                          str(args.batch_size), str(args.iters), str(args.data_shape), str(args.workers), str(args.lr)],
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(f"reference loop failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["images_per_sec"]


def run_gluondet(root, args, work, env):
    run_dir = Path(work) / f"run-{time.time_ns()}"
    cmd = [sys.executable, "-c", "from gluondet.cli import main; main()", "train", "--dataset", str(root),
           "--model", args.model, "--no-pretrained-base", "--data-shape", str(args.data_shape),
           "--batch-size", str(args.batch_size), "--epochs", "2", "--max-iters", str(args.iters),
           "--lr", str(args.lr), "--wd", "0.0001", "--warmup-epochs", "0", "--val-split", "val", "--out", str(run_dir)]
    if args.engine:  # gluondet keeps an engine set in the environment
        env = dict(env, MXNET_ENGINE_TYPE=args.engine)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(f"gluondet train failed:\n{out.stderr[-3000:]}")
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return float(rows[1]["images_per_sec"])  # the second epoch, like the reference's


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="center_net_resnet18_v1b",
                        help="a gluondet CenterNet with a GluonCV zoo twin (<model>_voc)")
    parser.add_argument("--data-shape", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--iters", type=int, default=3, help="iterations per epoch (the 2nd epoch is timed)")
    parser.add_argument("--images", type=int, default=32, help="generated training images")
    parser.add_argument("--lr", type=float, default=1.25e-4)
    parser.add_argument("--workers", type=int, default=0, help="the reference loop's DataLoader workers")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the two legs, alternated")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of both legs [usable CPUs]")
    parser.add_argument("--engine", default=None,
                        help="MXNET_ENGINE_TYPE for the gluondet leg [gluondet's choice: NaiveEngine on CPUs]")
    args = parser.parse_args()

    from gluondet.data.synth import SHAPES_CLASSES, write_shapes_voc
    from gluondet.runtime import usable_cpus

    cpus = usable_cpus()
    threads = args.threads or cpus
    env = clean_env(OMP_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as work:
        root = write_shapes_voc(Path(work) / "shapes", n_train=args.images, n_val=2, seed=0, size=256)
        keep_images_with_objects(root, "train")
        voc_root = Path(work) / "voc"  # GluonCV's VOCDetection reads <root>/VOC<year>/...
        voc_root.mkdir()
        (voc_root / "VOC0").symlink_to(root)
        print(f"{args.model}, data shape {args.data_shape}, batch {args.batch_size}, {args.iters} timed iterations, "
              f"{cpus} usable CPUs, OMP_NUM_THREADS={threads}, reference loop's workers {args.workers}, "
              f"load average before: {os.getloadavg()[0]:.1f}")
        legs = {"reference": [], "gluondet": []}
        for _ in range(args.rounds):
            legs["reference"].append(run_reference(voc_root, list(SHAPES_CLASSES), args, env))
            legs["gluondet"].append(run_gluondet(root, args, work, env))
        reference, ours = max(legs["reference"]), max(legs["gluondet"])
        every = {k: ", ".join(f"{v:.3f}" for v in values) for k, values in legs.items()}
        print(f"train_center_net.py-style loop: {reference:.3f} img/s  (legs {every['reference']})")
        print(f"gluondet train:                 {ours:.3f} img/s  (legs {every['gluondet']})")
        print(f"ratio gluondet / reference:     {ours / reference:.2f}x  (load average after: {os.getloadavg()[0]:.1f})")
    return 0 if report_bound(args.model, legs, data_shape=args.data_shape) else 1


if __name__ == "__main__":
    sys.exit(main())
