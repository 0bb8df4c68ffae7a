#!/usr/bin/env python
"""The divergence guard's calibration: how far healthy runs of every family stray from their own
recent loss level, beside the guard's limits (gluondet/engine/divergence.py).

For each family it trains a healthy recipe on data ``gluondet data synth`` makes (the tiny SSD on the
shapes, Faster R-CNN with an FPN and Mask R-CNN at the mask demo's sizes, from scratch) through the
real engine, records every step's total loss, and replays the guard's statistics on them:

- step / level: a step's total loss over the median of the previous WINDOW applied steps, once
  MIN_HISTORY are there (the guard skips a step above SPIKE_FACTOR);
- level / floor: that median over the lowest median so far, from the first step on (above
  RUNAWAY_FACTOR is divergence).

It prints the largest of each per family, the limits, and the margin (limit / largest). A run the
guard acted on (skipped a step or rolled back) is reported too: on a healthy recipe that is a miss.

    python scripts/bench/bench_loss_spread.py [--iters N] [--families ssd,faster_rcnn,mask_rcnn] [--seeds 0,1]
"""
import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
TRAIN_IMAGES = 200

FASTER_FPN_SMALL = {  # Faster R-CNN with FPN, narrowed like the mask demo model (same kwargs, no mask head)
    "name": "faster_rcnn_fpn_small", "family": "faster_rcnn", "builder": "faster_rcnn_fpn_resnet50_v1b",
    "data_shape": 256,  # small, yet enough anchors for its 2000 training proposals
    "kwargs": {"norm": "groupnorm", "num_fpn_filters": 64, "num_box_head_conv": 2,
               "num_box_head_conv_filters": 64, "num_box_head_dense_filters": 256, "rpn_channel": 64,
               "scales": [1, 2, 4, 8, 16], "rpn_train_pre_nms": 2000, "rpn_train_post_nms": 256,
               "rpn_test_pre_nms": 1000, "rpn_test_post_nms": 100, "num_sample": 64, "pos_ratio": 0.5},
    "train": {"batch_size": 1, "lr": 0.02, "warmup_epochs": 0.5, "wd": 0.0001, "clip_gradient": 5,
              "pretrained_base": False},
}


def record_losses(totals, acted):
    """A hook that keeps every step's total loss, and notes the guard's skips and rollbacks."""
    from gluondet.engine.trainer import HookBase

    class Record(HookBase):
        def after_backward(self):
            state = self.trainer.state
            totals.append(sum(state.losses.values()))
            if state.skip_step:
                acted.append(f"skipped step {state.iteration} of epoch {state.epoch + 1}")

        def on_rollback(self):
            acted.append("rolled back")

    return Record()


def spread(totals, window, min_history):
    """(largest step / level, largest level / floor) of a loss series, as the guard computes them."""
    recent, floor, step_ratio, level_ratio = [], None, 0.0, 1.0
    for total in totals:
        if len(recent) >= min_history:
            step_ratio = max(step_ratio, total / statistics.median(recent))
        recent = (recent + [total])[-window:]
        level = statistics.median(recent)
        floor = level if floor is None else min(floor, level)
        if len(recent) >= min_history:
            level_ratio = max(level_ratio, level / floor)
    return step_ratio, level_ratio


def make_data(root, family, seed):
    """The family's generated data set: shapes (256 px) for SSD, masked shapes (128 px, the mask
    demo's size) as COCO for the R-CNNs. Returns what --dataset takes."""
    from gluondet.data.synth import write_shapes_voc

    masks = family != "ssd"
    out = write_shapes_voc(root / f"data-{family}-{seed}", n_train=TRAIN_IMAGES, n_val=10, seed=seed,
                           size=128 if masks else 256, masks=masks)
    return str(out / "coco.yaml") if masks else str(out)


def train_family(family, seed, iters, root):
    import yaml

    from gluondet.config import resolve_model_config, resolve_train_config
    from gluondet.engine.train import train

    data = make_data(root, family, seed)
    if family == "faster_rcnn":
        model_path = root / "faster_fpn_small.yaml"
        model_path.write_text(yaml.safe_dump(FASTER_FPN_SMALL), encoding="utf-8")
        model = str(model_path)
    else:
        model = "tiny_ssd" if family == "ssd" else "mask_rcnn_tiny"
    model_cfg = resolve_model_config(model)
    totals, acted = [], []
    batch = int((model_cfg.get("train") or {}).get("batch_size", 1))
    epochs = -(-iters // (TRAIN_IMAGES // batch))  # whole epochs of the recipe's own batches
    config = resolve_train_config(model_cfg, {
        "dataset": data, "model": model, "out": str(root / f"run-{family}-{seed}"), "epochs": epochs,
        "val_interval": epochs, "seed": seed, "quiet": True, "num_workers": 0})
    train(config, extra_hooks=[record_losses(totals, acted)])
    return totals, acted


def main():
    from gluondet.engine import divergence as D

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=300, help="training steps per run")
    parser.add_argument("--families", default="ssd,faster_rcnn,mask_rcnn")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--save", default=None, help="also write every run's step losses to this JSON file")
    args = parser.parse_args()
    series = {}
    print(f"limits: step/level {D.SPIKE_FACTOR:g} (after {D.MIN_HISTORY} steps, window {D.WINDOW}), "
          f"level/floor {D.RUNAWAY_FACTOR:g}")
    print(f"{'family':<12} {'seed':>4} {'steps':>6} {'step/level':>11} {'level/floor':>12}  guard")
    worst = {}
    with tempfile.TemporaryDirectory(prefix="loss-spread-") as tmp:
        for family in args.families.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                totals, acted = train_family(family, seed, args.iters, Path(tmp))
                series[f"{family}-{seed}"] = totals
                step_ratio, level_ratio = spread(totals, D.WINDOW, D.MIN_HISTORY)
                w = worst.setdefault(family, [0.0, 0.0])
                w[0], w[1] = max(w[0], step_ratio), max(w[1], level_ratio)
                print(f"{family:<12} {seed:>4} {len(totals):>6} {step_ratio:>11.2f} {level_ratio:>12.2f}  "
                      f"{'; '.join(acted[:3]) or 'never acted'}", flush=True)
    if args.save:
        Path(args.save).write_text(json.dumps(series), encoding="utf-8")
    for family, (step_ratio, level_ratio) in worst.items():
        print(f"{family}: margin {D.SPIKE_FACTOR / step_ratio:.1f}x below the spike limit, "
              f"{D.RUNAWAY_FACTOR / level_ratio:.1f}x below the runaway limit")


if __name__ == "__main__":
    main()
