"""Detection networks by name: one table from gluondet model names to builders.

Each builder is ``builder(classes, pretrained_base=True|False, **kwargs) -> HybridBlock``. The zoo
entries wrap GluonCV's ``*_custom`` constructors, which build a network for any list of classes; the
model YAML (configs/models/NAME.yaml) names the builder and the family (gluondet.families), which
decides how the network is built around the builder, and its transforms, losses and validation.
"""
import functools
from pathlib import Path

from ..errors import GluondetError
from ..families import family_of
from . import rcnn_fpn
from .store import check_weight_file, model_store


def _zoo(zoo_name, classes, pretrained_base=True, **kwargs):
    from gluoncv.model_zoo import get_model

    return get_model(zoo_name, classes=list(classes), pretrained_base=pretrained_base, **kwargs)


def _rcnn_fpn(kind, base_network, classes, pretrained_base=True, **kwargs):
    builder = rcnn_fpn.mask_rcnn_fpn if kind == "mask" else rcnn_fpn.faster_rcnn_fpn
    return builder(base_network, classes, pretrained_base=pretrained_base, **kwargs)


def _center_net(base, classes, pretrained_base=True, **kwargs):
    from .center_net import center_net

    return center_net(base, list(classes), pretrained_base=pretrained_base, **kwargs)


def _tiny_yolo3(classes, pretrained_base=False, **kwargs):
    from .tiny_yolo3 import tiny_yolo3

    # no pretrained weights for the tiny backbone, as for the tiny SSD
    return tiny_yolo3(list(classes), pretrained_base=False, **kwargs)


def _tiny_ssd(classes, pretrained_base=False, **kwargs):
    from .tiny_ssd import tiny_ssd

    # The tiny backbone has no pretrained weights: "pretrained base on by default" has nothing to load.
    return tiny_ssd(list(classes), pretrained_base=False, **kwargs)


MODELS = {
    "ssd_512_vgg16_atrous": functools.partial(_zoo, "ssd_512_vgg16_atrous_custom"),
    "ssd_300_vgg16_atrous": functools.partial(_zoo, "ssd_300_vgg16_atrous_custom"),
    "ssd_512_mobilenet1.0": functools.partial(_zoo, "ssd_512_mobilenet1.0_custom"),
    "ssd_512_resnet50_v1": functools.partial(_zoo, "ssd_512_resnet50_v1_custom"),
    "faster_rcnn_resnet50_v1b": functools.partial(_zoo, "faster_rcnn_resnet50_v1b_custom"),
    "faster_rcnn_resnet101_v1d": functools.partial(_zoo, "faster_rcnn_resnet101_v1d_custom"),
    "tiny_ssd": _tiny_ssd,
    "faster_rcnn_fpn_resnet50_v1b": functools.partial(_rcnn_fpn, "faster", "resnet50_v1b"),
    "mask_rcnn_fpn_resnet50_v1b": functools.partial(_rcnn_fpn, "mask", "resnet50_v1b"),
    "mask_rcnn_fpn_resnet18_v1b": functools.partial(_rcnn_fpn, "mask", "resnet18_v1b"),
    "yolo3_darknet53": functools.partial(_zoo, "yolo3_darknet53_custom"),
    "yolo3_mobilenet1.0": functools.partial(_zoo, "yolo3_mobilenet1.0_custom"),
    "yolo3_mobilenet0.25": functools.partial(_zoo, "yolo3_mobilenet0.25_custom"),
    "yolo3_tiny": _tiny_yolo3,
    "center_net_resnet18_v1b": functools.partial(_center_net, "resnet18_v1b"),
    "center_net_resnet50_v1b": functools.partial(_center_net, "resnet50_v1b"),
    "center_net_dla34": functools.partial(_center_net, "dla34"),
    "center_net_mobilenetv3_large_duc": functools.partial(_center_net, "mobilenetv3_large_duc"),
    "center_net_tiny": functools.partial(_center_net, "tiny"),
}
# builders whose backbone has no ImageNet weights to load
NO_PRETRAINED_BASE = ("tiny_ssd", "center_net_tiny", "yolo3_tiny")
DEFAULT_MODEL = "ssd_512_vgg16_atrous"


def _builder(model_cfg):
    """(key, builder) for a model config: its name or its ``builder`` in MODELS, else a GluonCV
    zoo name in ``builder``."""
    name, zoo_name = model_cfg.get("name"), model_cfg.get("builder")
    for key in (name, zoo_name):
        if key in MODELS:
            return key, MODELS[key]
    for key, builder in MODELS.items():
        if getattr(builder, "args", None) == (zoo_name,):
            return key, builder
    if zoo_name:
        from gluoncv.model_zoo.model_zoo import _models

        if zoo_name in _models:
            return zoo_name, functools.partial(_zoo, zoo_name)
    raise GluondetError(
        f"model '{name}': no builder '{zoo_name}'; known models: {', '.join(sorted(MODELS))}")


def build_model(model_cfg, classes, pretrained_base=True):
    """Build and initialize the network a model config describes, for ``classes``.

    ``pretrained_base`` is True (GluonCV's model store; offline, a GluondetError names the file to
    place), False (random initialization) or a path to the backbone's ``.params`` file.
    Parameters the backbone does not cover are initialized here (on the CPU).
    """
    if not classes:
        raise GluondetError("no classes: the dataset declares none and none were found in its labels")
    key, builder = _builder(model_cfg)
    kwargs = dict(model_cfg.get("kwargs") or {})
    family = family_of(model_cfg)
    data_shape = model_cfg.get("data_shape")
    if key == "tiny_ssd" and data_shape:  # its anchors are sized for the input
        kwargs.setdefault("data_shape", int(data_shape))
    for name, value in family.builder_kwargs(key, data_shape).items():
        kwargs.setdefault(name, value)
    override = None
    if isinstance(pretrained_base, (str, Path)):
        if key in NO_PRETRAINED_BASE:
            raise GluondetError(f"--pretrained-base {pretrained_base}: model '{key}' has no pretrained "
                                f"backbone to load it into; leave the flag out")
        override = check_weight_file(pretrained_base)
        pretrained_base = True
    with model_store(override):
        net = builder(classes, pretrained_base=bool(pretrained_base), **kwargs)
        net = family.after_build(net, key, lambda **extra: builder(classes, pretrained_base=bool(pretrained_base),
                                                                   **{**kwargs, **extra}))
    initialize_missing(net)
    return net


# Parameters without an initializer of their own (GluonCV's FeatureExpander is a SymbolBlock: its
# BatchNorm and conv parameters come from symbols), by name suffix; everything else is a weight.
SUFFIX_INITIALIZERS = (
    ("gamma", "one"), ("beta", "zero"), ("running_mean", "zero"), ("running_var", "one"),
    ("moving_mean", "zero"), ("moving_var", "one"), ("bias", "zero"),
)


def initializer_for(name, weight_init):
    """The initializer for a parameter called ``name`` that has none of its own: BatchNorm gamma
    and variance 1, beta, mean and biases 0, anything else ``weight_init``."""
    import mxnet as mx

    for suffix, kind in SUFFIX_INITIALIZERS:
        if name.endswith(suffix):
            return mx.init.One() if kind == "one" else mx.init.Zero()
    return weight_init


def initialize_missing(net):
    """Initialize every parameter that has no data yet (GluonCV leaves the heads, and without a
    pretrained base everything, uninitialized).

    Weights get Xavier (magnitude 2) rather than Gluon's default uniform(+-0.07): trained from
    scratch, the uniform start barely learned in a few hundred iterations. A parameter with its own
    initializer keeps it; one without (GluonCV's FeatureExpander layers, made from symbols) gets
    ``initializer_for`` its name, never Xavier on a BatchNorm gamma vector.
    """
    import warnings

    import mxnet as mx

    weight_init = mx.init.Xavier(magnitude=2)
    for param in net.collect_params().values():
        if param._data is None and getattr(param, "_deferred_init", ()) == ():
            init = None if param.init is not None else initializer_for(param.name, weight_init)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                param.initialize(init=init, default_init=weight_init)
    return net
