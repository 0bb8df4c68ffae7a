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
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np

from .constants import IMAGENET_MEAN, IMAGENET_STD
from .data.masks import encode_masks, paste_masks
from .errors import GluondetError
from .export_folder import EXPORT_META, export_network, read_export_meta
from .families import get_family
from .models.anchors import anchor_layers
from .precision import FLOAT32, choose_dtype, inference_block
from .run_folder import RunFolder


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
    """What ``pipeline.detect_files`` yields for one file: detections or the error that stopped it."""

    path: Path
    image: Optional[np.ndarray] = None  # RGB uint8, None when the file could not be read
    detections: Optional[Detections] = None
    error: Optional[str] = None
    seconds: float = 0.0


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
            results.extend(self.finish(self.start(chunk, batch_size), thresh, max_boxes))
        return results

    def start(self, images, batch_size):
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

    def anchor_layers(self, width, height):
        """The network's anchors for a ``width`` x ``height`` image (``models.anchors.anchor_layers``)."""

        return anchor_layers(self.net, self.family, self.input_size(width, height), (width, height), self.ctx,
                             self.info.source)

    @staticmethod
    def finish(started, thresh, max_boxes):
        out = []
        for outputs, items, scales, shapes in started:
            raw = tuple(o.asnumpy() for o in outputs)  # waits for the network
            out.extend(_postprocess(raw, i, sc, sh, thresh, max_boxes)
                       for i, sc, sh in zip(items, scales, shapes))
        return out

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

        masks = paste_masks(raw[3][i][keep][order], boxes, (w, h))
    return Detections(boxes=boxes.astype(np.float32), class_ids=ids.astype(np.int64),
                      scores=scores.astype(np.float32), masks=masks)


def context_list(ctx):
    """A list of MXNet contexts from a Context, a list of them, or None (the CPU)."""
    import mxnet as mx

    if ctx is None:
        return [mx.cpu()]
    return list(ctx) if isinstance(ctx, (list, tuple)) else [ctx]


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


