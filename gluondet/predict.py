"""A Detector built from a run folder or an export folder: images in, boxes out in original pixels.

Preprocessing is the training's validation transform, so the network sees at inference what it
was validated on: SSD resizes to ``data_shape`` x ``data_shape`` (GluonCV's
``SSDDefaultValTransform``: area interpolation when shrinking, cubic when enlarging) and Faster
R-CNN resizes the short side (``FasterRCNNDefaultValTransform``); both normalise with the ImageNet
mean and std. SSD images go through the hybridized network in fixed-size batches (the last batch
is padded, so the cached graph is built once); Faster R-CNN takes one image per forward, since
GluonCV's Faster R-CNN predicts one image at a time. On several devices (``ctx`` a list) an SSD
batch is split into one slice per device and Faster R-CNN image i goes to device i mod N; all are
launched before any result is read, so the devices work at once.

Images are read with ``gluondet.image.read_image``, the reader training uses, with the EXIF
orientation applied (no annotation says otherwise): a photo is seen as a viewer shows it.
"""
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np

from .constants import IMAGENET_MEAN, IMAGENET_STD
from .errors import GluondetError
from .image import IMAGE_SUFFIXES, read_image
EXPORT_META = "export.json"
EXPORT_PREFIX = "model"  # model-symbol.json, model-0000.params
EXPORT_ONNX = "model.onnx"
EXPORT_KINDS = ("mxnet", "onnx", "int8")  # export.json's format: what the folder's model is


# ----------------------------------------------------------------------------- listing images
def list_images(inputs):
    """Expand files and folders into (image paths, left_out) in a stable order.

    Folders give their files with an image suffix (sorted, not recursive); ``left_out`` lists the
    other files found in folders so the caller can say so. Files named explicitly are always kept,
    whatever their suffix (a bad one is reported when it is read).
    """
    images, left_out = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if not child.is_file():
                    continue
                if child.suffix.lower() in IMAGE_SUFFIXES:
                    images.append(child)
                elif not child.name.startswith("."):
                    left_out.append(child)
        elif path.exists():
            images.append(path)
        else:
            raise GluondetError(f"{path}: no such file or folder")
    return images, left_out


# ----------------------------------------------------------------------------- results
@dataclass
class Detections:
    """Boxes found in one image, in its original pixels, sorted by score (highest first)."""

    boxes: np.ndarray  # (N, 4) float32 xmin, ymin, xmax, ymax
    class_ids: np.ndarray  # (N,) int
    scores: np.ndarray  # (N,) float32
    masks: Optional[np.ndarray] = None  # (N, H, W) uint8 at the image's size, for mask models

    def __len__(self):
        return len(self.scores)

    def records(self, classes):
        """The boxes as JSON-ready dicts: class, class_id, score, bbox (and segmentation, a COCO RLE)."""
        records = [
            {"class": classes[int(c)], "class_id": int(c), "score": round(float(s), 4),
             "bbox": [round(float(v), 2) for v in box]}
            for box, c, s in zip(self.boxes, self.class_ids, self.scores)
        ]
        if self.masks is not None:
            from .data.masks import encode_masks

            for record, rle in zip(records, encode_masks(self.masks)):
                record["segmentation"] = rle
        return records

    def counts(self, classes):
        """{class name: number of boxes} for the classes present."""
        out = {}
        for c in self.class_ids:
            out[classes[int(c)]] = out.get(classes[int(c)], 0) + 1
        return out


def image_record(name, image, detections, classes):
    """One image's entry in ``gluondet detect --json`` (and in ``gluondet serve``'s answers): its
    name, size in pixels (EXIF orientation applied) and boxes (``Detections.records``)."""
    h, w = image.shape[:2]
    return {"file": str(name), "width": w, "height": h, "boxes": detections.records(classes)}


@dataclass
class ImageResult:
    """What ``Detector.detect_files`` yields for one file: detections or the error that stopped it."""

    path: Path
    image: Optional[np.ndarray] = None  # RGB uint8, None when the file could not be read
    detections: Optional[Detections] = None
    error: Optional[str] = None
    seconds: float = 0.0


# ----------------------------------------------------------------------------- anchors
@dataclass
class AnchorLayer:
    """The anchors of one feature map, in original image pixels (corner format)."""

    index: int
    grid: tuple  # (rows, cols) of the feature map
    boxes: np.ndarray  # (rows, cols, anchors_per_position, 4) xmin, ymin, xmax, ymax
    stride: tuple = field(default=(0.0, 0.0))  # (x, y) pixels between positions, original image

    def at(self, fx, fy):
        """Anchors (A, 4) of the position holding the point (fx, fy), given as fractions of width/height."""
        rows, cols = self.grid
        r = min(rows - 1, max(0, int(fy * rows)))
        c = min(cols - 1, max(0, int(fx * cols)))
        return self.boxes[r, c]


# ----------------------------------------------------------------------------- the detector
@dataclass
class ModelInfo:
    """What preprocessing and drawing need besides the network."""

    classes: List[str]
    family: str  # a gluondet.families name
    data_shape: Optional[int] = None  # SSD: square input side
    short: int = 600  # Faster R-CNN: short side after resize
    max_size: int = 1000  # Faster R-CNN: long side cap
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    source: str = ""  # where it was loaded from, for messages
    quantized: bool = False


class Detector:
    """A trained detector: ``detect(images)`` gives boxes in each image's own pixels.

    Build one with ``Detector.load(path)`` (a run folder, a ``.params`` file inside a run folder,
    or an export folder written by ``gluondet export``).
    """

    def __init__(self, net, info, ctx=None, hybridize=True):
        self.net = net
        self.info = info
        self.ctx_list = context_list(ctx)
        self.ctx = self.ctx_list[0]  # single-image work: anchors, export's example input
        self._hybridized = False
        self.dtype = "float32"
        self._low_precision = None  # the network converted by set_dtype
        if hybridize:
            self.hybridize()

    @property
    def classes(self):
        return self.info.classes

    @property
    def family(self):
        """The network's gluondet.families.Family."""
        from .families import get_family

        if getattr(self, "_family", None) is None or self._family.name != self.info.family:
            self._family = get_family(self.info.family)
        return self._family

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, path, ctx=None, which="best", max_boxes=None, hybridize=True):
        """A Detector from a run folder, a ``.params`` file in a run folder, or an export folder."""
        path = Path(path)
        if path.is_dir() and (path / EXPORT_META).is_file():
            return cls.from_export(path, ctx=ctx, hybridize=hybridize)
        if path.is_file() and path.suffix == ".params":
            if (path.parent / EXPORT_META).is_file():
                return cls.from_export(path.parent, ctx=ctx, hybridize=hybridize)
            return cls.from_run(path.parent, which=path, ctx=ctx, max_boxes=max_boxes,
                                hybridize=hybridize)
        if path.is_dir():
            return cls.from_run(path, which=which, ctx=ctx, max_boxes=max_boxes, hybridize=hybridize)
        raise GluondetError(f"{path}: not a run folder, a .params file or an export folder")

    @classmethod
    def from_run(cls, run_dir, which="best", ctx=None, max_boxes=None, hybridize=True):
        """Rebuild the network of a training run (``which``: best, last, or a .params path)."""
        from .run_folder import RunFolder

        run = RunFolder.open(run_dir)
        net, params = run.load_network(which, ctx=ctx)
        info = model_info_from_run(run, source=str(params if str(which).endswith(".params") else run.path))
        if hasattr(net, "short"):
            # An R-CNN knows the sizes it was built for; validation resizes to its last short.
            short = net.short
            info.short = int(short[-1] if isinstance(short, (list, tuple)) else short)
            info.max_size = int(net.max_size)
        if max_boxes and hasattr(net, "set_nms"):
            # GluonCV keeps post_nms boxes per image (100 by default); ask for more if needed.
            post_nms = max(int(max_boxes), getattr(net, "post_nms", 100))
            net.set_nms(nms_thresh=getattr(net, "nms_thresh", 0.45),
                        nms_topk=max(getattr(net, "nms_topk", 400), post_nms), post_nms=post_nms)
        return cls(net, info, ctx=ctx, hybridize=hybridize)

    @classmethod
    def from_export(cls, export_dir, ctx=None, hybridize=True):
        """Load a ``gluondet export`` folder: its ONNX model (run by onnxruntime) when export.json
        says ``format: onnx``, else its symbol JSON + params (float or INT8)."""
        export_dir = Path(export_dir)
        meta = read_export_meta(export_dir)
        ctx = context_list(ctx)
        net, _ = export_network(export_dir, meta, ctx)
        info = ModelInfo(
            classes=list(meta["classes"]), family=meta["family"], data_shape=meta.get("data_shape"),
            short=meta.get("short", 600), max_size=meta.get("max_size", 1000),
            mean=tuple(meta.get("mean", IMAGENET_MEAN)), std=tuple(meta.get("std", IMAGENET_STD)),
            source=str(export_dir), quantized=bool(meta.get("quantized", False)))
        detector = cls(net, info, ctx=ctx, hybridize=hybridize)
        detector.dtype = meta.get("dtype", "float32")
        return detector

    def hybridize(self):
        if not self._hybridized:
            # Inputs of one fixed shape (SSD): the graph can keep its memory between calls.
            static = self.family.fixed_input
            self.net.hybridize(static_alloc=static, static_shape=static)
            self._hybridized = True

    def set_dtype(self, dtype):
        """Run the network in ``dtype``: float32, or bfloat16 on a CPU with bf16 instructions
        (float16 on a GPU), through MXNet's AMP graph conversion; anything slow is refused."""
        from .precision import FLOAT32, choose_dtype, inference_block

        dtype, _ = choose_dtype(dtype, [c.device_type for c in self.ctx_list])
        if dtype == FLOAT32:
            self._low_precision, self.dtype = None, FLOAT32
            return
        if self.info.quantized:
            raise GluondetError(f"{self.info.source}: an INT8 export runs in int8; leave out --dtype")
        self.hybridize()
        w, h = self.input_size(self.info.short, self.info.short)  # fixed-input families: data_shape square
        self._low_precision = inference_block(self.net, dtype, self.ctx_list, (1, 3, h, w),
                                              static_shape=self.family.fixed_input)
        self.dtype = dtype

    @property
    def inference_net(self):
        """The network that runs: ``net`` itself, or its low-precision conversion (set_dtype)."""
        return self._low_precision or self.net

    # ------------------------------------------------------------------ preprocessing
    def input_size(self, width, height):
        """(width, height) of the network input for an image of this size."""
        return self.family.image_input_size(self.info, width, height)

    def preprocess(self, image):
        """HxWx3 uint8 RGB -> (3xH'xW' float32 normalised, (sx, sy)) with sx = W' / W."""
        import cv2

        h, w = image.shape[:2]
        nw, nh = self.input_size(w, h)
        if (nw, nh) != (w, h):
            interp = self.family.interpolation(w, h, nw, nh)  # the family's validation transform's
            resized = cv2.resize(image, (nw, nh), interpolation=interp)
        else:
            resized = image
        x = resized.astype(np.float32) / 255.0
        x = (x - np.array(self.info.mean, np.float32)) / np.array(self.info.std, np.float32)
        return x.transpose(2, 0, 1), (nw / w, nh / h)

    # ------------------------------------------------------------------ inference
    def forward(self, batch):
        """Raw network outputs (ids, scores, boxes) as numpy for an NCHW float32 numpy batch."""
        return tuple(o.asnumpy() for o in self._launch(batch))

    def _launch(self, batch, ctx=None):
        """Start the network on a batch; MXNet computes in the background until asnumpy()."""
        import mxnet as mx

        return self.inference_net(mx.nd.array(batch, ctx=ctx or self.ctx))[:4 if self.family.masks else 3]

    def detect(self, images, thresh=0.5, max_boxes=100, batch_size=None):
        """Detections for a list of HxWx3 uint8 RGB images (one network call per batch)."""
        batch_size = batch_size or max(1, len(images))
        results = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            results.extend(self._finish(self._start(chunk, batch_size), thresh, max_boxes))
        return results

    def _start(self, images, batch_size):
        """Preprocess and launch: returns what ``_finish`` needs (outputs still computing)."""
        prepared = [self.preprocess(img) for img in images]
        shapes = [img.shape for img in images]
        scales = [scale for _, scale in prepared]
        if self.family.per_image_forward:  # GluonCV's R-CNNs predict one image per forward
            devices = self.ctx_list
            return [(self._launch(x[None], devices[i % len(devices)]), [0], [sc], [sh])
                    for i, ((x, sc), sh) in enumerate(zip(prepared, shapes))]
        batch = np.stack([x for x, _ in prepared])
        if len(batch) < batch_size:  # pad: one input shape, one cached graph
            pad = np.zeros((batch_size - len(batch),) + batch.shape[1:], np.float32)
            batch = np.concatenate([batch, pad])
        started, first = [], 0
        for ctx, part in zip(self.ctx_list, np.array_split(batch, min(len(self.ctx_list), len(batch)))):
            items = [i for i in range(first, first + len(part)) if i < len(images)]
            if not items:  # only padding from here on
                break
            started.append((self._launch(part, ctx), [i - first for i in items],
                            [scales[i] for i in items], [shapes[i] for i in items]))
            first += len(part)
        return started

    @staticmethod
    def _finish(started, thresh, max_boxes):
        out = []
        for outputs, items, scales, shapes in started:
            raw = tuple(o.asnumpy() for o in outputs)  # waits for the network
            out.extend(_postprocess(raw, i, sc, sh, thresh, max_boxes)
                       for i, sc, sh in zip(items, scales, shapes))
        return out

    def detect_files(self, paths, thresh=0.5, max_boxes=100, batch_size=8, progress=True):
        """Yield an ImageResult per path, in order; unreadable files yield their error and the rest go on.

        Pipelined on MXNet's asynchronous engine (GPUs): the next batch is read and preprocessed
        while the network works on this one. (On CPUs only, ``gluondet detect`` runs the synchronous
        engine: each batch is computed as it is sent, which measured faster there.)
        """
        from .progress import Progress

        paths = list(paths)
        bar = Progress(total=len(paths), unit="img", desc="detect", enabled=progress)
        pending = None
        self._last_done = 0.0
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
                    started = self._start([r.image for r in ok], batch_size) if ok else []
                    current = (loaded, ok, started, t0)
                if pending is not None:
                    yield from self._finish_files(pending, thresh, max_boxes, bar)
                pending = current
        finally:
            bar.close()

    def _finish_files(self, pending, thresh, max_boxes, bar):
        loaded, ok, started, t0 = pending
        if ok:
            for r, d in zip(ok, self._finish(started, thresh, max_boxes)):
                r.detections = d
        # Wall time since the previous batch was done (or this one began), shared by its images:
        # with the pipeline overlapping batches, the shares add up to the total time.
        now = time.perf_counter()
        share = (now - max(t0, self._last_done)) / max(1, len(loaded))
        self._last_done = now
        for r in loaded:
            r.seconds = share
            bar.update(1)
            yield r

    # ------------------------------------------------------------------ anchors
    def anchor_layers(self, width, height):
        """The network's own anchors for an image of this size, per feature map, in its pixels.

        SSD: the default boxes of every feature map (GluonCV's anchor generators, all sizes and
        ratios). Faster R-CNN: the RPN anchors. Needs the Gluon network (a run folder), not an export.
        """
        import mxnet as mx

        net = self.net
        if isinstance(net, (mx.gluon.SymbolBlock, OnnxNet)):
            raise GluondetError(
                f"{self.info.source}: anchors are read from the network's Python blocks; "
                "use --run with a run folder, not an export folder")
        nw, nh = self.input_size(width, height)
        x = mx.nd.zeros((1, 3, nh, nw), ctx=self.ctx)
        sx, sy = nw / width, nh / height
        layers = self.family.anchor_layers(net, x)
        if layers is None:
            raise GluondetError(f"{self.info.source}: a {self.family.name} network has no anchor boxes to show")
        return [_anchor_layer(i, feat.shape[2:], corners, sx, sy, nw, nh) for i, (feat, corners) in enumerate(layers)]


def _anchor_layer(index, grid, corners, sx, sy, nw, nh):
    rows, cols = int(grid[0]), int(grid[1])
    boxes = corners.reshape(rows, cols, -1, 4) / np.array([sx, sy, sx, sy], np.float32)
    return AnchorLayer(index=index, grid=(rows, cols), boxes=boxes.astype(np.float32),
                       stride=(nw / cols / sx, nh / rows / sy))


def _postprocess(raw, i, scale, shape, thresh, max_boxes):
    """Detections of batch item ``i``: keep valid boxes over ``thresh``, map back to original pixels."""
    ids, scores, boxes = raw[:3]
    ids, scores, boxes = ids[i].reshape(-1), scores[i].reshape(-1), boxes[i].reshape(-1, 4)
    keep = (ids >= 0) & (scores >= thresh)
    ids, scores, boxes = ids[keep], scores[keep], boxes[keep]
    order = np.argsort(-scores, kind="stable")[:max_boxes]
    ids, scores, boxes = ids[order], scores[order], boxes[order]
    sx, sy = scale
    h, w = shape[:2]
    boxes = boxes / np.array([sx, sy, sx, sy], np.float32)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
    masks = None
    if len(raw) > 3:  # a mask model: per-box mask probabilities, pasted at the image's size
        from .data.masks import paste_masks

        masks = paste_masks(raw[3][i][keep][order], boxes, (w, h))
    return Detections(boxes=boxes.astype(np.float32), class_ids=ids.astype(np.int64),
                      scores=scores.astype(np.float32), masks=masks)


def context_list(ctx):
    """A list of MXNet contexts from a Context, a list of them, or None (the CPU)."""
    import mxnet as mx

    if ctx is None:
        return [mx.cpu()]
    return list(ctx) if isinstance(ctx, (list, tuple)) else [ctx]


# ----------------------------------------------------------------------------- export networks
def export_format(meta):
    """What an export folder holds, from its export.json: mxnet, onnx or int8 (folders written
    before export.json recorded it said ``format: mxnet`` for all three; ``quantized`` tells int8)."""
    fmt = meta.get("format", "mxnet")
    if meta.get("quantized"):
        return "int8"
    if fmt not in EXPORT_KINDS:
        raise GluondetError(f"export.json: format '{fmt}' is not one of {', '.join(EXPORT_KINDS)}")
    return fmt


def export_network(export_dir, meta, ctx):
    """``(net, model file)`` of an export folder for the contexts ``ctx`` (a list): an OnnxNet for
    ``format: onnx``, else MXNet's SymbolBlock of the symbol JSON + params (float or INT8)."""
    import warnings

    import mxnet as mx

    export_dir = Path(export_dir)
    fmt = export_format(meta)
    files = [meta.get("onnx", EXPORT_ONNX)] if fmt == "onnx" else [meta["symbol"], meta["params"]]
    for name in files:
        if not (export_dir / name).is_file():
            raise GluondetError(f"{export_dir}: export is incomplete, {name} is missing")
    if fmt != "mxnet" and any(c.device_type != "cpu" for c in ctx):
        runtime = "oneDNN" if fmt == "int8" else "onnxruntime's CPU provider"
        raise GluondetError(f"{export_dir}: an {fmt.upper()} export runs on the CPU ({runtime}); use --ctx cpu")
    if fmt == "onnx":
        return OnnxNet(export_dir / files[0]), export_dir / files[0]
    dtype = meta.get("dtype", "float32")
    if dtype != "float32":  # its graph casts to dtype: refuse a device where that is slow
        from .precision import choose_dtype

        try:
            choose_dtype(dtype, [c.device_type for c in ctx])
        except GluondetError as e:
            raise GluondetError(f"{export_dir}: exported with --dtype {dtype}, but {e}; "
                                "export the run again in float32") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Cannot decide type for the following arguments: data"
        net = mx.gluon.SymbolBlock.imports(str(export_dir / files[0]), [meta.get("input_name", "data")],
                                           str(export_dir / files[1]), ctx=ctx)
    return net, export_dir / files[1]


class OnnxNet:
    """An ONNX model run by onnxruntime, called as the MXNet network it was exported from:
    ``net(x)`` takes an NCHW float32 NDArray and gives the model's outputs as NDArrays on x's
    device, so evaluation, detection and timing treat it as any other network. onnxruntime runs
    synchronously: the outputs are computed when the call returns."""

    def __init__(self, path):
        try:
            import onnxruntime
            from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf
        except ImportError:
            raise GluondetError(f"{path}: running an ONNX export needs onnxruntime: "
                                "pip install 'gluondet[onnx]'") from None
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its notices (unused initializers) are not the user's
        threads = os.environ.get("OMP_NUM_THREADS", "")
        if threads.isdigit():  # the threads MXNet is given (runtime.configure_threads), for a fair comparison
            options.intra_op_num_threads = int(threads)
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except (Fail, InvalidGraph, InvalidProtobuf) as e:
            raise GluondetError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from None
        self.path = Path(path)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x):
        import mxnet as mx

        outputs = self.session.run(None, {self.input_name: x.asnumpy().astype(np.float32, copy=False)})
        return [mx.nd.array(o, ctx=x.context, dtype=o.dtype) for o in outputs]

    def hybridize(self, *args, **kwargs):
        """Nothing to do: onnxruntime optimised the graph when the session was made."""


# ----------------------------------------------------------------------------- run / export metadata
def model_info_from_run(run, source=""):
    """ModelInfo from a RunFolder, or a dict with its fields (classes, model, family, data_shape)."""
    info = run if isinstance(run, dict) else {"classes": run.classes, "model": run.model_config,
                                               "family": run.family, "data_shape": run.data_shape}
    model = info.get("model") or (info.get("config") or {}).get("model") or {}
    family = info.get("family") or model.get("family") or "ssd"
    data_shape = info.get("data_shape") or model.get("data_shape")
    if isinstance(data_shape, (list, tuple)):
        data_shape = data_shape[0]
    short = model.get("short") or data_shape or 600  # R-CNNs resize the shorter side to data_shape
    if isinstance(short, (list, tuple)):
        short = short[-1]
    return ModelInfo(
        classes=list(info["classes"]), family=family,
        data_shape=int(data_shape) if data_shape else None,
        short=int(short), max_size=int(model.get("max_size") or 1000),
        mean=tuple(model.get("mean") or IMAGENET_MEAN), std=tuple(model.get("std") or IMAGENET_STD),
        source=source)


def read_export_meta(export_dir):
    path = Path(export_dir) / EXPORT_META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise GluondetError(f"{path}: cannot read export metadata ({e})") from None
    for key in ("classes", "family", "symbol", "params"):
        if key not in meta:
            raise GluondetError(f"{path}: no '{key}'; re-export with gluondet export")
    return meta
