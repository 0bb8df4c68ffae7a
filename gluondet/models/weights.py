"""A trained network back from its weights: a run's network rebuilt for its classes, and weight files
that do not fit it diagnosed (damaged, another class count, another network) in one line."""
import tempfile
from pathlib import Path

from ..families import get_family
from ..run_layout import CLASSES_FILE, CONFIG_FILE, RunFolderError
from . import build_model


def load_run_network(run, which="best", ctx=None):
    """``(net, weights_path)`` of ``run`` (a RunFolder): its network rebuilt for its classes, with the
    weights ``which`` names (best, last, an epoch or a .params path), on ``ctx`` (the CPU if None)."""
    import mxnet as mx

    params = run.weights(which)
    net = build_model(run.model_config, run.classes, pretrained_base=False)
    load_weights(net, params, get_family(run.family).ignore_extra_weights, ctx=ctx or mx.cpu(), run=run)
    return net, params


def load_weights(net, params, ignore_extra=False, ctx=None, run=None):
    """Load ``params`` into ``net`` on ``ctx`` (a Context or a list); a file that does not fit is
    diagnosed: damaged or truncated, weights for another class count (naming classes.txt), or for
    another network.

    Faster (and Mask) R-CNN's saved weights also hold its training target generator's constants, which a
    freshly built network creates only when it first trains: those extras are ignored.
    """
    import mxnet as mx

    try:  # the network was initialized on the CPU: load there, then place on every device
        net.load_parameters(str(params), ctx=mx.cpu(), ignore_extra=ignore_extra)
    except (AssertionError, mx.base.MXNetError, ValueError) as e:
        raise _weights_problem(net, Path(params), e, run) from None
    if ctx is not None:
        net.collect_params().reset_ctx(ctx)


def load_keeping_own_anchors(net, params, ignore_extra=False):
    """Load ``params`` into ``net`` (on the CPU) where the file's anchors have another shape than the
    network's: those the network keeps. Anchors are constants made from the input size a network is
    built for (the grid GluonCV cuts them from grows with it: ``families.rcnn_data``), not learned,
    so weights trained at another size load into a network built for this one. Anything else that
    does not fit raises as ``load_parameters`` does."""
    import mxnet as mx
    from mxnet.gluon.parameter import Constant

    saved = mx.nd.load(str(params))
    own = net._collect_params_with_prefix()
    other_grid = {name for name, param in own.items() if isinstance(param, Constant) and name in saved
                  and tuple(saved[name].shape) != tuple(param.shape)}
    if not other_grid:
        net.load_parameters(str(params), ctx=mx.cpu(), ignore_extra=ignore_extra)
        return
    missing = [name for name in own if name not in saved]
    if missing:
        raise AssertionError(f"Parameter '{missing[0]}' is missing in file '{params}'")
    with tempfile.TemporaryDirectory(prefix="gluondet-weights-") as folder:
        adjusted = Path(folder) / "weights.params"
        mx.nd.save(str(adjusted), {name: array for name, array in saved.items() if name not in other_grid})
        net.load_parameters(str(adjusted), ctx=mx.cpu(), allow_missing=True, ignore_extra=ignore_extra)


def _weights_problem(net, params, error, run):
    import mxnet as mx

    try:
        saved = mx.nd.load(str(params))
    except mx.base.MXNetError:
        return RunFolderError(f"{params}: damaged or truncated (not a complete MXNet weights file); "
                              f"use another checkpoint of the run (--which last / best / N)")
    own = {name: p.shape for name, p in net._collect_params_with_prefix().items()}
    differ = [n for n, shape in own.items() if n in saved and tuple(saved[n].shape) != tuple(shape)]
    if differ and all("class_predictor" in n or "box_predictor" in n for n in differ):
        where = run.path / CLASSES_FILE if run else "the class list"
        return RunFolderError(f"{where}: lists {len(run.classes) if run else '?'} classes, but {params} "
                              f"was trained for another number of classes; the run's classes.txt and "
                              f"weights must come from the same run")
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    where = f" in {run.path / CONFIG_FILE}" if run else ""
    return RunFolderError(f"{params}: weights of another network, not the model{where} ({first})")
