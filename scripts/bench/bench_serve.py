"""gluondet serve under load on loopback: dynamic batching against one request at a time, and
against ``gluondet detect`` on a folder of the same images.

Each leg gets the same work, the same --requests images (one per request, each image once):

- ``serve --max-batch 8`` (or --max-batch): --clients concurrent clients, each on its own
  keep-alive connection, send the images as raw JPEG bodies as fast as answers come back;
- ``serve --max-batch 1``: the same clients and images, every image a forward of its own;
- ``detect``: ``gluondet detect FOLDER --no-draw --json`` on a folder of the same files, its
  batches of --detect-batch images.

Served legs report throughput (images/s over the wall time from the first request sent to the
last answer read) and the latency of each request (sent to answer read): p50 and p99. The detect
leg reports its own images/s (the command's summary line, which counts detection from the first
image read, not the process's start) and the wall time of the whole command. Legs are alternated
(A B C A B C, --rounds times) and every server is started fresh and stopped with SIGTERM; the
load average before each leg is printed, since the clients, the server and other people's work
share the cores. Each leg's box counts per image are compared with the detect leg's. Last, the
model alone: Detector.detect's images/s at batch sizes 1, 4 and 8, which says what batching can
gain on this device at all.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/bench_serve.py --run RUN [--requests 96]
        [--clients 8] [--rounds 2] [--max-batch 8] [--max-wait-ms 5] [--size 192]
"""
import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench_detect import make_images  # the same generated photos bench_detect.py times

GLUONDET = str(Path(sys.executable).parent / "gluondet")
HANG_GUARD_S = 600


def start_server(run, max_batch, max_wait_ms, thresh):
    proc = subprocess.Popen([GLUONDET, "serve", str(run), "--port", "0", "--max-batch", str(max_batch),
                             "--max-wait-ms", str(max_wait_ms), "--max-queue", "1024", "--thresh", str(thresh)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    port = None
    for line in proc.stderr:  # the server's own lines: where it listens, then ready
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
        port = int(match.group(1)) if match else port
        if "ready:" in line:
            return proc, port
    raise SystemExit(f"gluondet serve ended before it was ready (exit {proc.wait()})")


def stop_server(proc):
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    if proc.wait(HANG_GUARD_S) != 0:
        raise SystemExit(f"gluondet serve exited {proc.returncode}:\n{rest}")


def load_test(port, bodies, clients):
    """Every body sent once, by ``clients`` threads each on a keep-alive connection: (wall seconds,
    [latency seconds], {index: number of boxes})."""
    latencies, boxes, lock = [], {}, threading.Lock()
    todo = iter(range(len(bodies)))

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HANG_GUARD_S)
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                break
            t0 = time.perf_counter()
            conn.request("POST", "/detect", body=bodies[i], headers={"Content-Type": "image/jpeg"})
            answer = conn.getresponse()
            doc = json.loads(answer.read())
            elapsed = time.perf_counter() - t0
            if answer.status != 200:
                raise SystemExit(f"request {i}: {answer.status} {doc}")
            with lock:
                latencies.append(elapsed)
                boxes[i] = len(doc["images"][0]["boxes"])
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, latencies, boxes


def served_leg(args, max_batch, bodies):
    proc, port = start_server(args.run, max_batch, args.max_wait_ms, args.thresh)
    try:
        load_test(port, bodies[: args.clients], args.clients)  # warm-up: graphs and buffers for each size
        before = health(port)
        wall, latencies, boxes = load_test(port, bodies, args.clients)
        after = health(port)
    finally:
        stop_server(proc)
    ms = np.percentile(np.array(latencies) * 1000, [50, 99])
    mean_batch = (after["images"] - before["images"]) / max(1, after["batches"] - before["batches"])
    return {"images_s": len(bodies) / wall, "p50_ms": ms[0], "p99_ms": ms[1], "wall_s": wall, "boxes": boxes,
            "mean_batch": mean_batch}


def health(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HANG_GUARD_S)
    conn.request("GET", "/health")
    doc = json.loads(conn.getresponse().read())
    conn.close()
    return doc


def detect_leg(args, folder, n):
    out = Path(folder).parent / "detect.json"
    t0 = time.perf_counter()
    done = subprocess.run([GLUONDET, "detect", str(folder), "--run", str(args.run), "--no-draw", "--thresh",
                           str(args.thresh), "--batch-size", str(args.detect_batch), "--json", str(out)],
                          capture_output=True, text=True, timeout=HANG_GUARD_S)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"gluondet detect exited {done.returncode}:\n{done.stderr}")
    rate = float(re.search(r"([\d.]+) images/s", done.stdout).group(1))
    records = json.loads(out.read_text())["images"]
    boxes = {int(Path(r["file"]).stem.split("_")[1]): len(r["boxes"]) for r in records}
    assert len(boxes) == n
    return {"images_s": rate, "wall_s": wall, "boxes": boxes}


def model_alone(args, paths):
    """Detector.detect alone, as the server runs it (synchronous engine, one batch at its own
    size): images/s at each --model-batches size, sizes alternated, best of the rounds."""
    from gluondet.runtime import configure_engine

    configure_engine("cpu")
    import mxnet as mx

    from gluondet.image import read_image
    from gluondet.predict import Detector

    detector = Detector.load(args.run)
    images = [read_image(p) for p in paths]
    sizes = [int(s) for s in args.model_batches.split(",")]
    # (images per call, batch size): each size as the server runs it, and one image padded to the
    # largest size, as Detector.detect_files pads its last batch
    legs = [(n, n) for n in sizes] + [(1, max(sizes))]
    rates = {leg: [] for leg in legs}
    for _ in range(args.rounds):
        for n, batch_size in legs:
            detector.detect(images[:n], batch_size=batch_size)  # its graph for this size
            batches = max(1, len(images) // n)
            t0 = time.perf_counter()
            for k in range(batches):
                detector.detect(images[k * n:(k + 1) * n], batch_size=batch_size)
            mx.nd.waitall()
            rates[(n, batch_size)].append(batches * n / (time.perf_counter() - t0))
    print("Detector.detect alone, images/s by batch size (best of the rounds; the rounds): " + "; ".join(
        f"{n if n == b else f'{n} padded to {b}'}: {max(r):.1f} ({', '.join(f'{x:.1f}' for x in r)})"
        for (n, b), r in rates.items()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a run or export folder to serve")
    parser.add_argument("--requests", type=int, default=96, help="images per leg, one per request")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--detect-batch", type=int, default=8)
    parser.add_argument("--thresh", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=192, help="side of the generated images")
    parser.add_argument("--model-batches", default="1,4,8",
                        help="batch sizes to time Detector.detect alone at, after the legs ('' for none)")
    args = parser.parse_args()
    os.environ.setdefault("MXNET_GLUON_REPO", "http://127.0.0.1:9/")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        paths = make_images(folder, args.requests, args.size)
        bodies = [p.read_bytes() for p in paths]
        legs = {f"serve --max-batch {args.max_batch}": lambda: served_leg(args, args.max_batch, bodies),
                "serve --max-batch 1": lambda: served_leg(args, 1, bodies),
                f"detect FOLDER --batch-size {args.detect_batch}": lambda: detect_leg(args, folder, len(paths))}
        results = {name: [] for name in legs}
        for round_ in range(args.rounds):
            for name, leg in legs.items():
                load = os.getloadavg()[0]
                result = dict(leg(), load=load)
                results[name].append(result)
                extra = (f", p50 {result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms, mean batch "
                         f"{result['mean_batch']:.1f}" if "p50_ms" in result
                         else f" (whole command {result['wall_s']:.1f} s)")
                print(f"round {round_ + 1} {name}: {result['images_s']:.1f} images/s{extra}; load {load:.1f}",
                      flush=True)
        report(args, results)
        if args.model_batches:
            model_alone(args, paths)


def report(args, results):
    names = list(results)
    reference = results[names[2]][-1]["boxes"]
    print(f"\n{args.requests} images of {args.size} px, {args.clients} clients, {args.rounds} rounds "
          f"(median of the rounds; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"{os.cpu_count()} CPUs)")
    for name in names:
        rows = results[name]
        rate = statistics.median(r["images_s"] for r in rows)
        loads = ", ".join(f"{r['load']:.1f}" for r in rows)
        same = sum(rows[-1]["boxes"][i] == reference[i] for i in reference)
        latency = (f"p50 {statistics.median(r['p50_ms'] for r in rows):.0f} ms, "
                   f"p99 {statistics.median(r['p99_ms'] for r in rows):.0f} ms, "
                   f"mean batch {statistics.median(r['mean_batch'] for r in rows):.1f}" if "p50_ms" in rows[0] else
                   f"whole command {statistics.median(r['wall_s'] for r in rows):.1f} s")
        print(f"  {name:<32} {rate:7.1f} images/s  {latency}; load {loads}; "
              f"box counts as detect's on {same}/{len(reference)} images")
    batched, single, detect = (statistics.median(r["images_s"] for r in results[n]) for n in names)
    print(f"  batching: {batched / single:.2f}x one request at a time; served {batched / detect:.2f}x "
          f"and {single / detect:.2f}x gluondet detect's images/s")


if __name__ == "__main__":
    main()
