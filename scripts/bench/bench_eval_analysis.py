"""What the eval analysis costs next to the mAP it explains, on the same stored detections.

The detections of bench_voc_map.py (2,000 images, ~50 detections each, 20 classes). Baseline: the
mAP itself (``VOCMApMetric.get()``); measured: ``analysis.analyze()`` (every number of
RUN/eval-<split>/analysis.json: PR, F1, per-class table, confusion matrix, error breakdown with its
three extra matchings) and then the four pictures. Legs alternate (A B A B), best of --repeat; the
ratio is analyze / mAP. Pure numpy and matplotlib: no MXNet waits are involved.

    .venv/bin/python scripts/bench/bench_eval_analysis.py [--images 2000] [--repeat 3]
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_voc_map import make_batches  # noqa: E402  (the same generated detections)

from gluondet.eval.analysis import analyze  # noqa: E402
from gluondet.eval.plots import save_confusion, save_errors, save_f1, save_pr  # noqa: E402
from gluondet.eval.voc_metric import VOCMApMetric  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--dets", type=int, default=50)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    names = ["class%d" % c for c in range(args.classes)]
    metric = VOCMApMetric(0.5, names)
    for batch in make_batches(args.images, args.dets, args.classes, 8):
        metric.update(*batch)
    legs = {"mAP (get)": lambda: metric.get(), "analysis (analyze)": lambda: analyze(metric, names)}
    best = {k: float("inf") for k in legs}
    for _ in range(args.repeat):
        for label, leg in legs.items():  # A B A B
            start = time.perf_counter()
            result = leg()
            best[label] = min(best[label], time.perf_counter() - start)
    assert result["map"] == metric.get()[1][-1]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        save_pr(result["pr"], Path(tmp) / "pr.png", "pr")
        save_f1(result["f1"], Path(tmp) / "f1.png", "f1")
        save_confusion(result["confusion"], Path(tmp) / "cm.png", "cm")
        save_errors(result["errors"], Path(tmp) / "err.png", "errors")
        pictures = time.perf_counter() - start
    print(f"{args.images} images, {len(names)} classes, mAP {result['map']:.6f} (equal in both)")
    for label, seconds in best.items():
        print(f"  {label:<20} {seconds:.3f} s")
    print(f"  ratio analysis / mAP: {best['analysis (analyze)'] / best['mAP (get)']:.1f}x; "
          f"the four pictures: {pictures:.2f} s (once)")


if __name__ == "__main__":
    main()
