"""Mask R-CNN training and detection images/s: gluondet against GluonCV's reference loops.

Training. The reference is GluonCV's own Mask R-CNN step (``ForwardBackwardTask`` from
gluoncv.model_zoo.rcnn.mask_rcnn.data_parallel, what scripts/instance/mask_rcnn/train_mask_rcnn.py
runs per device) fed by GluonCV's ``MaskRCNNDefaultTrainTransform`` on the COCO polygons, FPN RPN
targets concatenated per image, in a DataLoader with ``--workers`` processes, on GluonCV's own RoI
pooling, in MXNet's default environment. gluondet runs the real ``gluondet train`` as a user
would: its own threads, engine and loading (on CPUs: the synchronous engine, data read in the main
process; ``--gluondet-workers N`` passes ``--num-workers N``). Same generated data (``data synth
--masks``), same network (configs/models/mask_rcnn_tiny.yaml, random init); two "epochs" of
``--iters`` iterations each, the second timed (graph building left out for both).

Detection. The reference is the GluonCV demo loop: ``load_test`` one image, forward, masks
expanded with ``gluoncv.utils.viz.expand_mask``, in MXNet's default environment. gluondet runs
``pipeline.detect_files`` (batched reading), with masks pasted and encoded as RLE, in the
environment ``gluondet detect`` sets up (OpenMP threads and engine, gluondet/runtime.py). Both on
the network the gluondet leg trained, over ``--detect-images`` images, clocks stopped after
``mx.nd.waitall()``.

Legs alternate (reference, gluondet, reference, gluondet; each in its own process) and the
best of each is printed with the ratio. Measure on an idle machine, or say how loaded it was.

    .venv/bin/python scripts/bench/bench_mask_rcnn.py [--iters 20] [--rounds 2] [--detect-images 32]
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

REFERENCE_TRAIN = r'''
import json, sys, time
import numpy as np
import mxnet as mx
from mxnet import gluon
from gluoncv.data.batchify import Append, Tuple
from gluoncv.data.transforms.presets.rcnn import MaskRCNNDefaultTrainTransform
from gluoncv.model_zoo.rcnn.mask_rcnn.data_parallel import ForwardBackwardTask
from pycocotools.coco import COCO
from gluondet.config import resolve_model_config
from gluondet.image import read_image
from gluondet.models import build_model

root, iters, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
coco = COCO(root + "/annotations/instances_train.json")
classes = [c["name"] for c in coco.dataset["categories"]]
net = build_model(resolve_model_config("mask_rcnn_tiny"), classes, pretrained_base=False)
del net._pyramid_roi_feats  # GluonCV's own RoI pooling for the reference

class Polygons(gluon.data.Dataset):
    """(image, label, polygons) as GluonCV's COCOInstance gives them."""
    def __init__(self):
        self.ids = [i for i in sorted(coco.imgs) if coco.imgToAnns[i]]
    def __len__(self):
        return len(self.ids)
    def __getitem__(self, k):
        img = coco.imgs[self.ids[k]]
        anns = coco.imgToAnns[self.ids[k]]
        label = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3],
                           a["category_id"] - 1] for a in anns], np.float32)
        polys = [[np.array(p, np.float32).reshape(-1, 2) for p in a["segmentation"]] for a in anns]
        return mx.nd.array(read_image(root + "/" + img["file_name"]), dtype=np.uint8), label, polys

class Flat:
    """GluonCV's transform, with the FPN levels' RPN targets concatenated as the network outputs them."""
    def __init__(self, transform):
        self.t = transform
    def __call__(self, *item):
        img, label, cls_t, box_t, box_m, masks = self.t(*item)
        flat = [np.concatenate([np.asarray(x).reshape(shape) for x in part]) for part, shape in
                ((cls_t, (-1,)), (box_t, (-1, 4)), (box_m, (-1, 4)))]
        return (img, label, masks, *flat)

transform = Flat(MaskRCNNDefaultTrainTransform(net.short, net.max_size, net, multi_stage=True))
loader = gluon.data.DataLoader(Polygons().transform(lambda *x: transform(*x)), 1, shuffle=True,
                               batchify_fn=Tuple(*[Append() for _ in range(6)]), last_batch="rollover",
                               num_workers=workers)
ctx = mx.cpu()
net.collect_params().reset_ctx(ctx)
net.collect_params().setattr("grad_req", "null")
net.collect_train_params().setattr("grad_req", "write")
trainer = gluon.Trainer(net.collect_train_params(), "sgd",
                        {"learning_rate": 0.003, "wd": 1e-4, "momentum": 0.9, "clip_gradient": 5})
task = ForwardBackwardTask(net, trainer, mx.gluon.loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=False),
                           mx.gluon.loss.HuberLoss(rho=1 / 9.0), mx.gluon.loss.SoftmaxCrossEntropyLoss(),
                           mx.gluon.loss.HuberLoss(), mx.gluon.loss.SigmoidBinaryCrossEntropyLoss(), False)
net.hybridize(static_alloc=True)
speed = None
for epoch in range(2):
    tic, n = time.time(), 0
    for i, batch in enumerate(loader):
        if i == iters:
            break
        parts = [[x.as_in_context(ctx) for x in part] for part in batch]
        for data, label, gt_mask, rpn_cls, rpn_box, rpn_mask in zip(*parts):
            losses = task.forward_backward((data, label, gt_mask, rpn_cls, rpn_box, rpn_mask))
            n += 1
        trainer.step(len(parts[0]))
        [l.asscalar() for l in losses[:5]]  # the reference logs its metrics every batch
    mx.nd.waitall()
    speed = n / (time.time() - tic)
print(json.dumps({"images_per_sec": speed}))
'''

REFERENCE_DETECT = r'''
import json, sys, time
import mxnet as mx
from gluoncv.data.transforms.presets.rcnn import load_test
from gluoncv.utils.viz import expand_mask
from gluondet.run_folder import RunFolder

run, images = sys.argv[1], json.loads(sys.argv[2])
net, _ = RunFolder.open(run).load_network()
del net._pyramid_roi_feats
net.hybridize(static_alloc=True)
def one(path):
    x, orig = load_test(path, short=net.short, max_size=net.max_size)
    ids, scores, bboxes, masks = [o[0].asnumpy() for o in net(x)]
    scale = orig.shape[0] / x.shape[2]
    keep = ids.reshape(-1) >= 0
    return expand_mask(masks[keep], bboxes[keep] * scale, (orig.shape[1], orig.shape[0]), scores[keep], thresh=0.5)
one(images[0])  # builds the graph
tic = time.time()
for path in images:
    one(path)
mx.nd.waitall()
print(json.dumps({"images_per_sec": len(images) / (time.time() - tic)}))
'''

GLUONDET_DETECT = r'''
import json, sys, time
from gluondet.runtime import configure_engine, configure_threads
configure_threads()  # what `gluondet detect --ctx cpu` sets up before MXNet starts
configure_engine("cpu")
import mxnet as mx
from gluondet.pipeline import detect_files
from gluondet.predict import Detector

run, images = sys.argv[1], json.loads(sys.argv[2])
det = Detector.load(run, which="last")
list(detect_files(det, images[:1], thresh=0.5, progress=False))  # builds the graph
tic = time.time()
for result in detect_files(det, images, thresh=0.5, progress=False):
    if result.detections is not None:
        result.detections.records(det.classes)  # masks encoded as RLE, as detect --json writes them
mx.nd.waitall()
print(json.dumps({"images_per_sec": len(images) / (time.time() - tic)}))
'''


def _env():
    return dict(os.environ, MXNET_GLUON_REPO="http://127.0.0.1:9/")


def run_leg(code, *args, env=None):
    """Run ``code`` with ``args`` in a process of its own; the images_per_sec its last line prints."""
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                         check=False, env=env or _env())
    if out.returncode:
        sys.exit(f"leg failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["images_per_sec"]


def train_images_per_sec(flags, run_dir, env=None):
    """``gluondet train FLAGS`` for two epochs into ``run_dir`` in a process of its own: the second
    epoch's images/s from metrics.csv (graph building left out)."""
    cmd = [sys.executable, "-c", "from gluondet.cli import main; main()", "train", *map(str, flags), "--epochs", "2",
           "--warmup-epochs", "0", "--val-interval", "100", "--out", str(run_dir), "--quiet"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env or _env())
    if out.returncode:
        sys.exit(f"gluondet train failed:\n{out.stderr[-3000:]}")
    with open(Path(run_dir) / "metrics.csv", newline="", encoding="utf-8") as f:
        return float(list(csv.DictReader(f))[1]["images_per_sec"])


def gluondet_train(root, args, work):
    run_dir = Path(work) / f"run-{time.time_ns()}"
    flags = ["--dataset", root / "coco.yaml", "--model", "mask_rcnn_tiny", "--max-iters", args.iters, "--lr", 0.003]
    if args.gluondet_workers is not None:
        flags += ["--num-workers", args.gluondet_workers]
    return train_images_per_sec(flags, run_dir), run_dir


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=20, help="iterations per epoch (the 2nd epoch is timed)")
    parser.add_argument("--rounds", type=int, default=2, help="reference/gluondet pairs, alternated")
    parser.add_argument("--workers", type=int, default=1, help="the reference's DataLoader worker processes")
    parser.add_argument("--gluondet-workers", type=int, default=None,
                        help="gluondet train --num-workers (default: gluondet's own choice)")
    parser.add_argument("--detect-images", type=int, default=32)
    args = parser.parse_args()

    from gluondet.data.synth import write_shapes_voc

    with tempfile.TemporaryDirectory() as work:
        root = write_shapes_voc(Path(work) / "shapes", n_train=max(64, args.iters * 2), n_val=args.detect_images,
                                seed=0, size=128, masks=True)
        images = [str(p) for p in sorted((root / "JPEGImages").glob("*.jpg"))[-args.detect_images:]]
        print(f"mask_rcnn_tiny (128 px, random init), {args.iters} timed iterations, {args.workers} reference worker(s), "
              f"{args.detect_images} detect images, {os.cpu_count()} CPUs")
        train = {"reference": [], "gluondet": []}
        detect = {"reference": [], "gluondet": []}
        run_dir = None
        for r in range(args.rounds):
            train["reference"].append(run_leg(REFERENCE_TRAIN, root, args.iters, args.workers))
            speed, run_dir = gluondet_train(root, args, work)
            train["gluondet"].append(speed)
            detect["reference"].append(run_leg(REFERENCE_DETECT, run_dir, json.dumps(images)))
            detect["gluondet"].append(run_leg(GLUONDET_DETECT, run_dir, json.dumps(images)))
            print(f"round {r + 1}: train ref {train['reference'][-1]:.2f} / gluondet {train['gluondet'][-1]:.2f} "
                  f"img/s; detect ref {detect['reference'][-1]:.2f} / gluondet {detect['gluondet'][-1]:.2f} img/s")
        for name, legs in (("training", train), ("detection", detect)):
            ref, ours = max(legs["reference"]), max(legs["gluondet"])
            print(f"{name}: GluonCV reference {ref:.2f} img/s, gluondet {ours:.2f} img/s, ratio {ours / ref:.2f}x")
    return 0 if report_bound("mask_rcnn_tiny", {f"{k} training": v for k, v in train.items()}) else 1


if __name__ == "__main__":
    sys.exit(main())
