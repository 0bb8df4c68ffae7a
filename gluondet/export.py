"""Exporting a trained run as a deployable model folder: MXNet symbol + params, ONNX, or INT8.

An export folder holds ``model-symbol.json`` + ``model-0000.params`` (what MXNet's
``SymbolBlock.imports`` and model servers load), ``classes.txt``, the run's ``config.yaml`` and
``export.json`` (family, input size, normalisation, classes, source), which ``Detector.load``
reads; ``export.json`` is written last, so a folder that has it is complete. ``--format onnx``
adds ``model.onnx``; ``--int8`` writes a graph quantized with MXNet's oneDNN backend, calibrated
on images of the run's validation split.
"""
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from . import __version__
from .constants import EXPORT_FORMATS
from .errors import GluondetError
from .fileio import atomic_write_text
from .image import read_image
from .predict import EXPORT_META, EXPORT_PREFIX, Detector, list_images
from .run_folder import CLASSES_FILE, CONFIG_FILE

FORMATS = EXPORT_FORMATS


def export_run(run_dir, out_dir, fmt="mxnet", which="best", int8=False, calib_images=32,
               calib_source=None, config_dir=None, log=print, ctx="cpu", dtype="float32"):
    """Export ``run_dir`` into ``out_dir``; returns the export folder. See the module docstring.

    ``ctx`` (a --ctx spec, one device or several) is where the run's network is loaded; INT8
    calibration itself runs on the CPU, where the oneDNN INT8 graph runs (see quantize_detector).
    ``dtype`` bfloat16 writes the graph with MXNet's AMP casts (float32 weights, bf16 convolutions):
    an MXNet symbol export for CPUs with bf16 instructions, not combinable with ONNX or INT8.
    """
    from .runtime import make_contexts

    if fmt not in FORMATS:
        raise GluondetError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    if dtype != "float32" and (int8 or fmt != "mxnet"):
        raise GluondetError(f"--dtype {dtype} exports the MXNet format in float32 + {dtype}; "
                            "it does not combine with --int8 or --format onnx")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.resolve() == run_dir.resolve():
        raise GluondetError(f"--out {out_dir}: choose a folder other than the run folder itself")
    if fmt == "onnx":
        require_onnx()  # before anything is written: never a half-filled export folder
    if int8:  # before the network is even loaded: nothing said of work that cannot be done
        from .families import get_family
        from .run_folder import RunFolder

        get_family(RunFolder.open(run_dir).family).check_int8()
    detector = Detector.load(run_dir, which=which, ctx=make_contexts(ctx))
    detector.set_dtype(dtype)
    if int8:
        calib = calibration_images(detector, run_dir, calib_images, calib_source, config_dir)
        log(f"calibrating INT8 ranges on {len(calib)} images ...")
        net = quantize_detector(detector, calib)
    else:
        net = detector.inference_net
    write_mxnet_export(net, detector, run_dir, out_dir, which=which, quantized=int8)
    log(f"wrote {out_dir / (EXPORT_PREFIX + '-symbol.json')} and {EXPORT_PREFIX}-0000.params")
    if fmt == "onnx":
        onnx_path = write_onnx(out_dir, detector, log=log)
        log(f"wrote {onnx_path}")
    return out_dir


def _example_input(detector, ctx=None):
    import mxnet as mx

    shape = detector.family.example_shape(detector.info.data_shape, detector.info.short, detector.info.max_size)
    return mx.nd.zeros(shape, ctx=ctx or detector.ctx)


def write_mxnet_export(net, detector, run_dir, out_dir, which="best", quantized=False):
    """net.export into ``out_dir`` with classes, config and export.json beside it."""
    import mxnet as mx

    out_dir.mkdir(parents=True, exist_ok=True)
    net.hybridize(static_alloc=detector.family.fixed_input, static_shape=detector.family.fixed_input)
    # builds the cached graph that export() writes; an INT8 network lives on the CPU
    net(_example_input(detector, ctx=mx.cpu() if quantized else None))
    # Export into a temporary folder beside the target, then move files in: never half a model.
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # MXNet drops AMP's casts from exports by default: keep those a --dtype export is made of
            net.export(os.path.join(tmp, EXPORT_PREFIX), epoch=0, remove_amp_cast=detector.dtype == "float32")
        (out_dir / EXPORT_META).unlink(missing_ok=True)  # the folder is incomplete until the end
        for name in (f"{EXPORT_PREFIX}-symbol.json", f"{EXPORT_PREFIX}-0000.params"):
            os.replace(os.path.join(tmp, name), out_dir / name)
    for name in (CONFIG_FILE, CLASSES_FILE):  # the run's own description travels with the export
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, out_dir / name)
    info = detector.info
    meta = {
        "format": "mxnet",
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
        "quantized": bool(quantized),
        "dtype": detector.dtype,
        "outputs": ["class_ids (B, K, 1), -1 = none", "scores (B, K, 1)",
                    "boxes (B, K, 4) xmin, ymin, xmax, ymax in input pixels"]
        + (["masks (B, K, M, M) per-box mask probabilities, to paste into the boxes"]
           if detector.family.masks else []),
        "source_run": str(run_dir.resolve()),
        "source_weights": str(which),
        "gluondet_version": __version__,
    }
    atomic_write_text(out_dir / EXPORT_META, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return out_dir


# ----------------------------------------------------------------------------- ONNX
def write_onnx(out_dir, detector, log=print):
    """Convert the symbol export in ``out_dir`` to ``model.onnx`` with MXNet's mx2onnx."""
    require_onnx()
    import mxnet as mx

    symbol = out_dir / f"{EXPORT_PREFIX}-symbol.json"
    params = out_dir / f"{EXPORT_PREFIX}-0000.params"
    ops = symbol_operators(symbol)
    unsupported = [op for op in sorted(ops) if op not in onnx_supported_operators()]
    if unsupported:
        raise GluondetError(
            f"ONNX export: MXNet's ONNX exporter has no conversion for operator "
            f"'{unsupported[0]}'" + (f" (nor {', '.join(unsupported[1:])})" if unsupported[1:] else "")
            + f", used by this {detector.family.name} network; the MXNet export in {out_dir} works")
    x = _example_input(detector)
    dynamic = [detector.family.onnx_dynamic_shape(x.shape)]
    path = out_dir / "model.onnx"
    logging.disable(logging.WARNING)  # mx2onnx's own notices; the one that matters is said below
    try:
        mx.onnx.export_model(str(symbol), str(params), in_shapes=[x.shape], in_types=[np.float32],
                             onnx_file_path=str(path), dynamic=True, dynamic_input_shapes=dynamic)
    except (AttributeError, NotImplementedError, ValueError) as e:
        # the exporter's limits ("No conversion function registered for op type X yet.", an
        # attribute it cannot express): not fixable here, so say it and point at the MXNet export
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GluondetError(f"ONNX export: MXNet's exporter failed ({first}); "
                            f"the MXNet export in {out_dir} works") from None
    finally:
        logging.disable(logging.NOTSET)
    if "_contrib_box_nms" in ops:
        log("note: in the ONNX model, non-maximum suppression ignores classes (ONNX's operator has "
            "no class id), so overlapping boxes of different classes can suppress each other")
    return path


def require_onnx():
    """A GluondetError unless the onnx package (which mx2onnx needs) is installed."""
    import importlib.util

    if importlib.util.find_spec("onnx") is None:
        raise GluondetError("ONNX export needs the onnx package: pip install 'gluondet[onnx]'")


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
    from .data import load_dataset
    from .run_folder import RunFolder

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
                            exclude_operators=["Concat", "Flatten", *detector.family.int8_float_operators])
    return qnet
