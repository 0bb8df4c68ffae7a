"""The export folder, ``gluondet export``'s output: the one owner of ``export.json`` (what the folder
holds and how it was made) and of loading its model, an MXNet symbol (float or INT8) or an ONNX
model run by onnxruntime, for detect, eval and serve."""
import json
import os
from pathlib import Path

import numpy as np

from .errors import GluondetError
from .extras import install_line
from .fileio import atomic_write_text
from .precision import choose_dtype

EXPORT_META = "export.json"
EXPORT_PREFIX = "model"  # model-symbol.json, model-0000.params
EXPORT_ONNX = "model.onnx"
EXPORT_KINDS = ("mxnet", "onnx", "int8")  # export.json's format: what the folder's model is


def write_export_meta(out_dir, meta):
    """``out_dir/export.json`` (atomic): the folder is complete once it is there."""
    atomic_write_text(Path(out_dir) / EXPORT_META, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")


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
                                f"{install_line('onnx')}") from None
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
