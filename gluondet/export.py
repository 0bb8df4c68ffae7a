"""Exporting a trained run as a deployable model folder (MXNet symbol + params, ONNX, or INT8),
and checking an export against its run.

An export folder holds ``model-symbol.json`` + ``model-0000.params`` (what MXNet's
``SymbolBlock.imports`` and model servers load), ``classes.txt``, the run's ``config.yaml`` and
``export.json`` (format, family, input size, normalisation, classes, source), which
``Detector.load`` reads. ``--format onnx`` adds ``model.onnx`` (weights as initializers, checked by
onnx's checker; ``Detector.load`` runs it with onnxruntime); ``--int8`` writes a graph quantized
with MXNet's oneDNN backend, calibrated on images of the run's validation split. ``export.json``
says which of the three the folder's model is (``format``: mxnet, onnx or int8).

Every file is written into a staging folder first and moved in only when every conversion
succeeded: what mx2onnx or quantization cannot convert is one line, and nothing is written.
``export.json`` is written last, so a folder that has it is complete.

``verify_export`` evaluates the export and its run on the same split and decides whether they agree
within the format's tolerance (``TOLERANCES``; README's export section says why these values).
"""
import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from . import __version__
from .constants import EXPORT_FORMATS
from .data import load_dataset
from .engine.validation import evaluate_run
from .errors import GluondetError
from .export_folder import (EXPORT_META, EXPORT_ONNX, EXPORT_PREFIX, export_format, export_network, read_export_meta,
                            write_export_meta)
from .extras import install_line
from .families import get_family
from .image import list_images, read_image
from .models import build_model
from .predict import Detector
from .progress import ljust, text_width
from .run_folder import CLASSES_FILE, CONFIG_FILE, RunFolder
from .runtime import make_contexts

FORMATS = EXPORT_FORMATS
# How far an export's mAP may be from its run's (absolute, 0-1 scale), by what the export computes
# in. float32 (a symbol export, or the same graph in onnxruntime) computes what the run computes up
# to the order of float additions: its mAP is the run's. INT8 rounds every activation to one of 256
# levels: a point or two of mAP. bfloat16 keeps 8 bits of mantissa, as coarse as INT8's steps.
TOLERANCES = {"float32": 0.001, "bfloat16": 0.02, "float16": 0.02, "int8": 0.02}
BOX_TOLERANCE = 0.01  # pixels: a float32 export's boxes are the run's up to float rounding
BOX_MIN_SCORE = 0.1  # boxes compared: those scoring this or more in either model
CHECK_IMAGES = 32  # images of the split the boxes and the speed are compared on


def export_run(run_dir, out_dir, fmt="mxnet", which="best", int8=False, calib_images=32,
               calib_source=None, config_dir=None, log=print, ctx="cpu", dtype="float32"):
    """Export ``run_dir`` into ``out_dir``; returns the export folder. See the module docstring.

    ``ctx`` (a --ctx spec, one device or several) is where the run's network is loaded; INT8
    calibration itself runs on the CPU, where the oneDNN INT8 graph runs (see quantize_detector).
    ``dtype`` bfloat16 writes the graph with MXNet's AMP casts (float32 weights, bf16 convolutions):
    an MXNet symbol export for CPUs with bf16 instructions, not combinable with ONNX or INT8.
    """

    if fmt not in FORMATS:
        raise GluondetError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    if dtype != "float32" and (int8 or fmt != "mxnet"):
        raise GluondetError(f"--dtype {dtype} exports the MXNet format in float32 + {dtype}; "
                            "it does not combine with --int8 or --format onnx")
    if int8 and fmt == "onnx":
        raise GluondetError("--int8 writes MXNet's oneDNN INT8 graph, which MXNet's ONNX exporter cannot "
                            "convert; export --format onnx and --int8 into two folders")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.resolve() == run_dir.resolve():
        raise GluondetError(f"--out {out_dir}: choose a folder other than the run folder itself")
    if fmt == "onnx":
        require_onnx()  # before the network is even loaded
    if int8:  # before the network is even loaded: nothing said of work that cannot be done

        get_family(RunFolder.open(run_dir).family).check_int8()
    detector = Detector.load(run_dir, which=which, ctx=make_contexts(ctx))
    detector.set_dtype(dtype)
    if int8:
        calib = calibration_images(detector, run_dir, calib_images, calib_source, config_dir)
        log(f"calibrating INT8 ranges on {len(calib)} images ...")
        net = quantize_detector(detector, calib)
    else:
        net = detector.inference_net
    with tempfile.TemporaryDirectory(prefix="gluondet-export-") as stage:
        stage = Path(stage)
        write_symbol(net, detector, stage, quantized=int8)
        onnx_meta = write_onnx(stage, detector) if fmt == "onnx" else {}
        meta = export_meta(detector, run_dir, which, "int8" if int8 else fmt, onnx_meta)
        install_export(stage, out_dir, run_dir, meta)
    log(f"wrote {out_dir / (EXPORT_PREFIX + '-symbol.json')} and {EXPORT_PREFIX}-0000.params"
        + (f" and {EXPORT_ONNX} (opset {onnx_meta['opset']})" if onnx_meta else ""))
    return out_dir


def _example_input(detector, ctx=None):
    import mxnet as mx

    shape = detector.family.example_shape(detector.info.data_shape, detector.info.short, detector.info.max_size)
    return mx.nd.zeros(shape, ctx=ctx or detector.ctx)


def write_symbol(net, detector, folder, quantized=False):
    """net.export into ``folder``: model-symbol.json and model-0000.params."""
    import mxnet as mx

    net.hybridize(static_alloc=detector.family.fixed_input, static_shape=detector.family.fixed_input)
    # builds the cached graph that export() writes; an INT8 network lives on the CPU
    net(_example_input(detector, ctx=mx.cpu() if quantized else None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # MXNet drops AMP's casts from exports by default: keep those a --dtype export is made of
        net.export(str(Path(folder) / EXPORT_PREFIX), epoch=0, remove_amp_cast=detector.dtype == "float32")


def export_meta(detector, run_dir, which, fmt, onnx_meta=None):
    """export.json's content: what the folder's model is (``format``: mxnet, onnx or int8; the
    ONNX file and opset), and what preprocessing and drawing need besides the network."""
    info = detector.info
    return {
        "format": fmt,
        "family": info.family,
        "classes": list(info.classes),
        "data_shape": info.data_shape,
        "short": info.short,
        "max_size": info.max_size,
        "mean": list(info.mean),
        "std": list(info.std),
        "input_name": "data",
        "symbol": f"{EXPORT_PREFIX}-symbol.json",
        "params": f"{EXPORT_PREFIX}-0000.params",
        **(onnx_meta or {}),
        "quantized": fmt == "int8",
        "dtype": detector.dtype,
        "outputs": ["class_ids (B, K, 1), -1 = none", "scores (B, K, 1)",
                    "boxes (B, K, 4) xmin, ymin, xmax, ymax in input pixels"]
        + (["masks (B, K, M, M) per-box mask probabilities, to paste into the boxes"]
           if detector.family.masks else []),
        "source_run": str(Path(run_dir).resolve()),
        "source_weights": str(which),
        "gluondet_version": __version__,
    }


def install_export(stage, out_dir, run_dir, meta):
    """Move the staged model files into ``out_dir`` with the run's classes and config, then write
    export.json: until it is there, the folder is incomplete (and Detector.load says so)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / EXPORT_META).unlink(missing_ok=True)
    (out_dir / EXPORT_ONNX).unlink(missing_ok=True)  # a model.onnx of an earlier export is not this one
    for path in sorted(Path(stage).iterdir()):
        shutil.move(str(path), str(out_dir / path.name))
    for name in (CONFIG_FILE, CLASSES_FILE):  # the run's own description travels with the export
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, out_dir / name)
    write_export_meta(out_dir, meta)
    return out_dir


# ----------------------------------------------------------------------------- ONNX
def write_onnx(folder, detector):
    """Convert the symbol export in ``folder`` to ``model.onnx`` with MXNet's mx2onnx (box_nms as
    MXNet computes it, see mxnet_box_nms), check it with onnx's checker; returns export.json's
    ONNX fields (file name, opset). Raises a GluondetError naming what cannot be converted."""
    require_onnx()
    import mxnet as mx
    import onnx

    folder = Path(folder)
    symbol = folder / f"{EXPORT_PREFIX}-symbol.json"
    params = folder / f"{EXPORT_PREFIX}-0000.params"
    ops = symbol_operators(symbol)
    unsupported = [op for op in sorted(ops) if op not in onnx_supported_operators()]
    if unsupported:
        raise GluondetError(
            f"ONNX export: MXNet's ONNX exporter has no conversion for operator "
            f"'{unsupported[0]}'" + (f" (nor {', '.join(unsupported[1:])})" if unsupported[1:] else "")
            + f", used by this {detector.family.name} network; nothing was written (--format mxnet exports it)")
    x = _example_input(detector)
    dynamic = [detector.family.onnx_dynamic_shape(x.shape)]
    path = folder / EXPORT_ONNX
    logging.disable(logging.WARNING)  # mx2onnx's notices (box_nms's class notice no longer holds)
    try:
        with mxnet_box_nms():
            mx.onnx.export_model(str(symbol), str(params), in_shapes=[x.shape], in_types=[np.float32],
                                 onnx_file_path=str(path), dynamic=True, dynamic_input_shapes=dynamic)
    except (AttributeError, NotImplementedError, ValueError, KeyError) as e:
        # the exporter's limits ("No conversion function registered for op type X yet.", an
        # attribute it cannot express): not fixable here, so say it and point at the MXNet export
        raise GluondetError(f"ONNX export: MXNet's exporter failed on this {detector.family.name} network "
                            f"({_first_line(e)}); nothing was written (--format mxnet exports it)") from None
    finally:
        logging.disable(logging.NOTSET)
    model = tidy_onnx_model(onnx.load(str(path)), converters_opset())
    check_onnx_model(model, detector.family.name)
    onnx.save(model, str(path))
    return {"onnx": EXPORT_ONNX, "opset": converters_opset(), "onnx_weights": "initializers",
            "onnx_checked": True}


def converters_opset():
    """The newest ONNX opset MXNet's converters are written for (13 in MXNet 1.9): the opset of the
    nodes mx2onnx writes, whatever opset it labels the model with (the onnx package's newest, 19
    for onnx 1.14, under which some of those nodes are invalid: Split without num_outputs)."""
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph

    return max(MXNetGraph.registry_)


def tidy_onnx_model(model, opset=None):
    """mx2onnx's graph made what onnxruntime optimizes and loads: labelled with the opset its nodes
    are written for (``opset``; see converters_opset), weights as initializers only (mx2onnx also
    lists each as a graph input, which keeps onnxruntime from folding constants), and every node
    named (onnxruntime 1.18's Gather/Slice fusion names its nodes after the fused ones; from two
    unnamed ones it made two nodes of one name and refused the model)."""
    if opset is not None:
        for entry in model.opset_import:
            if entry.domain in ("", "ai.onnx"):
                entry.version = opset
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    taken = {n.name for n in model.graph.node}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    return model


def check_onnx_model(model, family_name="this"):
    """onnx's checker on ``model`` with strict shape inference, its weights all initializers (the
    one graph input the image), and onnxruntime loading it (where installed): a model written is
    one that runs. A GluondetError says what is wrong; nothing has been written then."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise GluondetError(f"ONNX export: onnx's checker refuses the {family_name} network's converted "
                            f"graph ({_first_line(e)}); nothing was written (--format mxnet exports it)") from None
    weights = {t.name for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in weights]
    if inputs != ["data"]:
        raise GluondetError(f"ONNX export: the graph's inputs are {', '.join(inputs)}, not the image "
                            "alone (weights must be initializers); nothing was written")
    try:
        import onnxruntime
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, NotImplemented
    except ImportError:  # the onnx extra brings it; without it the checker's word is all there is
        return
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its notices (unused initializers) are not the user's
    try:
        onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except (Fail, InvalidGraph, NotImplemented) as e:
        raise GluondetError(f"ONNX export: onnxruntime cannot run the {family_name} network's converted "
                            f"graph ({_first_line(e)}); nothing was written (--format mxnet exports it)") from None


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextlib.contextmanager
def mxnet_box_nms():
    """mx2onnx's conversion of ``_contrib_box_nms`` made to compute what MXNet's operator does,
    while mx2onnx runs (its converter table is restored after).

    MXNet's box_nms (the predict graphs of GluonCV's SSD, YOLOv3 and R-CNNs) considers only the
    ``topk`` best-scored boxes and, with ``id_index`` and ``force_suppress=False``, lets a box be
    suppressed only by boxes of its own class. mx2onnx maps it to ONNX's NonMaxSuppression over one
    class, with ``topk`` as the number of boxes kept after suppression. An SSD scores every anchor
    once per class, so that model lost every class but the best of each anchor, and kept boxes
    MXNet never considers. Two inputs of the converted NonMaxSuppression change (mxnet_nms_inputs);
    the boxes it outputs are gathered from the unchanged rows, as before.
    """
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph

    tables = [t for t in MXNetGraph.registry_.values() if "_contrib_box_nms" in t]
    originals = [t["_contrib_box_nms"] for t in tables]
    for table, convert in zip(tables, originals):
        table["_contrib_box_nms"] = _with_mxnet_nms_inputs(convert)
    try:
        yield
    finally:
        for table, convert in zip(tables, originals):
            table["_contrib_box_nms"] = convert


def _with_mxnet_nms_inputs(convert):
    def convert_box_nms(node, **kwargs):
        nodes = convert(node, **kwargs)
        nms = [n for n in nodes if n.op_type == "NonMaxSuppression"]
        if len(nms) != 1:
            raise NotImplementedError(f"box_nms {node['name']}: converted to {len(nms)} "
                                      "NonMaxSuppression nodes, not 1")
        extra = mxnet_nms_inputs(nms[0], nodes, node["name"], node.get("attrs", {}))
        at = nodes.index(nms[0])
        return nodes[:at] + extra + nodes[at:]

    return convert_box_nms


def mxnet_nms_inputs(nms, nodes, name, attrs):
    """Nodes computing MXNet's NMS inputs from the converted ones, and ``nms`` rewired to them:
    boxes shifted by class id x (2 x the largest |coordinate| + 1), so boxes of two classes never
    overlap (when box_nms is per class); scores outside the ``topk`` best set to -1, under any
    valid threshold (when box_nms has a topk). Returns the new nodes, to go before ``nms``."""
    from onnx import TensorProto, helper

    def const(suffix, values, dtype=TensorProto.INT64):
        out = f"{name}_mx_{suffix}"
        new.append(helper.make_node("Constant", [], [out], name=out,
                                    value=helper.make_tensor(out + "_v", dtype, [len(values)], values)))
        return out

    def op(kind, inputs, suffix, **attributes):
        out = f"{name}_mx_{suffix}"
        new.append(helper.make_node(kind, inputs, [out], name=out, **attributes))
        return out

    new = []
    boxes, scores = nms.input[0], nms.input[1]
    producers = {out: n for n in nodes for out in n.output}
    if boxes not in producers:
        raise NotImplementedError(f"box_nms {name}: its boxes come from no node of the conversion")
    rows = producers[boxes].input[0]  # the (B, N, 6) rows the boxes were sliced from
    id_index = int(attrs.get("id_index", "-1"))
    if id_index >= 0 and str(attrs.get("force_suppress", "False")).lower() not in ("true", "1"):
        ids = op("Slice", [rows, const("id0", [id_index]), const("id1", [id_index + 1]), const("last", [-1])],
                 "ids")
        largest = op("ReduceMax", [op("Abs", [boxes], "abs")], "largest", keepdims=0)
        spacing = op("Add", [op("Mul", [largest, const("two", [2.0], TensorProto.FLOAT)], "twice"),
                             const("one", [1.0], TensorProto.FLOAT)], "spacing")
        nms.input[0] = op("Add", [boxes, op("Mul", [ids, spacing], "shift")], "boxes")
    topk = int(attrs.get("topk", "-1"))
    if topk > 0:
        count = op("Gather", [op("Shape", [scores], "shape"), const("n_axis", [2])], "count", axis=0)
        k = op("Min", [count, const("topk", [topk])], "k")
        best = helper.make_node("TopK", [scores, k], [f"{name}_mx_best", f"{name}_mx_best_i"],
                                name=f"{name}_mx_best", axis=-1)
        new.append(best)
        kth = op("Slice", [best.output[0], const("kth0", [-1]), const("kth1", [2 ** 62]),
                           const("kth_axis", [-1])], "kth")  # the k-th best score, (B, 1, 1)
        keep = op("GreaterOrEqual", [scores, kth], "keep")
        nms.input[1] = op("Where", [keep, scores, const("minus1", [-1.0], TensorProto.FLOAT)], "scores")
    return new


def require_onnx():
    """A GluondetError unless the onnx package (which mx2onnx needs) is installed."""
    import importlib.util

    if importlib.util.find_spec("onnx") is None:
        raise GluondetError(f"ONNX export needs the onnx package: {install_line('onnx')}")


def symbol_operators(symbol_file):
    """Operator names used by a symbol JSON file."""
    graph = json.loads(Path(symbol_file).read_text(encoding="utf-8"))
    return {node["op"] for node in graph["nodes"] if node["op"] != "null"}


def onnx_supported_operators():
    """MXNet operators mx2onnx can convert at the installed onnx package's opset."""
    import mxnet as mx

    return set(mx.onnx.get_operator_support())


# ----------------------------------------------------------------------------- INT8
def calibration_images(detector, run_dir, count, source=None, config_dir=None):
    """Up to ``count`` RGB images: from ``source`` (a folder of images) or the run's val split."""
    if count < 1:
        raise GluondetError("--calib-images must be at least 1")
    if source is not None and Path(source).is_dir() and not (Path(source) / "Annotations").is_dir():
        paths, _ = list_images([source])
        if not paths:
            raise GluondetError(f"{source}: no images to calibrate on")
        return [read_image(p) for p in paths[:count]]
    dataset = _run_val_dataset(run_dir, source, config_dir, detector.classes)
    n = min(count, len(dataset))
    if n == 0:
        raise GluondetError(f"{run_dir}: the validation split is empty; give --calib-data FOLDER")
    # Spread over the split rather than its first images (often one sequence or one scene).
    picks = np.linspace(0, len(dataset) - 1, n).round().astype(int)
    return [dataset[int(i)][0].asnumpy() for i in picks]


def _run_val_dataset(run_dir, source, config_dir, classes):
    """The run's validation split (or ``source``, a dataset name/path), with the run's classes."""

    cfg = RunFolder.open(run_dir).dataset_config(source, config_dir)
    for split in ("val", "test", "train"):
        if split in cfg.splits:
            return load_dataset(cfg, split, classes=list(classes), skip_bad=True)
    return load_dataset(cfg, "val", classes=list(classes), skip_bad=True)


def quantize_detector(detector, images, batch_size=8):
    """The detector's network quantized to INT8 (oneDNN), activation ranges from ``images``.

    MXNet's quantize_net wants a DataLoader of (data, label) batches of one fixed shape; the
    label is never used, so it is a placeholder. It calibrates on one context, and the INT8 graph
    runs on the CPU (oneDNN), so the network is first moved to the CPU, whichever devices the
    detector was loaded on.
    """
    import mxnet as mx
    from mxnet.contrib.quantization import quantize_net

    detector.family.check_int8()
    if not mx.runtime.Features().is_enabled("MKLDNN"):
        raise GluondetError("INT8 export needs MXNet built with oneDNN (the mxnet pip wheel for CPU)")
    data = np.stack([detector.preprocess(img)[0] for img in images])
    batch_size = min(batch_size, len(data))
    n = len(data) // batch_size * batch_size  # one batch shape: the calibration graph is bound once
    dataset = mx.gluon.data.ArrayDataset(mx.nd.array(data[:n]), mx.nd.zeros((n, 1)))
    loader = mx.gluon.data.DataLoader(dataset, batch_size=batch_size, last_batch="discard")
    net = detector.net
    net.collect_params().reset_ctx(mx.cpu())
    net.hybridize(static_alloc=False, static_shape=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantize_net's own deprecation notice
        # Concat and Flatten stay float: SSD concatenates the per-layer predictions and anchors,
        # whose value ranges differ by orders of magnitude; one INT8 range for all of them lost
        # every detection (all scores under the NMS threshold) in our tests.
        qnet = quantize_net(net, quantized_dtype="auto", calib_mode="naive", calib_data=loader,
                            num_calib_examples=n, ctx=mx.cpu(),
                            exclude_operators=["Concat", "Flatten", *detector.family.int8_float_operators],
                            exclude_layers_match=list(detector.family.int8_float_layers) or None)
    return qnet


# ----------------------------------------------------------------------------- evaluating an export
def is_export(path):
    """Whether ``path`` is an export folder (or a .params inside one): it has export.json."""
    path = Path(path)
    folder = path.parent if path.suffix == ".params" else path
    return (folder / EXPORT_META).is_file()


def evaluate_export(export_dir, dtype="float32", **kwargs):
    """``gluondet eval`` of an export folder: engine.validation.evaluate_run's result (same metric,
    analysis folder ``EXPORT_DIR/eval-<split>``) for the export's own network, the MXNet symbol,
    INT8 graph or ONNX model its export.json names, plus ``format``. ``kwargs`` are evaluate_run's."""

    export_dir = Path(export_dir)
    folder = export_dir.parent if export_dir.suffix == ".params" else export_dir
    meta = read_export_meta(folder)
    own = meta.get("dtype", "float32")
    if dtype not in (None, "float32", own):
        raise GluondetError(f"{folder}: an export computes in the precision it was exported in ({own}); "
                            "leave out --dtype")

    def network(info, ctx_list):
        net, model_file = export_network(folder, meta, ctx_list)
        # the run's network without weights: the family's loader may ask it input sizes
        return net, model_file, build_model(info.model_config, info.classes, pretrained_base=False), own

    kwargs.pop("which", None)  # an export has one set of weights
    result = evaluate_run(folder, network=network, **kwargs)
    result["format"] = export_format(meta)
    return result


# ----------------------------------------------------------------------------- verifying an export
def tolerance_of(meta):
    """(mAP tolerance, box tolerance in pixels or None) of an export, from its export.json."""
    kind = "int8" if export_format(meta) == "int8" else meta.get("dtype", "float32")
    return TOLERANCES.get(kind, TOLERANCES["int8"]), BOX_TOLERANCE if kind == "float32" else None


def score_sections(result):
    """{section: {"map", "per_class"}} of an eval result: "" for a box model, "box" and "mask" for a
    mask model."""
    if "mask" in result:
        return {name: result[name] for name in ("box", "mask") if name in result}
    return {"": result}


def verify_decision(run_result, export_result, tolerance, box_difference=None, box_tolerance=None):
    """Whether an export agrees with its run: every section's mAP within ``tolerance`` (absolute)
    and, when ``box_tolerance`` is given, the largest box difference within it. Returns a dict:
    ``passed``, ``reason`` (one line, on failure), ``sections`` ({section: {"run_map",
    "export_map", "difference", "per_class": {class: [run AP, export AP, difference]}}}),
    ``tolerance``, ``box_difference``, ``box_tolerance``."""
    sections, reasons = {}, []
    runs, exports = score_sections(run_result), score_sections(export_result)
    for name, scores in runs.items():
        other = exports[name]
        run_map, export_map = float(scores["map"] or 0.0), float(other["map"] or 0.0)
        per_class = {}
        for cls, ap in scores["per_class"].items():
            theirs = other["per_class"].get(cls)
            per_class[cls] = [ap, theirs, None if ap is None or theirs is None else theirs - ap]
        sections[name] = {"run_map": run_map, "export_map": export_map, "difference": export_map - run_map,
                          "per_class": per_class}
        if not abs(export_map - run_map) <= tolerance + 1e-9:  # 1e-9: 0.5 - 0.48 is not 0.02 in floats
            what = f"{name} mAP" if name else "mAP"
            reasons.append(f"{what} {export_map:.4f} against the run's {run_map:.4f} "
                           f"(difference {export_map - run_map:+.4f}, tolerance {tolerance})")
    if box_tolerance is not None and box_difference is not None and not box_difference <= box_tolerance:
        reasons.append(f"boxes differ by up to {_pixels(box_difference)} (tolerance {box_tolerance} px)")
    return {"passed": not reasons, "reason": "; ".join(reasons) if reasons else None, "sections": sections,
            "tolerance": tolerance, "box_difference": box_difference, "box_tolerance": box_tolerance}


def _pixels(value):
    return "a missing box" if value is None or math.isinf(value) else f"{value:.4g} px"


def box_difference(run_detections, export_detections, min_score=BOX_MIN_SCORE):
    """The largest difference between two models' detections of the same images (lists of
    predict.Detections): for every box scoring ``min_score`` or more in either model, the nearest
    box of its class in the other (the largest of |coordinate| differences and 100 x |score|
    difference, so a score off by 0.01 counts as a pixel); inf when it has none."""
    worst = 0.0
    for a, b in zip(run_detections, export_detections):
        for one, other in ((a, b), (b, a)):
            for box, cls, score in zip(one.boxes, one.class_ids, one.scores):
                if score < min_score:
                    continue
                same = other.class_ids == cls
                if not same.any():
                    return math.inf
                gaps = np.maximum(np.abs(other.boxes[same] - box).max(axis=1),
                                  100.0 * np.abs(other.scores[same] - score))
                worst = max(worst, float(gaps.min()))
    return worst


def verify_export(run_dir, export_dir, split="val", dataset=None, which="best", ctx="cpu", config_dir=None,
                  progress=True, check_images=CHECK_IMAGES):
    """Evaluate an export and its run on the same split (evaluate_export, evaluate_run), compare
    their boxes and network speed on up to ``check_images`` of its images (compare_on_images),
    decide (verify_decision with the export's tolerance_of) and record it all in the export's
    export.json as ``verified``. Returns verify_decision's dict with ``record`` (what export.json
    got), ``format``, ``run_result`` and ``export_result``."""

    export_dir = Path(export_dir)
    meta = read_export_meta(export_dir)
    common = {"dataset": dataset, "split": split, "ctx": ctx, "config_dir": config_dir, "progress": progress}
    run_result = evaluate_run(run_dir, which=which, **common)
    export_result = evaluate_export(export_dir, **common)
    compared = compare_on_images(run_dir, export_dir, which, split, dataset, config_dir, ctx, check_images)
    tolerance, box_tolerance = tolerance_of(meta)
    decision = verify_decision(run_result, export_result, tolerance, compared["box_difference"], box_tolerance)
    sections = decision["sections"]
    keys = ("run_map", "export_map", "difference")
    if list(sections) == [""]:
        maps = {key: sections[""][key] for key in keys}
    else:  # a mask model: box and mask mAP
        maps = {key: {name: section[key] for name, section in sections.items()} for key in keys}
    record = {
        "split": split, "dataset": run_result["dataset"], "images": run_result["images"],
        "metric": run_result.get("metric"), "run_weights": str(run_result["params"]), **maps,
        "tolerance": tolerance, "box_difference": _finite(compared["box_difference"]),
        "box_tolerance": box_tolerance, **{k: v for k, v in compared.items() if k != "box_difference"},
        "passed": decision["passed"], "reason": decision["reason"],
    }
    meta["verified"] = record
    write_export_meta(export_dir, meta)
    return {**decision, "record": record, "format": export_format(meta), "run_result": run_result,
            "export_result": export_result}


def _finite(value):
    return None if value is None or math.isinf(value) else value


def compare_on_images(run_dir, export_dir, which, split, dataset, config_dir, ctx, count):
    """Both models on up to ``count`` images of the split, on the first device of ``ctx``:
    ``box_difference`` of their detections, and each network's speed (network_speeds)."""

    ctx_list = make_contexts(ctx)[:1]
    run_detector = Detector.load(run_dir, which=which, ctx=ctx_list)
    export_detector = Detector.load(export_dir, ctx=ctx_list)
    images = split_images(run_dir, split, dataset, config_dir, run_detector.classes, count)
    batch_size = run_detector.family.eval_batch_size(ctx_list)
    found = [d.detect(images, thresh=0.0, batch_size=batch_size) for d in (run_detector, export_detector)]
    speeds, rounds = network_speeds([run_detector, export_detector], images, batch_size)
    return {"box_difference": box_difference(*found), "compared_images": len(images), "batch_size": batch_size,
            "run_img_per_s": round(speeds[0], 2), "export_img_per_s": round(speeds[1], 2),
            "speed_rounds": rounds, "threads": os.environ.get("OMP_NUM_THREADS")}


def split_images(run_dir, split, dataset, config_dir, classes, count):
    """Up to ``count`` RGB images of the split, spread over it (not its first: often one scene)."""

    cfg = RunFolder.open(run_dir).dataset_config(dataset, config_dir)
    data = load_dataset(cfg, split, classes=list(classes), skip_bad=True)
    if len(data) == 0:
        raise GluondetError(f"{cfg.name} ({split}): no images to compare the export with its run on")
    picks = np.linspace(0, len(data) - 1, min(count, len(data))).round().astype(int)
    return [data[int(i)][0].asnumpy() for i in picks]


def network_speeds(detectors, images, batch_size, rounds=3):
    """(images per second of each detector's network, rounds): the same preprocessed batches
    through each, in ``rounds`` rounds with the detectors alternated (A B A B), so a change of
    load on the machine falls on both; each leg timed up to ``mx.nd.waitall()`` (onnxruntime runs
    synchronously). Fixed-input families run stacked batches (the last padded: one graph shape);
    the others one image per forward, as they predict."""
    import mxnet as mx

    first = detectors[0]
    prepared = [first.preprocess(img)[0] for img in images]
    if first.family.fixed_input and not first.family.per_image_forward:
        batches = []
        for start in range(0, len(prepared), batch_size):
            chunk = np.stack(prepared[start:start + batch_size])
            pad = np.zeros((batch_size - len(chunk),) + chunk.shape[1:], np.float32)
            batches.append(np.concatenate([chunk, pad]))
    else:
        batches = [x[None] for x in prepared]
    for detector in detectors:
        detector.forward(batches[0])  # warm-up: graphs built and memory allocated before any clock
    seconds = [0.0] * len(detectors)
    for _ in range(rounds):
        for i, detector in enumerate(detectors):
            mx.nd.waitall()
            start = time.perf_counter()
            for batch in batches:
                detector.forward(batch)
            mx.nd.waitall()
            seconds[i] += time.perf_counter() - start
    return [rounds * len(images) / s for s in seconds], rounds


def format_verification(outcome, run_dir, export_dir):
    """The printed comparison: AP per class of the run and the export and their difference, the
    boxes, the speed of both and the verdict."""
    record = outcome["record"]
    lines = [f"{export_dir} ({outcome['format']}) against {run_dir} on {record['dataset']} "
             f"({record['split']}, {record['images']} images, {record['metric']}):"]
    for name, section in outcome["sections"].items():
        width = max([text_width(c) for c in section["per_class"]] + [len("class")])  # 安全帽 takes 6 columns
        rows = [("class", "run", "export", "diff")]
        rows += [(cls, _cell(ours), _cell(theirs), _cell(diff, "%+.4f"))
                 for cls, (ours, theirs, diff) in section["per_class"].items()]
        rows.append(("mAP", _cell(section["run_map"]), _cell(section["export_map"]),
                     _cell(section["difference"], "%+.4f")))
        table = [f"{ljust(a, width)}  {b:>7}  {c:>7}  {d:>8}" for a, b, c, d in rows]
        rule = "-" * (width + 28)
        lines += ([f"{name} AP:"] if name else []) + [table[0], rule, *table[1:-1], rule, table[-1]]
    if record["box_tolerance"] is not None:
        lines.append(f"boxes: differ by up to {_pixels(outcome['box_difference'])} on {record['compared_images']} "
                     f"images (detections scoring {BOX_MIN_SCORE} or more; tolerance {record['box_tolerance']} px)")
    lines.append(f"speed: run {record['run_img_per_s']:.1f} img/s, export {record['export_img_per_s']:.1f} img/s "
                 f"(network only, batches of {record['batch_size']}, {record['compared_images']} images x "
                 f"{record['speed_rounds']} alternated rounds, OMP_NUM_THREADS={record['threads'] or 'unset'})")
    if outcome["passed"]:
        lines.append(f"verified: within the {outcome['format']} export's tolerance (|mAP difference| <= "
                     f"{outcome['tolerance']}); recorded in {Path(export_dir) / EXPORT_META}")
    return "\n".join(lines)


def _cell(value, fmt="%.4f"):
    return "-" if value is None else fmt % value
