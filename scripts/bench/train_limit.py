"""How close training runs to this machine's limit, in float32 and with --amp (bfloat16 on CPU).

For a model (default ssd_300_vgg16_atrous) it prints:
  1. FLOP per training image, counted by ``flop_bound.py`` from the network's training graph at the
     model's data shape: every convolution and dense layer, 2 FLOP per multiply-add, forward plus
     the input and weight gradients where training needs them (the trainable parameters of
     ``gluondet train``);
  2. this machine's convolution peak (``flop_bound.py peak``), measured before every leg in that
     leg's type: float32, and bfloat16 for the --amp legs (their convolutions and dense layers run
     in bfloat16); the best of the run counts, with gluondet's OpenMP pool (all usable CPUs);
  3. training images/s of gluondet's own step (the model's data loader over generated shapes
     data, the family's step (``gluondet.families``), the Trainer update, ``engine.amp`` for bfloat16), each dtype in its
     own process (AMP is process-wide), legs alternated A B A B, clocks stopped after
     mx.nd.waitall(), first --warmup iterations left out;
  4. beside each dtype's best images/s: the GFLOP/s it implies and the FLOP bound (its peak / FLOP
     per image); a dtype with a leg above its bound is refused (an ERROR row, exit status 1); then
     the bfloat16 / float32 speed ratio. Every leg names the 1-minute load average at its end.

    .venv/bin/python scripts/bench/train_limit.py [--model ssd_300_vgg16_atrous] [--batch-size 4]
        [--iters 4] [--warmup 2] [--rounds 2] [--dtypes float32,bfloat16]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from flop_bound import best_peak, bound_rows, count_line, cpu_line, flop_bound

STEP_LEG = r'''
import json, sys, time
from gluondet.runtime import configure_threads
configure_threads()
import mxnet as mx
from gluondet.config import resolve_model_config
from gluondet.data import load_dataset
from gluondet.config import resolve_dataset
from gluondet.engine.amp import Precision
from gluondet.families import family_of
from gluondet.models import build_model

model, root, batch_size, iters, warmup, amp = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "1"
ctx = [mx.cpu()]
precision = Precision.for_training(amp, ctx)
if amp and precision.dtype == "float32":
    print(json.dumps({"error": "no bfloat16 on this CPU"})); sys.exit(0)
cfg = resolve_model_config(model)
family = family_of(cfg)
ds = load_dataset(resolve_dataset(root), "train")
net = build_model(cfg, list(ds.classes), pretrained_base=False)
net.initialize()
side = int(cfg["data_shape"])
loader = family.train_loader(net, ds, side, batch_size, 1, augment="flip")
net.collect_params().reset_ctx(ctx)
trainer = mx.gluon.Trainer(family.trainable_params(net), "sgd",
                           {"learning_rate": 0.001, "momentum": 0.9, "wd": 5e-4}, **precision.trainer_options())
precision.attach(trainer)
step = family.make_step(backward=precision.backward)
family.hybridize_for_training(net)
images, start, done = 0, None, 0
while done < warmup + iters:
    for batch in loader:
        if done == warmup:
            mx.nd.waitall()
            start = time.perf_counter()
        step(net, batch, ctx)
        trainer.step(step.step_batch_size(batch))
        if done >= warmup:
            images += step.num_images(batch)
        done += 1
        if done == warmup + iters:
            break
mx.nd.waitall()
print(json.dumps({"images_per_sec": images / (time.perf_counter() - start), "dtype": precision.dtype}))
'''


def run(code, *args):
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(f"leg failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ssd_300_vgg16_atrous")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--iters", type=int, default=4, help="timed iterations per leg")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the legs A B")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--images", type=int, default=24, help="generated training images")
    args = parser.parse_args()

    from gluondet.data.synth import write_shapes_voc
    from gluondet.precision import cpu_has_bf16

    flop = flop_bound("count", "--model", args.model)
    side = flop["data_shape"]
    print(cpu_line())
    print(f"{args.model} at {side}px: {count_line(flop)}")
    dtypes = args.dtypes.split(",")
    if "bfloat16" in dtypes and not cpu_has_bf16():
        print("this CPU has no native bfloat16 (avx512_bf16/amx_bf16): float32 only")
        dtypes = ["float32"]
    speeds, loads, peaks = ({d: [] for d in dtypes} for _ in range(3))
    with tempfile.TemporaryDirectory() as tmp:
        root = write_shapes_voc(Path(tmp) / "shapes", n_train=args.images, n_val=2, seed=0, size=side)
        for _ in range(args.rounds):
            for d in dtypes:
                peaks[d].append(flop_bound("peak", "--dtype", d))  # before every leg: the load changes
                got = run(STEP_LEG, args.model, root, args.batch_size, args.iters, args.warmup,
                          int(d != "float32"))
                speeds[d].append(got["images_per_sec"])
                loads[d].append(os.getloadavg()[0])
    print(f"training, batch {args.batch_size}, {args.iters} timed iterations per leg, {args.rounds} rounds:")
    within = True
    for d in dtypes:  # each dtype against the peak of its own type
        peak, line = best_peak(peaks[d], d)
        rows, ok = bound_rows({d: speeds[d]}, {d: loads[d]}, peak["gflops"], flop["total"])
        print("\n".join([line, *rows]))
        within = within and ok
    if len(dtypes) == 2:
        print(f"bfloat16 / float32: {max(speeds['bfloat16']) / max(speeds['float32']):.2f}x")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
