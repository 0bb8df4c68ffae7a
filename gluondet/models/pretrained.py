"""Whole detectors as a start (``--init-from``): a GluonCV zoo detector or another run's weights in
the network the run's model config describes, its class-specific layers reset to the dataset's
classes, keeping the weights of the names both share."""
import tempfile
from pathlib import Path

from ..errors import GluondetError
from ..families import family_of
from ..progress import say
from . import build_model, initialize_missing
from .store import DETECTOR_ALTERNATIVES, check_weight_file, model_store
from .weights import load_keeping_own_anchors


def reset_classes(net, classes):
    """Give a whole detector the dataset's classes, keeping the weights of the names both share."""
    old = list(getattr(net, "classes", []))
    if old == list(classes):
        return net, list(classes)
    shared = [c for c in classes if c in old]
    net.reset_class(list(classes), reuse_weights=shared or None)
    return net, shared


def init_from(spec, model_cfg, classes, source_classes=None):
    """A network for ``classes`` starting from a whole trained detector (transfer learning).

    ``spec`` is a GluonCV zoo name (``ssd_512_vgg16_atrous_voc``, downloaded through the model
    store), or a ``.params`` file with the classes it was trained for (``source_classes``, which
    the caller reads from its run folder; None: these very ``classes``). Either way the network is
    the one ``model_cfg`` describes, at its data shape (anchors made for that size: a source
    trained at another keeps its weights), with the source's weights; then the class predictors are
    reset to ``classes``, keeping the weights of the names both lists share.
    """
    path = Path(str(spec)).expanduser()
    if path.suffix == ".params" or path.exists():
        path = check_weight_file(path, flag="--init-from")
        net = _model_with_weights(model_cfg, list(source_classes or classes), path, f"--init-from {path}")
    else:
        net = _model_with_zoo_weights(str(spec), model_cfg)
    net, shared = reset_classes(net, classes)
    initialize_missing(net)
    say(f"--init-from {spec}: reusing the weights of {len(shared)} shared class(es)"
               + (f": {', '.join(shared)}" if shared else ""))
    return net


def _model_with_weights(model_cfg, classes, path, source):
    """The network ``model_cfg`` describes for ``classes``, with the weights in ``path``."""
    import mxnet as mx

    net = build_model(model_cfg, classes, pretrained_base=False)
    try:
        # a trained Faster R-CNN also saved its training target generator's constants
        load_keeping_own_anchors(net, path, ignore_extra=family_of(model_cfg).ignore_extra_weights)
    except (AssertionError, mx.base.MXNetError, ValueError) as e:  # another network's weights
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        first = first.replace(str(path), path.name)[:160]  # a zoo detector's file is a temporary copy
        raise GluondetError(f"{source}: does not fit model '{model_cfg.get('name')}' ({first})") from None
    return net


def _model_with_zoo_weights(spec, model_cfg):
    """The network ``model_cfg`` describes, with the weights and classes of GluonCV's zoo detector
    ``spec`` (fetched through the model store): a zoo network is built for the zoo's input size,
    this one for the run's, and it is what eval, detect, export and --resume rebuild from the run's
    config. A zoo detector of another architecture (faster_rcnn_resnet50_v1b_voc has 15 anchors per
    position, GluonCV's custom Faster R-CNN 9) is refused in one line."""
    from gluoncv.model_zoo import get_model
    from gluoncv.model_zoo.model_zoo import _models

    if spec not in _models:
        raise GluondetError(f"--init-from {spec}: neither a .params file nor a GluonCV model-zoo name "
                            f"(for example ssd_512_vgg16_atrous_voc)")
    with model_store(what="pretrained detector", alternatives=DETECTOR_ALTERNATIVES):
        zoo = get_model(spec, pretrained=True)
    with tempfile.TemporaryDirectory(prefix="gluondet-init-from-") as folder:
        weights = Path(folder) / f"{spec}.params"
        zoo.save_parameters(str(weights))
        classes = list(zoo.classes)
        del zoo
        return _model_with_weights(model_cfg, classes, weights, f"--init-from {spec} (GluonCV's detector)")
