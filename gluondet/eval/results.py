"""Turning a metric's ``get()`` into gluondet's result dict and a table for the terminal.

The result dict is what ``gluondet eval --json`` writes and validation logs:
``{"metric": "voc", "map": 0.71, "per_class": {"helmet": 0.80, "head": 0.62}}``, plus
``"coco": {"AP": ..., "AP50": ..., ...}`` for the COCO metric. An AP that is undefined (a class with
no ground truth in the evaluated images) is ``None`` there, so the dict is valid JSON.
"""
import math

from ..progress import ljust, text_width


def metric_result(metric):
    """The result dict of a metric with ``class_names`` (gluondet's or GluonCV's VOC metrics, or
    ``COCOMetric``): its names are the classes, then any summary numbers, then 'mAP' last."""
    names, values = metric.get()
    if not isinstance(names, (list, tuple)):
        raise ValueError("metric %r was built without class_names; per-class AP needs them" % names)
    class_names = list(getattr(metric, "class_names", None) or names[:-1])
    num_classes = len(class_names)
    result = {
        "metric": getattr(metric, "key", type(metric).__name__),
        "map": _number(values[-1]),
        "per_class": {name: _number(v) for name, v in zip(class_names, values[:num_classes])},
    }
    extra = dict(zip(names[num_classes:-1], (_number(v) for v in values[num_classes:-1])))
    if extra:
        result[result["metric"]] = extra
    return result


def format_ap_table(result):
    """A per-class AP table with the mean last (and the COCO numbers, if any), as one string."""
    per_class = result["per_class"]
    width = max([text_width(name) for name in per_class] + [len("mAP"), len("class")])
    lines = ["%s  %7s" % (ljust("class", width), "AP"), "-" * (width + 9)]
    for name, ap in per_class.items():
        lines.append("%s  %7s" % (ljust(name, width), _cell(ap)) + ("" if ap is not None else "  (no ground truth)"))
    lines.append("-" * (width + 9))
    lines.append("%s  %7s  (%s)" % (ljust("mAP", width), _cell(result["map"]), result["metric"]))
    extra = {k: v for k, v in result.items() if k not in ("metric", "map", "per_class")}
    for section, numbers in extra.items():
        if isinstance(numbers, dict):
            lines.extend(["", "%s summary:" % section])
            lines.extend("%s  %7s" % (ljust(name, width), _cell(v)) for name, v in numbers.items())
    return "\n".join(lines)


def _number(value):
    value = float(value)
    return None if math.isnan(value) else value


def _cell(value):
    return "-" if value is None else "%.4f" % value
