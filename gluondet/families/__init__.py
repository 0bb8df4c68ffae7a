"""Model families: everything that differs between SSD, Faster R-CNN, Mask R-CNN, YOLOv3 and
CenterNet, one object each (``Family`` in base.py says what the rest of gluondet asks of one).

The engine, eval, detect and export ask ``family_of(model_cfg)`` or ``get_family(name)`` and never
compare family names themselves (``tests/unit/test_families.py`` fails when they do). Adding a
family is one module here, one row in ``_FAMILIES``, its builders in ``gluondet.models.MODELS`` and
its YAMLs in ``configs/models/``.

Importing this package is cheap: a family's module (and MXNet, GluonCV) loads on first use.
"""
import importlib

from ..errors import GluondetError

# name -> (module, class). The order is also the order names are guessed from a builder's name.
_FAMILIES = {
    "faster_rcnn": ("rcnn", "FasterRCNN"),
    "mask_rcnn": ("rcnn", "MaskRCNN"),
    "yolo3": ("yolo3", "YOLOv3"),
    "center_net": ("center_net", "CenterNet"),
    "ssd": ("ssd", "SSD"),
}
FAMILY_NAMES = tuple(_FAMILIES)
_loaded = {}


def get_family(name, options=None):
    """The Family called ``name`` (``options``: the model config's ``options`` mapping, for the
    family's own training switches)."""
    if name not in _FAMILIES:
        raise GluondetError(f"family '{name}' is not one of {', '.join(sorted(FAMILY_NAMES))}")
    if name not in _loaded:
        module, cls = _FAMILIES[name]
        _loaded[name] = getattr(importlib.import_module(f"{__name__}.{module}"), cls)
    return _loaded[name](options)


def family_name(model_cfg):
    """The family of a model config: its ``family``, else guessed from its builder's name (GluonCV's
    zoo names start with the family: ``faster_rcnn_...``, ``yolo3_...``; SSDs have ``ssd`` in them)."""
    family = model_cfg.get("family")
    if family is None:
        name = str(model_cfg.get("builder") or model_cfg.get("name", ""))
        family = next((f for f in FAMILY_NAMES if name.startswith(f)), "ssd" if "ssd" in name else None)
    if family not in _FAMILIES:
        raise GluondetError(
            f"model '{model_cfg.get('name')}': family '{family}' is not one of {', '.join(sorted(FAMILY_NAMES))}")
    return family


def family_of(model_cfg):
    """The Family of a model config, with the config's ``options``."""
    return get_family(family_name(model_cfg), model_cfg.get("options"))
