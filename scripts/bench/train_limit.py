"""How close training runs to this machine's limit, in float32 and with --amp (bfloat16 on CPU).

For a model (default ssd_300_vgg16_atrous) it prints:
  1. FLOPs per image counted from the network: every Convolution and FullyConnected of its traced
     graph, shapes inferred at the model's data shape (2 x multiply-adds); training costs about
     3x the forward pass (forward, gradient of the input, gradient of the weights);
  2. the machine's convolution rate, measured now: a large 3x3 convolution, forward + backward,
     in float32 and in bfloat16 (best of a few, once per round; this is what the network's
     convolutions could do);
  3. training images/s of gluondet's own step (the model's data loader over generated shapes
     data, the family's step (``gluondet.families``), the Trainer update, ``engine.amp`` for bfloat16), each dtype in its
     own process (AMP is process-wide), legs alternated A B A B, clocks stopped after
     mx.nd.waitall(), first --warmup iterations left out;
  4. training GFLOP/s = img/s x 3 x forward FLOPs, as a fraction of each dtype's conv rate, and
     the bfloat16 / float32 speed ratio.

    .venv/bin/python scripts/bench/train_limit.py [--model ssd_300_vgg16_atrous] [--batch-size 4]
        [--iters 4] [--warmup 2] [--rounds 2] [--dtypes float32,bfloat16]
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

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

CONV_LEG = r'''
import json, sys, time
from gluondet.runtime import configure_threads
configure_threads()
import mxnet as mx
from mxnet import autograd
from mxnet.contrib.amp.amp import bfloat16

def rate(dtype, n=2, c=256, hw=64, reps=4):
    x = mx.nd.random.uniform(shape=(n, c, hw, hw))
    w = mx.nd.random.uniform(shape=(c, c, 3, 3)) * 0.01
    if dtype == "bfloat16":
        x, w = mx.nd.amp_cast(x, dtype=bfloat16), mx.nd.amp_cast(w, dtype=bfloat16)
    x.attach_grad(); w.attach_grad()
    best = float("inf")
    for i in range(reps + 1):
        mx.nd.waitall(); t = time.perf_counter()
        with autograd.record():
            y = mx.nd.Convolution(x, w, kernel=(3, 3), pad=(1, 1), num_filter=c, no_bias=True)
        y.backward()
        mx.nd.waitall()
        if i:  # the first builds oneDNN primitives
            best = min(best, time.perf_counter() - t)
    return 3 * 2 * n * c * c * 9 * hw * hw / best / 1e9

print(json.dumps({"float32": rate("float32"), "bfloat16": rate("bfloat16")}))
'''


def forward_flops(model, classes=3):
    """2 x multiply-adds of every Convolution and FullyConnected in the model's training graph."""
    import mxnet as mx

    from gluondet.config import resolve_model_config
    from gluondet.models import build_model

    cfg = resolve_model_config(model)
    side = int(cfg["data_shape"])
    net = build_model(cfg, [f"c{i}" for i in range(classes)], pretrained_base=False)
    net.initialize()
    with mx.autograd.train_mode():
        outputs = net(mx.sym.var("data"))
    sym = mx.sym.Group(list(outputs))
    internals = sym.get_internals()
    _, out_shapes, _ = internals.infer_shape(data=(1, 3, side, side))
    shapes = dict(zip(internals.list_outputs(), out_shapes))
    nodes = json.loads(sym.tojson())["nodes"]
    total, layers = 0, 0
    for node in nodes:
        if node["op"] not in ("Convolution", "FullyConnected"):
            continue
        attrs = node.get("attrs", {})
        out = shapes[node["name"] + "_output"]
        in_name = nodes[node["inputs"][0][0]]["name"]
        in_shape = shapes.get(in_name + "_output") or shapes.get(in_name)
        if node["op"] == "Convolution":
            kernel = eval(attrs["kernel"])  # a tuple literal such as (3, 3)
            groups = int(attrs.get("num_group", 1))
            per_output = in_shape[1] // groups * kernel[0] * kernel[1]
            total += 2 * per_output * out[1] * out[2] * out[3]
        else:
            total += 2 * (int(mx.nd.prod(mx.nd.array(in_shape[1:])).asscalar())) * out[1]
        layers += 1
    return total, layers, side


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
    from gluondet.runtime import usable_cpus

    flops, layers, side = forward_flops(args.model)
    train_gflop = 3 * flops / 1e9
    print(f"{args.model} at {side}px: {layers} conv/dense layers, {flops / 1e9:.1f} GFLOP forward, "
          f"~{train_gflop:.0f} GFLOP per training image (3x forward)")
    dtypes = args.dtypes.split(",")
    if "bfloat16" in dtypes and not cpu_has_bf16():
        print("this CPU has no native bfloat16 (avx512_bf16/amx_bf16): float32 only")
        dtypes = ["float32"]
    speeds = {d: [] for d in dtypes}
    conv = {"float32": 0.0, "bfloat16": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        root = write_shapes_voc(Path(tmp) / "shapes", n_train=args.images, n_val=2, seed=0, size=side)
        for _ in range(args.rounds):
            conv = {d: max(rate, conv[d]) for d, rate in run(CONV_LEG).items()}
            for d in dtypes:
                got = run(STEP_LEG, args.model, root, args.batch_size, args.iters, args.warmup,
                          int(d != "float32"))
                speeds[d].append(got["images_per_sec"])
    print(f"3x3 convolution 256->256 at 64x64, forward + backward, {usable_cpus()} CPUs, best of "
          f"{args.rounds} rounds: " + ", ".join(f"{d} {conv[d]:.0f} GFLOP/s" for d in dtypes))
    print(f"training, batch {args.batch_size}, {args.iters} timed iterations per leg, {args.rounds} rounds:")
    for d in dtypes:
        best = max(speeds[d])
        rate = best * train_gflop
        print(f"  {d:<9} {best:6.3f} img/s (legs: {', '.join(f'{v:.3f}' for v in speeds[d])}) = "
              f"{rate:5.0f} GFLOP/s, {rate / conv[d]:.0%} of its conv rate, {rate / conv['float32']:.0%} of float32's")
    if len(dtypes) == 2:
        print(f"bfloat16 / float32: {max(speeds['bfloat16']) / max(speeds['float32']):.2f}x")


if __name__ == "__main__":
    main()
