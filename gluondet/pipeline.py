"""Detection over files: read, preprocess and launch the next batch while the network computes this
one, each file's result (or the error that stopped it) in order, with progress and per-image time.
The Detector (predict.py) does one batch; this is the loop ``gluondet detect`` runs."""
import time
from pathlib import Path

from .errors import GluondetError
from .image import read_image
from .predict import ImageResult
from .progress import Progress


def detect_files(detector, paths, thresh=0.5, max_boxes=100, batch_size=8, progress=True):
    """Yield an ImageResult per path, in order, from ``detector`` (a predict.Detector); unreadable files yield their error and the rest go on.

    Pipelined on MXNet's asynchronous engine (GPUs): the next batch is read and preprocessed
    while the network works on this one. (On CPUs only, ``gluondet detect`` runs the synchronous
    engine: each batch is computed as it is sent, which measured faster there.)
    """
    paths = list(paths)
    bar = Progress(total=len(paths), unit="img", desc="detect", enabled=progress)
    pending = None
    clock = {"last_done": 0.0}
    try:
        for start in range(0, len(paths) + batch_size, batch_size):
            current = None
            if start < len(paths):
                t0 = time.perf_counter()
                loaded = []
                for p in paths[start:start + batch_size]:
                    try:
                        loaded.append(ImageResult(Path(p), image=read_image(p)))
                    except GluondetError as e:
                        loaded.append(ImageResult(Path(p), error=str(e)))
                ok = [r for r in loaded if r.error is None]
                started = detector.start([r.image for r in ok], batch_size) if ok else []
                current = (loaded, ok, started, t0)
            if pending is not None:
                yield from _finish_files(detector, pending, thresh, max_boxes, bar, clock)
            pending = current
    finally:
        bar.close()

def _finish_files(detector, pending, thresh, max_boxes, bar, clock):
    loaded, ok, started, t0 = pending
    if ok:
        for r, d in zip(ok, detector.finish(started, thresh, max_boxes)):
            r.detections = d
    # Wall time since the previous batch was done (or this one began), shared by its images:
    # with the pipeline overlapping batches, the shares add up to the total time.
    now = time.perf_counter()
    share = (now - max(t0, clock["last_done"])) / max(1, len(loaded))
    clock["last_done"] = now
    for r in loaded:
        r.seconds = share
        bar.update(1)
        yield r
