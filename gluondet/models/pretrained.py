"""Whole detectors as a start (``--init-from``): a GluonCV zoo detector or another run's weights,
its class-specific layers reset to the dataset's classes, keeping the weights of the names both
share."""
from pathlib import Path

from ..errors import GluondetError
from ..families import family_of
from ..progress import say
from . import build_model, initialize_missing
from .rcnn_fpn import use_zeroed_roi_pooling
from .store import DETECTOR_ALTERNATIVES, check_weight_file, model_store


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
    the caller reads from its run folder; None: these very ``classes``). The class predictors are
    reset to ``classes``, keeping the weights of the names both lists share.
    """
    import mxnet as mx

    path = Path(str(spec)).expanduser()
    if path.suffix == ".params" or path.exists():
        path = check_weight_file(path, flag="--init-from")
        net = build_model(model_cfg, list(source_classes or classes), pretrained_base=False)
        try:
            # a trained Faster R-CNN also saved its training target generator's constants
            net.load_parameters(str(path), ignore_extra=family_of(model_cfg).ignore_extra_weights)
        except (AssertionError, mx.base.MXNetError, ValueError) as e:  # another network's weights
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise GluondetError(f"--init-from {path}: does not fit model '{model_cfg.get('name')}' ({first})") from None
        net, shared = reset_classes(net, classes)
    else:
        from gluoncv.model_zoo import get_model
        from gluoncv.model_zoo.model_zoo import _models

        if str(spec) not in _models:
            raise GluondetError(f"--init-from {spec}: neither a .params file nor a GluonCV model-zoo name "
                                f"(for example ssd_512_vgg16_atrous_voc)")

        with model_store(what="pretrained detector", alternatives=DETECTOR_ALTERNATIVES):
            net = use_zeroed_roi_pooling(get_model(str(spec), pretrained=True))
        net, shared = reset_classes(net, classes)
    initialize_missing(net)
    say(f"--init-from {spec}: reusing the weights of {len(shared)} shared class(es)"
               + (f": {', '.join(shared)}" if shared else ""))
    return net
