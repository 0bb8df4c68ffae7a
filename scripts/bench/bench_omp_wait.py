#!/usr/bin/env python
"""OpenMP's wait policy on a CPU that is not all MXNet's: spinning (OpenMP's default) against
passive waiting (``OMP_WAIT_POLICY=PASSIVE``, what gluondet/runtime.py ``configure_threads`` sets).

MXNet runs each operator as an OpenMP parallel region over the usable CPUs. At a region's end the
threads that finished wait for the others; by default they spin first. When anything else runs on
the machine (another job, a loader process, the OS), a spinning thread keeps its core from the
member the region is waiting for, and every region lasts a scheduler time slice. Passive threads
sleep instead, which costs a wake-up at the next region.

Per leg, in a process of its own (the policy is read once, when OpenMP starts): the model's
training step (forward, backward, SGD update) and its forward pass in predict mode, on random
images, MXNet's synchronous engine and the OpenMP pool gluondet chooses; the clocks stop after
``mx.nd.waitall()``, after untimed warm-up steps. ``--busy N``: N other processes spin on a CPU
each for the whole leg (started before it, stopped after), the stand-in for "anything else on the
machine"; each busy level is measured with both policies, legs alternated (default, passive,
default, passive ...), and the best of the rounds printed with the ratio and the load average.

    .venv/bin/python scripts/bench/bench_omp_wait.py [--model tiny_ssd] [--busy 0,1] [--rounds 2]
        [--iters 20] [--batch-size 8]
"""
import argparse
import json
import os
import subprocess
import sys

LEG = r"""
import json, os, sys, time
from gluondet.runtime import configure_engine, configure_threads
threads = configure_threads()
configure_engine("cpu")
import mxnet as mx
from mxnet import autograd, gluon
from gluondet.config import resolve_model_config
from gluondet.models import build_model

model, batch, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cfg = resolve_model_config(model)
side = int(cfg["data_shape"])
net = build_model(cfg, ["a", "b", "c"], pretrained_base=False)
net.initialize(mx.init.Xavier(magnitude=2))
net.hybridize(static_alloc=True, static_shape=True)
x = mx.nd.random.uniform(shape=(batch, 3, side, side))
trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 1e-4})

def train_step():
    with autograd.record():
        outputs = net(x)
        loss = sum(o.sum() for o in outputs if o is not None)
    loss.backward()
    trainer.step(batch)

def timed(step):
    for _ in range(3):  # the first builds the graph and oneDNN's primitives
        step()
    mx.nd.waitall()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    mx.nd.waitall()
    return batch * iters / (time.perf_counter() - start)

rates = {"train": timed(train_step)}
net.hybridize(static_alloc=True, static_shape=True)  # a fresh graph for predict mode
rates["detect"] = timed(lambda: net(x))
print(json.dumps(dict(rates, threads=threads, policy=os.environ.get("OMP_WAIT_POLICY", "default"))))
"""

SPIN = "while True: pass"


def run_leg(policy, args):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MXNET_ENGINE_TYPE")}
    env["MXNET_GLUON_REPO"] = "http://127.0.0.1:9/"
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    else:
        # gluondet sets PASSIVE when nothing is set: the baseline leg names OpenMP's own default
        # (spin, then sleep), which a user got before
        env["OMP_WAIT_POLICY"] = ""
    out = subprocess.run([sys.executable, "-c", LEG, args.model, str(args.batch_size), str(args.iters)],
                         env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode:
        sys.exit(f"leg failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def with_busy(n, fn):
    """``fn()`` while ``n`` processes spin, one CPU each."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(n)]
    try:
        return fn()
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_ssd")
    parser.add_argument("--busy", default="0,1", help="busy-level list: processes spinning beside each leg")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    from gluondet.runtime import usable_cpus

    print(f"{args.model}, batch {args.batch_size}, {args.iters} timed steps per leg, {usable_cpus()} usable "
          f"CPUs, {args.rounds} rounds; load average at the start {os.getloadavg()[0]:.1f}")
    for busy in (int(b) for b in args.busy.split(",")):
        legs = {"default": [], "PASSIVE": []}
        for _ in range(args.rounds):
            for policy in legs:
                got = with_busy(busy, lambda: run_leg(policy, args))
                legs[policy].append(dict(got, load=os.getloadavg()[0]))
        for task in ("train", "detect"):
            best = {p: max(leg[task] for leg in legs[p]) for p in legs}
            every = " / ".join(", ".join(f"{leg[task]:.1f} (load {leg['load']:.1f})" for leg in legs[p]) for p in legs)
            print(f"{busy} busy process(es), {task:6s}: spinning (OpenMP's default) {best['default']:7.1f} img/s, "
                  f"passive {best['PASSIVE']:7.1f} img/s, ratio {best['PASSIVE'] / best['default']:.2f}x  "
                  f"(legs {every})", flush=True)


if __name__ == "__main__":
    main()
