"""Datasets: VOC and COCO readers, the check that guards them, split, stats and conversion.

``load_dataset(cfg, split)`` is the one entry point the rest of gluondet uses: it reads the
annotations (through the parsed-index cache), checks them, and returns a DetectionDataset, or
refuses with the check's report. ``READERS`` maps a config's ``format`` to its reader.
"""
from ..errors import GluondetError
from ..progress import say
from .base import DetectionDataset, Problem
from .check import CheckResult, check_dataset, format_report
from .demo import ensure_dataset
from .masks import InstanceDataset
from .readers import READERS

REPORT_LINES = 30  # lines of the check report shown when load_dataset refuses


def load_dataset(cfg, split, classes=None, skip_bad=False, masks=False):
    """A checked DetectionDataset for a DatasetConfig and a role (train/val/test) or split spec.

    ``classes`` overrides the config's (e.g. a trained run's classes, to evaluate on new data);
    with neither, classes are discovered from every annotation of the dataset (sorted), so train
    and val agree. Errors found by the check raise GluondetError with the report, unless
    ``skip_bad``: then the images with errors are left out and one line on stderr says how many.
    Warnings (e.g. images with no objects) are kept on ``ds.problems``. ``masks``: an
    InstanceDataset, whose items carry each object's mask (every object must have one).
    """
    result = check_dataset(cfg, split, classes)
    errors = result.errors
    what = f"dataset {cfg.name} ({split or 'all'})"
    if errors and (not skip_bad or result.blocking):
        report = format_report(result.blocking or result.problems, limit=REPORT_LINES)
        hint = "" if result.blocking else "\n(fix them, or pass --skip-bad to leave those images out)"
        raise GluondetError(f"{what} has errors:\n{report}{hint}")
    entries = result.good_entries()
    skipped = len(result.entries) - len(entries)
    if errors:
        say(f"gluondet: {what}: left out {skipped} of {len(result.entries)} images with "
            f"errors ({len(errors)} problems; see: gluondet data check)")
    if not entries:
        raise GluondetError(f"{what}: no usable images")
    dataset_class = InstanceDataset if masks else DetectionDataset
    return dataset_class.from_entries(entries, result.classes, name=cfg.name, problems=result.problems,
                                      skipped=skipped, supercategories=result.supercategories)


__all__ = ["READERS", "load_dataset", "check_dataset", "CheckResult", "DetectionDataset", "Problem",
           "format_report", "ensure_dataset", "GluondetError"]
