"""Dataset check: every problem in the annotations, one line each, without decoding images.

Problems come from three places: the reader (unparseable or hostile XML, missing or unreadable
images, split files naming ids with no annotation, duplicate ids, empty files), the per-image
checks here (size in the annotation vs the image header, boxes outside the image, zero-area or
inverted boxes, unknown classes, images with no objects), and the class list as a whole (names
that differ only by case). Errors stop training; warnings do not. Image sizes are read as
gluondet.image's EXIF orientation policy reads the pixels, and a photo whose orientation and
annotation disagree gets a warning saying which reading was chosen.

Boxes may poke out of the image by up to ``BOX_TOLERANCE`` pixels (rounding in exporters, and
COCO's float boxes); such boxes are clipped to the image when the dataset is built.
"""
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..config import refuse_unknown_keys
from .base import Entry, Problem, error, warning
from .cache import paused_gc
from .demo import ensure_dataset
from .integrity import pixel_problems
from .masks import mask_problems
from .readers import READERS

BOX_TOLERANCE = 1.0


@dataclass
class CheckResult:
    """What check_dataset found: the classes in force, the split's entries, and every problem."""

    classes: List[str]
    entries: List[Entry]
    problems: List[Problem]
    bad: set = field(default_factory=set)  # indices into entries of images with errors
    blocking: List[Problem] = field(default_factory=list)  # errors skip_bad cannot leave out
    supercategories: Optional[Dict[str, str]] = None  # {class: group} of the classes in force

    @property
    def errors(self):
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self):
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self):
        return not self.errors

    def good_entries(self):
        return [e for i, e in enumerate(self.entries) if i not in self.bad]


def check_dataset(cfg, split=None, classes=None, full_decode=False, progress=False):
    """Check a dataset (a DatasetConfig) for a role/split spec, or everything when ``split`` is None.

    ``classes`` overrides the config's classes (e.g. a trained run's). Reads annotation files and
    image headers through the parsed-index cache, so a second check costs a fraction of the first;
    image files are checked whole (integrity.py: cut or corrupt files; ``full_decode``: every
    pixel of every image), in parallel and cached too.
    """
    ensure_dataset(cfg)
    with paused_gc():  # linear time in the number of files (see paused_gc)
        index = READERS[cfg.format](cfg, split)
        add_pixel_problems(index.entries, cfg.root, full_decode, progress)
        declared = list(classes) if classes is not None else (cfg.classes or index.file_classes)
        where = str(cfg.source or cfg.root)
        result = check_index(index, declared, where)
    groups = cfg.supercategories or index.file_supercategories or {}
    unknown = sorted(set(groups) - set(result.classes)) if cfg.supercategories else []
    if unknown:  # the YAML named classes without listing them: checked against the discovered ones
        refuse_unknown_keys({k: None for k in unknown}, result.classes, f"{where}: supercategories")
    result.supercategories = {c: groups[c] for c in result.classes if c in groups} or None
    return result


def add_pixel_problems(entries, root, full=False, progress=False):
    """Add an error to each entry whose image file is cut or corrupt (images whose header was read)."""

    readable = [e for e in entries if e.image_path and e.header_size]
    found = pixel_problems([e.image_path for e in readable], root, full, progress)
    for e in readable:
        if e.image_path in found:
            e.problems.append(error(e.image_path, "corrupt-image", found[e.image_path]))


def check_index(index, declared_classes=None, where="classes"):
    """Check a reader's DatasetIndex against the declared classes (None: discover them)."""
    problems = list(index.problems)
    blocking = []
    renamed = {}  # minority case variant -> the name it clashes with
    if declared_classes is None:
        classes, renamed = discover_classes(index.all_entries)
    else:
        classes = list(declared_classes)
        for group in _case_groups(classes):
            p = error(where, "class-case-clash",
                      f"class names {', '.join(repr(n) for n in group)} differ only by case")
            problems.append(p)
            blocking.append(p)
    known = set(classes)
    folded = {c.casefold(): c for c in classes}
    bad = set()
    for i, entry in enumerate(index.entries):
        found = list(entry.problems) + entry_problems(entry, known, folded, renamed) + mask_problems(entry, classes)
        problems.extend(found)
        if any(p.severity == "error" for p in found):
            bad.add(i)
    return CheckResult(classes=classes, entries=index.entries, problems=problems, bad=bad, blocking=blocking)


def discover_classes(entries):
    """Sorted class names used in ``entries``, and the names left out for clashing by case.

    Of names that differ only by case, the most used one (then the first in sort order) is kept;
    each other variant maps to it in the returned dict, and check reports the files using it.
    """
    counts = Counter(name for e in entries for name, *_ in e.objects)
    renamed = {}
    for group in _case_groups(counts):
        keep = sorted(group, key=lambda n: (-counts[n], n))[0]
        renamed.update({n: keep for n in group if n != keep})
    return sorted(n for n in counts if n not in renamed), renamed


def _case_groups(names):
    by_fold = {}
    for n in names:
        by_fold.setdefault(n.casefold(), []).append(n)
    return [sorted(g) for g in by_fold.values() if len(g) > 1]


def entry_problems(entry, known, folded, renamed):
    """Problems of one image: size disagreement, bad boxes, unknown classes, no objects."""
    file = entry.ann_file
    problems = []
    if entry.declared_size and entry.header_size and entry.declared_size != entry.header_size:
        (dw, dh), (iw, ih) = entry.declared_size, entry.header_size
        turned = (f" as displayed (EXIF orientation {entry.orientation}; stored {ih}x{iw})"
                  if entry.apply_orientation and entry.orientation in (5, 6, 7, 8) else "")
        problems.append(error(file, "size-mismatch", f"the annotation says {dw}x{dh} but the image "
                                                     f"{_name(entry.image_path)} is {iw}x{ih}{turned}"))
    size = entry.size
    if not entry.objects and not any(p.severity == "error" for p in entry.problems):
        problems.append(warning(file, "no-objects", "used as a negative (background only) image"))
    for k, (name, x0, y0, x1, y1, _flag) in enumerate(entry.objects):
        if name in known and x0 < x1 and y0 < y1 and size and min(x0, y0) >= 0 \
                and x1 <= size[0] - entry.max_offset and y1 <= size[1] - entry.max_offset:
            continue  # the common case, decided before any message is formatted
        what = f"object {k + 1} ({name}) {_raw(entry, k)}"
        if name in renamed:
            problems.append(error(file, "class-case-clash", f"{what}: class '{name}' differs only by case "
                                                            f"from '{renamed[name]}', used elsewhere"))
        elif name not in known:
            hint = folded.get(name.casefold())
            hint = f"; did you mean '{hint}'? names are matched exactly, case included" if hint else ""
            problems.append(error(file, "unknown-class", f"{what}: '{name}' is not one of the classes "
                                                         f"({_list(known)}){hint}"))
        if x1 < x0 or y1 < y0:
            problems.append(error(file, "inverted-box", f"{what}: max is smaller than min"))
            continue
        if size:
            w, h = size[0] - entry.max_offset, size[1] - entry.max_offset
            if min(x0, y0) < -BOX_TOLERANCE or x1 > w + BOX_TOLERANCE or y1 > h + BOX_TOLERANCE:
                problems.append(error(file, "box-outside-image",
                                      f"{what}: extends outside the {size[0]}x{size[1]} image"))
                continue
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            problems.append(error(file, "zero-area-box", f"{what}: has zero width or height"
                                  + (" (VOC coordinates are 1-based and inclusive)" if entry.max_offset else "")))
    return problems


def _raw(entry, k):
    if k >= len(entry.raw_boxes):
        return ""
    values = ", ".join(f"{v:g}" for v in entry.raw_boxes[k])
    return f"[{values}]" + (" (x, y, w, h)" if entry.max_offset == 0 else "")


def _name(path):
    return str(path).rsplit("/", 1)[-1] if path else "?"


def _list(names, limit=8):
    names = sorted(names)
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


WARNINGS_SHOWN = 3  # lines of one repeated warning before the rest are counted (data check --verbose: all)


def _grouped(problems):
    """``problems`` with each warning code's lines past the first WARNINGS_SHOWN replaced by one
    count line (a str), in the place of the first line left out."""
    counts = Counter(p.problem for p in problems if p.severity == "warning")
    seen, out = Counter(), []
    for p in problems:
        if p.severity != "warning" or counts[p.problem] <= WARNINGS_SHOWN + 1:
            out.append(p)
            continue
        seen[p.problem] += 1
        if seen[p.problem] <= WARNINGS_SHOWN:
            out.append(p)
        elif seen[p.problem] == WARNINGS_SHOWN + 1:
            out.append(f"... and {counts[p.problem] - WARNINGS_SHOWN} more '{p.problem}' warnings "
                       "(--verbose lists them all)")
    return out


def format_report(problems, limit: Optional[int] = None, verbose=True):
    """Problems one per line (``limit`` lines at most, then a count), and a summary line.

    Without ``verbose``, a warning that repeats (the demo's 110 images without objects) shows its
    first ``WARNINGS_SHOWN`` lines and then one line counting the rest; every error is listed."""
    shown = problems if verbose else _grouped(problems)
    lines = [str(p) for p in (shown[:limit] if limit else shown)]
    if limit and len(shown) > limit:
        lines.append(f"... and {len(shown) - limit} more (see: gluondet data check)")
    errors = sum(p.severity == "error" for p in problems)
    files = len({p.file for p in problems if p.severity == "error"})
    lines.append(f"{errors} error(s) in {files} file(s), {len(problems) - errors} warning(s)")
    return "\n".join(lines)
