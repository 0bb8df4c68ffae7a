"""SSD training images/s on one device: gluondet's step against GluonCV's reference loop, same run.

The reference loop is what GluonCV's scripts/detection/ssd/train_ssd.py does per iteration: its
SSDDefaultTrainTransform computing the targets in DataLoader workers, ``split_and_load``, a
hybridized network, SSDMultiBoxLoss, ``trainer.step(1)`` and the two loss metrics updated every
batch. gluondet's leg is its own loader (the SSD family's train_loader, same augmentation),
``SSDStep`` and the same ``gluon.Trainer`` settings. Both read the same generated shapes images,
build the same network (random init) at the same data shape and batch size, on the same device.

Legs alternate (gluondet, reference, gluondet, reference, ...) after one untimed warm-up leg each
(graph building, cuDNN autotuning, first-touch allocation); every timed leg runs ``--iters``
iterations and its clock stops only after ``mx.nd.waitall()``. Printed: images/s of every leg, the
median of each loop, and the ratio gluondet / reference.

    .venv/bin/python scripts/bench/bench_gpu_train.py --ctx gpu0 [--model ssd_512_vgg16_atrous]
        [--data-shape 512] [--batch-size 16] [--iters 10] [--rounds 2] [--num-workers 4]
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

LR, WD, MOMENTUM = 0.0002, 0.0005, 0.9


def endless(loader):
    while True:
        yield from loader


class GluondetLoop:
    name = "gluondet"

    def __init__(self, model_cfg, dataset, indices, args, ctx_list):
        from mxnet import gluon

        from gluondet.families import get_family
        from gluondet.models import build_model

        self.net = build_model(model_cfg, dataset.classes, pretrained_base=False)
        ssd = get_family("ssd")
        loader = ssd.train_loader(self.net, dataset, args.data_shape, args.batch_size, args.num_workers,
                                  indices, augment="ssd")
        self.batches = endless(loader)
        self.step = ssd.make_step()
        self.step.prepare(self.net, ctx_list)
        self.trainer = gluon.Trainer(self.net.collect_params(), "sgd",
                                     {"learning_rate": LR, "wd": WD, "momentum": MOMENTUM})
        ssd.hybridize_for_training(self.net)
        self.ctx_list = ctx_list

    def iteration(self):
        batch = next(self.batches)
        self.step(self.net, batch, self.ctx_list)  # reads the losses back, as the training loop does
        self.trainer.step(self.step.step_batch_size(batch))
        return batch[0].shape[0]


class ReferenceLoop:
    name = "GluonCV train_ssd.py loop"

    def __init__(self, model_cfg, dataset, indices, args, ctx_list):
        import mxnet as mx
        from gluoncv.data.batchify import Stack, Tuple
        from gluoncv.data.transforms.presets.ssd import SSDDefaultTrainTransform
        from gluoncv.loss import SSDMultiBoxLoss
        from mxnet import autograd, gluon

        from gluondet.data.loader import MappedDataset
        from gluondet.models import build_model

        self.net = build_model(model_cfg, dataset.classes, pretrained_base=False)
        with autograd.train_mode():
            _, _, anchors = self.net(mx.nd.zeros((1, 3, args.data_shape, args.data_shape)))
        transform = SSDDefaultTrainTransform(args.data_shape, args.data_shape, anchors)
        loader = gluon.data.DataLoader(MappedDataset(dataset, transform, indices), args.batch_size, shuffle=True,
                                       batchify_fn=Tuple(Stack(), Stack(), Stack()), last_batch="rollover",
                                       num_workers=args.num_workers)
        self.batches = endless(loader)
        self.net.collect_params().reset_ctx(ctx_list)
        self.trainer = gluon.Trainer(self.net.collect_params(), "sgd",
                                     {"learning_rate": LR, "wd": WD, "momentum": MOMENTUM})
        self.loss = SSDMultiBoxLoss()
        self.ce_metric, self.l1_metric = mx.metric.Loss("CrossEntropy"), mx.metric.Loss("SmoothL1")
        self.net.hybridize(static_alloc=True, static_shape=True)
        self.ctx_list = ctx_list

    def iteration(self):
        from mxnet import autograd, gluon

        batch = next(self.batches)
        size = batch[0].shape[0]
        data, cls_targets, box_targets = (gluon.utils.split_and_load(part, self.ctx_list, batch_axis=0)
                                          for part in batch)
        with autograd.record():
            cls_preds, box_preds = [], []
            for x in data:
                cls_pred, box_pred, _ = self.net(x)
                cls_preds.append(cls_pred)
                box_preds.append(box_pred)
            sum_loss, cls_loss, box_loss = self.loss(cls_preds, box_preds, cls_targets, box_targets)
            autograd.backward(sum_loss)
        self.trainer.step(1)
        self.ce_metric.update(0, [loss * size for loss in cls_loss])
        self.l1_metric.update(0, [loss * size for loss in box_loss])
        self.ce_metric.get()
        self.l1_metric.get()
        return size


def timed_leg(loop, iters):
    """Images/s of ``iters`` iterations; the clock stops once the device has finished."""
    import mxnet as mx

    mx.nd.waitall()
    start = time.perf_counter()
    images = sum(loop.iteration() for _ in range(iters))
    mx.nd.waitall()
    return images / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ctx", default="gpu0", help="one device, e.g. gpu0 (cpu for a dry run)")
    parser.add_argument("--model", default="ssd_512_vgg16_atrous")
    parser.add_argument("--data-shape", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--iters", type=int, default=10, help="iterations per timed leg")
    parser.add_argument("--rounds", type=int, default=2, help="timed legs of each loop, alternated")
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--images", type=int, default=64, help="generated training images")
    args = parser.parse_args()

    from gluondet.runtime import configure_threads

    configure_threads()
    from gluondet.config import resolve_dataset, resolve_model_config
    from gluondet.data import load_dataset
    from gluondet.data.loader import images_with_objects
    from gluondet.data.synth import write_shapes_voc
    from gluondet.runtime import make_contexts

    ctx_list = make_contexts(args.ctx)
    if len(ctx_list) != 1:
        sys.exit("--ctx: one device (the comparison is per device)")
    model_cfg = dict(resolve_model_config(args.model), data_shape=args.data_shape)
    with tempfile.TemporaryDirectory() as work:
        root = write_shapes_voc(Path(work) / "shapes", n_train=args.images, n_val=1, seed=0, size=256)
        dataset = load_dataset(resolve_dataset(str(root)), "train")
        indices = images_with_objects(dataset)  # GluonCV's SSD transform cannot take an empty label
        loops = [GluondetLoop(model_cfg, dataset, indices, args, ctx_list),
                 ReferenceLoop(model_cfg, dataset, indices, args, ctx_list)]
        print(f"{args.model}, data shape {args.data_shape}, batch {args.batch_size}, {ctx_list[0]}, "
              f"{args.iters} iterations per leg, {args.rounds} timed legs each (alternated), "
              f"{args.num_workers} loader workers")
        for loop in loops:  # warm-up: graphs, autotuning, allocation
            timed_leg(loop, 2)
        speeds = {loop.name: [] for loop in loops}
        for round_ in range(args.rounds):
            for loop in loops:
                speed = timed_leg(loop, args.iters)
                speeds[loop.name].append(speed)
                print(f"round {round_ + 1}  {loop.name:28s} {speed:8.2f} img/s", flush=True)
    ours, ref = (statistics.median(speeds[loop.name]) for loop in loops)
    print(f"median  gluondet {ours:.2f} img/s, reference {ref:.2f} img/s")
    print(f"ratio gluondet / reference: {ours / ref:.2f}x")


if __name__ == "__main__":
    main()
