"""The FLOP bound on training images/s: a network's work per image, counted once from its graph,
against a convolution rate measured on this machine in the same run.

Convention: 1 FLOP per multiply and per add, so a multiply-add (MAC) is 2 FLOP. Counted are the
Convolution, Deconvolution and FullyConnected nodes of the training graph (the network called on a
symbol under ``autograd.train_mode``, as hybridize traces it; shapes inferred for one image):
  - forward: 2 x MACs;
  - backward, gradient of the input: 2 x MACs, when anything before the layer trains (not for a
    layer that reads the image, nor behind frozen layers);
  - backward, gradient of the weights: 2 x MACs, when its weight trains (grad_req not 'null').
A layer in the middle of a fully trained network thus costs 3x its forward pass. Bias adds,
normalization, activations, pooling, the loss and the update are left out, so the count is a lower
bound on the work, and  bound = measured peak / count  an upper bound on training images/s: a
figure above it was not measured right (a clock stopped before MXNet finished, images miscounted).

The R-CNNs sample their RoIs against the ground truth inside the network, so their graph is traced
with two ground-truth boxes as well (the samplers keep a fixed number of RoIs: the count does not
depend on how many objects an image has).

The peak is the best rate of large 3x3 convolutions (VGG16's widths at its resolutions), forward
and forward + backward, each timed between ``mx.nd.waitall()`` calls, with the OpenMP pool gluondet
uses (all usable CPUs, whatever OMP_NUM_THREADS the caller has: the most this machine gives), in
float32; ``--dtype bfloat16``: the same convolutions in bfloat16 (the bound for ``--amp`` runs,
whose convolutions and dense layers run in bfloat16), refused on a CPU without native bfloat16.

    .venv/bin/python scripts/bench/flop_bound.py count [--model ssd_512_vgg16_atrous] [--data-shape 512]
    .venv/bin/python scripts/bench/flop_bound.py peak [--dtype float32]
Each prints one JSON line. The training benchmarks (bench_train_throughput.py, train_limit.py,
bench_engine.py) run it in a subprocess through ``flop_bound()`` and print their img/s with
``bound_rows()``, both below.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

LAYER_OPS = ("Convolution", "Deconvolution", "FullyConnected")
# operators whose output carries no gradient back to their inputs
GRADIENT_STOPS = ("BlockGrad", "stop_gradient", "zeros_like", "ones_like", "_zeros", "_ones")
# (batch, channels, side) of the timed 3x3 convolutions: VGG16's conv1, conv3 and conv4 widths
PEAK_SHAPES = ((1, 64, 256), (2, 256, 64), (2, 512, 32))
# what a family's training forward takes after the image, for one image: (name, shape)
GROUND_TRUTH = {family: (("gt_box", (1, 2, 4)), ("gt_label", (1, 2, 1))) for family in ("faster_rcnn", "mask_rcnn")}
# left out of flop_bound.py's environment, so that the peak runs with gluondet's own pool
THREAD_VARS = ("OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS")


def training_flop(net, data_shape, params=None, inputs=()):
    """FLOP per image of one training step of ``net`` at a ``data_shape`` x ``data_shape`` input,
    as {"forward", "backward_input", "backward_weight", "total", "layers"} (see the module
    docstring). ``params``: the parameters that train (default: every one whose grad_req is not
    'null'); ``inputs``: (name, shape) of what the training forward takes after the image."""
    import mxnet as mx

    params = net.collect_params() if params is None else params
    trains = {name for name, p in params.items() if p.grad_req != "null"}
    with mx.autograd.train_mode():
        outputs = net(mx.sym.var("data"), *[mx.sym.var(name) for name, _ in inputs])
    sym = mx.sym.Group(_symbols(outputs))
    input_shapes = {"data": (1, 3, data_shape, data_shape), **dict(inputs)}
    arg_shapes, _, aux_shapes = sym.infer_shape(**input_shapes)
    shapes = dict(zip(sym.list_arguments(), arg_shapes))
    shapes.update(zip(sym.list_auxiliary_states(), aux_shapes))
    internals = sym.get_internals()
    _, out_shapes, _ = internals.infer_shape(**input_shapes)
    shapes.update(zip(internals.list_outputs(), out_shapes))

    nodes = json.loads(sym.tojson())["nodes"]
    needs_grad = []  # per node: does a trained parameter lie at or before it?
    counts = {"forward": 0, "backward_input": 0, "backward_weight": 0, "layers": 0}
    for node in nodes:
        inputs = [entry[0] for entry in node["inputs"]]
        if node["op"] == "null":
            needs_grad.append(node["name"] in trains)
            continue
        needs_grad.append(node["op"] not in GRADIENT_STOPS and any(needs_grad[i] for i in inputs))
        if node["op"] not in LAYER_OPS:
            continue
        macs = _layer_macs(node, nodes, shapes)
        counts["forward"] += 2 * macs
        counts["backward_input"] += 2 * macs if needs_grad[inputs[0]] else 0
        counts["backward_weight"] += 2 * macs if nodes[inputs[1]]["name"] in trains else 0
        counts["layers"] += 1
    counts["total"] = counts["forward"] + counts["backward_input"] + counts["backward_weight"]
    return counts


def _symbols(outputs):
    """The symbols of a network's outputs, flattened (FPN anchors and YOLOv3 come as nested lists)."""
    if isinstance(outputs, (list, tuple)):
        return [sym for output in outputs for sym in _symbols(output)]
    return [outputs]


def _layer_macs(node, nodes, shapes):
    """Multiply-adds of one Convolution, Deconvolution or FullyConnected node for one image:
    the weight's size (output channels x input channels per group x kernel) times the positions it
    is applied at (output positions; a deconvolution's input positions; a dense layer's rows)."""
    weight = shapes[nodes[node["inputs"][1][0]]["name"]]
    per_position = 1
    for size in weight:
        per_position *= size
    if node["op"] == "FullyConnected":
        out = shapes[node["name"] + "_output"]
        positions = 1
        for size in out[:-1]:
            positions *= size
        return positions * per_position
    if node["op"] == "Convolution":
        out = shapes[node["name"] + "_output"]
        spatial = out[2:]
    else:  # Deconvolution: every input position scatters the whole kernel
        source = nodes[node["inputs"][0][0]]
        spatial = (shapes.get(source["name"] + "_output") or shapes[source["name"]])[2:]
    positions = 1
    for size in spatial:
        positions *= size
    return positions * per_position


def count_model(model, data_shape=None, classes=3):
    """training_flop of a gluondet model (random weights), trained as ``gluondet train`` trains it
    (its family's trainable parameters), plus the model name and data shape."""
    from gluondet.config import resolve_model_config
    from gluondet.families import family_of
    from gluondet.models import build_model

    cfg = resolve_model_config(model)
    side = int(data_shape or cfg["data_shape"])
    net = build_model(cfg, [f"c{i}" for i in range(classes)], pretrained_base=False)
    family = family_of(cfg)
    params = family.trainable_params(net)
    return {"model": model, "data_shape": side,
            **training_flop(net, side, params, GROUND_TRUTH.get(family.name, ()))}


def conv_peak(shapes=PEAK_SHAPES, reps=3, dtype="float32"):
    """The best GFLOP/s of 3x3 convolutions at ``shapes`` in ``dtype`` (float32 or bfloat16),
    forward and forward + backward (input and weight gradients), as {"gflops", "best_of",
    "rates": {label: GFLOP/s}}."""
    import mxnet as mx
    from mxnet import autograd

    rates = {}
    for n, c, side in shapes:
        x = mx.nd.random.uniform(shape=(n, c, side, side))
        w = mx.nd.random.uniform(shape=(c, c, 3, 3)) * 0.01
        if dtype == "bfloat16":  # cast before the clock: the network's casts are not convolution time
            from mxnet.contrib.amp.amp import bfloat16

            x, w = mx.nd.amp_cast(x, dtype=bfloat16), mx.nd.amp_cast(w, dtype=bfloat16)
        x.attach_grad()
        w.attach_grad()
        forward_flop = 2 * n * c * c * 9 * side * side
        for backward in (False, True):
            best = float("inf")
            for i in range(reps + 1):
                mx.nd.waitall()
                start = time.perf_counter()
                if backward:
                    with autograd.record():
                        y = mx.nd.Convolution(x, w, kernel=(3, 3), pad=(1, 1), num_filter=c, no_bias=True)
                    y.backward()
                else:
                    mx.nd.Convolution(x, w, kernel=(3, 3), pad=(1, 1), num_filter=c, no_bias=True)
                mx.nd.waitall()
                if i:  # the first call builds oneDNN's primitives
                    best = min(best, time.perf_counter() - start)
            label = f"{c}ch {side}px {'fwd+bwd' if backward else 'fwd'}"
            rates[label] = forward_flop * (3 if backward else 1) / best / 1e9
    best_label = max(rates, key=rates.get)
    return {"gflops": rates[best_label], "best_of": best_label, "rates": rates}


def cpu_line():
    """The processor the figures were measured on: its model name and the vector extensions that
    decide MXNet's kernels (an AMD EPYC and an Intel Xeon with the same flags can differ 2x in
    bfloat16), for the first line of each benchmark's output."""
    from gluondet.precision import CPUINFO, cpu_flags

    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        text = ""
    model = next((line.partition(":")[2].strip() for line in text.splitlines()
                  if line.partition(":")[0].strip() == "model name"), "unknown CPU")
    isa = [flag for flag in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if flag in cpu_flags(text)]
    return f"{model} ({' '.join(isa) or 'no AVX2'})"


# For the training benchmarks: the count and the peak in a process of their own, and the rows.
def flop_bound(*args):
    """flop_bound.py's JSON answer, run in its own process (its thread setting, MXNet loaded there)."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args],
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(f"flop_bound.py {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bound_rows(legs, loads, peak, train_flop):
    """(lines to print, whether every leg is within the bound): each configuration's best img/s,
    its legs with their load averages, the GFLOP/s it implies and the bound; an ERROR row for a
    configuration with a leg above the bound."""
    bound = peak * 1e9 / train_flop
    lines, within = [], True
    for name, values in legs.items():
        best = max(values)
        every = ", ".join(f"{v:.3f} (load {load:.1f})" for v, load in zip(values, loads[name])) if loads \
            else ", ".join(f"{v:.3f}" for v in values)
        lines.append(f"{name + ':':<42}{best:.3f} img/s = {_giga(best * train_flop)} GFLOP/s, "
                     f"{best / bound:.0%} of the bound {bound:.3f} img/s  (legs {every})")
        if max(values) > bound:
            within = False
            lines.append(f"ERROR {name}: {best:.3f} img/s is above the FLOP bound {bound:.3f} img/s "
                         f"({_giga(train_flop)} GFLOP per image at {peak:.0f} GFLOP/s): the "
                         f"clock or the image count is wrong, not a figure")
    return lines, within


def report_bound(model, legs, data_shape=None):
    """For a benchmark that times training legs of ``model`` (``{name: [img/s, ...]}``): its FLOP count
    and a float32 convolution peak measured now, in the same run, printed with each leg's share of
    the bound. Returns False (the caller exits 1) when a leg is above it."""
    flop = flop_bound("count", "--model", model, *(["--data-shape", str(data_shape)] if data_shape else []))
    peak = flop_bound("peak")
    rows, within = bound_rows(legs, None, peak["gflops"], flop["total"])
    print("\n".join([cpu_line(), f"{model} at {flop['data_shape']} px: {count_line(flop)}",
                      f"convolution peak, float32, {peak['threads']} threads: {peak['gflops']:.0f} GFLOP/s "
                      f"({peak['best_of']}; measured after the legs)", *rows]))
    return within


def _giga(flop):
    """FLOP in G, whole from 10 G on (SSD512's figures), with two decimals below (the tiny models)."""
    return f"{flop / 1e9:.0f}" if flop >= 10e9 else f"{flop / 1e9:.2f}"


def count_line(flop):
    """The line that shows ``flop_bound("count", ...)``'s answer."""
    return (f"FLOP per training image, from the graph ({flop['layers']} conv/dense layers, 2 FLOP per "
            f"multiply-add): {flop['forward'] / 1e9:.1f} G forward + {flop['backward_input'] / 1e9:.1f} G "
            f"input gradients + {flop['backward_weight'] / 1e9:.1f} G weight gradients = "
            f"{flop['total'] / 1e9:.1f} GFLOP")


def best_peak(peaks, dtype="float32", before="each leg"):
    """(the best of ``flop_bound("peak", ...)``'s answers, the line that shows them)."""
    peak = max(peaks, key=lambda p: p["gflops"])
    every_peak = ", ".join(f"{p['gflops']:.0f}" for p in peaks)
    return peak, (f"convolution peak, {dtype}, {peak['threads']} threads: {peak['gflops']:.0f} GFLOP/s "
                  f"({peak['best_of']}; best of {len(peaks)} measurements, one before {before}: {every_peak})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("count", "peak"))
    parser.add_argument("--model", default="ssd_512_vgg16_atrous")
    parser.add_argument("--data-shape", type=int, default=None, help="[the model YAML's]")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="peak: the convolutions' type")
    args = parser.parse_args()

    from gluondet.precision import cpu_has_bf16
    from gluondet.runtime import configure_threads

    threads = configure_threads()  # before MXNet loads: the pool gluondet train runs with
    if args.what == "count":
        result = count_model(args.model, args.data_shape)
    elif args.dtype == "float32":
        result = {**conv_peak(), "threads": threads}
    elif not cpu_has_bf16():  # --amp trains in float32 there; emulated bfloat16 convolutions are slow
        sys.exit("flop_bound.py peak --dtype bfloat16: this CPU has no native bfloat16 (avx512_bf16/amx_bf16)")
    else:
        result = {**conv_peak(dtype="bfloat16"), "threads": threads, "dtype": "bfloat16"}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
