"""Pascal VOC reader: a VOC folder (or a VOCdevkit of several) to index entries.

Layout: ``Annotations/ID.xml``, ``JPEGImages/ID.jpg`` (or another of gluondet.image.IMAGE_SUFFIXES),
``ImageSets/Main/SPLIT.txt``.
A VOCdevkit holds several such folders (``VOC2007/``, ``VOC2012/`` or ``2007/``, ``2012/``); split
specs then name them: ``2007/trainval+2012/trainval``. A single folder takes a bare ``trainval``.

Reads what LabelImg, labelme's VOC exporter and CVAT write: ``<difficult>`` missing, empty or
present, ``truncated``/``occluded``/``attributes`` ignored, float coordinates, ``<size>`` missing
or 0 (the image header is read instead), ``<filename>`` used when no ``ID.ext`` image exists.
Class names are taken as written (only surrounding whitespace removed): no lower-casing.

Coordinate convention. VOC pixel coordinates are 1-based (the first pixel is 1, xmax is the
last pixel inside the box). Like GluonCV (so VOC07 mAP matches published numbers), gluondet
subtracts 1 from every coordinate. Tools that write 0-based coordinates (labelme, CVAT) may
write 0, which would become -1: values in [0, 1) therefore map to 0 rather than below it
(GluonCV lets them underflow, a known source of NaN losses). A negative coordinate in the file
is reported as a box outside the image. Valid labels satisfy 0 <= xmin < xmax <= W - 1.

XML goes through defusedxml: entity declarations and external references are refused at once.
"""
import math
import os
import re
import stat
from pathlib import Path

from ..errors import GluondetError
from ..image import IMAGE_SUFFIXES, ImageHeader, ImageReadError, choose_orientation, read_header
from ..progress import Progress
from .base import FLAG_DIFFICULT, FLAG_NORMAL, DatasetIndex, Entry, error, warning
from .cache import FileCache, file_signature
from .masks import SEGMENTATION_CLASS_DIR, SEGMENTATION_OBJECT_DIR, attach_voc_masks

SPLIT_DIR = Path("ImageSets") / "Main"
PARSER_VERSION = 1  # bump when parse_voc_xml's output changes, so old caches are not reused
_PARSED_KEYS = {"filename", "size", "objects", "problems"}
_CLASS_SPLIT_LINE = re.compile(r"^(\S+)\s+-?[01]$")  # VOC's per-class files: "000005 -1"


# ----------------------------------------------------------------------------- one XML file
def parse_voc_xml(path):
    """Parse one annotation file into plain data (JSON-safe, cached as is).

    Returns ``{"filename", "size": [w, h] | None, "objects": [[name, xmin, ymin, xmax, ymax,
    difficult]], "problems": [[severity, code, detail]]}`` with coordinates as written in the file.
    A file that cannot be read or parsed gets one problem and nothing else; a bad ``<size>`` or a bad
    object gets a problem and is left out, and the rest of the file is still read.
    """
    problems = []
    out = {"filename": None, "size": None, "objects": [], "problems": problems}
    root = _annotation_root(path, problems)
    if root is None:
        return out
    filename = root.findtext("filename")
    out["filename"] = filename.strip() if filename and filename.strip() else None
    size = root.find("size")
    if size is not None:
        out["size"] = _declared_size(size, problems)
    for k, obj in enumerate(root.findall("object"), 1):
        row = _object_row(k, obj, problems)
        if row is not None:
            out["objects"].append(row)
    return out


def _annotation_root(path, problems):
    """The <annotation> element of the file at ``path``, or None with the reason added to ``problems``."""
    from xml.etree.ElementTree import ParseError

    import defusedxml
    import defusedxml.ElementTree as DET

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return _fail(problems, "unreadable-annotation", f"cannot read ({e.strerror or e})")
    if not data.strip():
        return _fail(problems, "empty-annotation", "the annotation file is empty")
    try:
        root = DET.fromstring(data)
    except defusedxml.DefusedXmlException as e:
        return _fail(problems, "xml-entities", f"refused: the XML uses entity declarations, a DTD or external "
                                               f"references, which annotation tools never write ({type(e).__name__})")
    except ParseError as e:
        return _fail(problems, "unparseable-xml", f"not well-formed XML ({e})")
    if root.tag != "annotation":
        return _fail(problems, "unparseable-xml", f"root element is <{root.tag}>, expected <annotation>")
    return root


def _declared_size(size, problems):
    """[w, h] of a <size> element; None when missing or 0 (some exporters write 0) or bad (a problem)."""
    try:
        w, h = (_number(size.findtext(tag)) for tag in ("width", "height"))
    except ValueError as e:
        return _fail(problems, "bad-value", f"<size>: {e}")
    return [int(round(w)), int(round(h))] if w and h else None


def _object_row(k, obj, problems):
    """``[name, xmin, ymin, xmax, ymax, difficult]`` of the k-th <object>, or None with a problem."""
    name = (obj.findtext("name") or "").strip()
    if not name:
        return _fail(problems, "bad-value", f"object {k} has no <name>")
    box = obj.find("bndbox")
    if box is None:
        return _fail(problems, "bad-box", f"object {k} ({name}) has no <bndbox>")
    try:
        coords = [_number(box.findtext(tag), required=True) for tag in ("xmin", "ymin", "xmax", "ymax")]
    except ValueError as e:
        return _fail(problems, "bad-box", f"object {k} ({name}): {e}")
    try:
        difficult = _flag(obj.findtext("difficult"))
    except ValueError as e:
        return _fail(problems, "bad-value", f"object {k} ({name}): <difficult> {e}")
    return [name] + coords + [difficult]


def _fail(problems, code, detail):
    """Add an error to a parse's ``problems``; returns None, for ``return _fail(...)``."""
    problems.append(["error", code, detail])
    return None


def _number(text, required=False):
    """A coordinate or size as float; None when empty and not required."""
    text = (text or "").strip()
    if not text:
        if required:
            raise ValueError("a coordinate is missing or empty")
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def _flag(text):
    """<difficult>: missing or empty means 0; accepts 0/1, 0.0/1.0, true/false."""
    text = (text or "").strip().lower()
    if text in ("", "0", "0.0", "false", "no"):
        return 0
    if text in ("1", "1.0", "true", "yes"):
        return 1
    raise ValueError(f"is {text!r}, expected 0 or 1")


def voc_to_label_coords(xmin, ymin, xmax, ymax):
    """1-based VOC coordinates to 0-based ones (see the module docstring for the convention)."""

    def shift(v):
        v = v - 1.0
        return 0.0 if -1.0 <= v < 0.0 else v

    return shift(xmin), shift(ymin), shift(xmax), shift(ymax)


# ----------------------------------------------------------------------------- one VOC folder
def is_voc_root(path):
    return (Path(path) / "Annotations").is_dir()


def index_voc_root(voc_root):
    """Every annotation of one VOC folder as ``{image_id: Entry}``, through the parsed-index cache."""
    voc_root = Path(voc_root)
    ann_dir, img_dir = voc_root / "Annotations", voc_root / "JPEGImages"
    try:
        xml_names = sorted(n for n in os.listdir(ann_dir) if n.endswith(".xml"))
    except OSError as e:
        raise GluondetError(f"{ann_dir}: cannot list annotations ({e.strerror or e})") from None
    images_by_stem, image_names = _list_images(img_dir)
    mask_pngs = _list_names(voc_root / SEGMENTATION_OBJECT_DIR)
    class_pngs = _list_names(voc_root / SEGMENTATION_CLASS_DIR) if mask_pngs else set()
    cache = FileCache(voc_root, f"voc-index-v{PARSER_VERSION}")
    entries = {}
    for name in _progress(xml_names, f"indexing {voc_root.name}"):
        ann_file = os.path.join(ann_dir, name)
        stat_result = _file_stat(ann_file)
        if stat_result is None:
            continue  # not a file (a folder named like one), or gone since the listing
        key = "a:" + name
        signature = file_signature(stat_result)
        parsed = cache.get(key, signature)
        if not isinstance(parsed, dict) or parsed.keys() != _PARSED_KEYS:  # a miss, or a hand-edited cache
            parsed = None
        if parsed is None:
            parsed = parse_voc_xml(ann_file)
            cache.put(key, signature, parsed)
        image_id = name[:-4]
        entries[image_id] = _make_entry(image_id, ann_file, parsed, str(img_dir), images_by_stem,
                                        image_names, cache)
        if mask_pngs:
            attach_voc_masks(entries[image_id], voc_root, mask_pngs,
                             lambda path, key: _size_or_reason(image_header(path, key, cache)), class_pngs)
    cache.save()
    return entries


def _list_names(folder):
    try:
        return {e.name for e in os.scandir(folder)}
    except OSError:
        return set()


def _file_stat(path):
    """os.stat of a regular file (symlinks followed); None for anything else or a file gone."""
    try:
        stat_result = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise GluondetError(f"{path}: cannot read ({e.strerror or e})") from None
    return stat_result if stat.S_ISREG(stat_result.st_mode) else None


def _list_images(img_dir):
    """{stem: [file names with an image extension]} and the set of all names in JPEGImages/."""
    by_stem = {}
    try:
        names = os.listdir(img_dir)
    except OSError:
        return by_stem, set()
    for name in names:
        stem, ext = os.path.splitext(name)
        if ext.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(stem, []).append(name)
    for stem, found in by_stem.items():
        found.sort(key=lambda n: (IMAGE_SUFFIXES.index(os.path.splitext(n)[1].lower()), n))
    return by_stem, set(names)


def _make_entry(image_id, ann_file, parsed, img_dir, images_by_stem, image_names, cache):
    # Plain strings, not Paths: this runs once per annotation and pathlib costs show at 10,000.
    problems = [_problem(ann_file, *p) for p in parsed["problems"]]
    declared = tuple(parsed["size"]) if parsed["size"] else None
    candidates = images_by_stem.get(image_id, [])
    xml_name = os.path.basename(parsed["filename"] or "")  # never follow a path out of JPEGImages/
    if not candidates and xml_name in image_names:
        candidates = [xml_name]
    image_path = None
    if not candidates:
        if not problems:  # an unparseable file has no image to miss
            hint = f" or {xml_name}" if xml_name and xml_name != image_id else ""
            problems.append(error(ann_file, "missing-image",
                                  f"no image JPEGImages/{image_id}.{{jpg,png,...}}{hint}"))
    else:
        if len(candidates) > 1:
            problems.append(warning(ann_file, "ambiguous-image",
                                    f"several images for this id ({', '.join(candidates)}); using {candidates[0]}"))
        image_path = os.path.join(img_dir, candidates[0])
    objects = []
    for name, x0, y0, x1, y1, difficult in parsed["objects"]:
        objects.append((name, *voc_to_label_coords(x0, y0, x1, y1), FLAG_DIFFICULT if difficult else FLAG_NORMAL))
    entry = Entry(image_id=image_id, ann_file=ann_file, image_path=image_path,
                  declared_size=declared, header_size=None, objects=objects, problems=problems, max_offset=1,
                  raw_boxes=[tuple(o[1:5]) for o in parsed["objects"]])
    if image_path:
        settle_image(entry, image_header(image_path, candidates[0], cache))
    return entry


def _size_or_reason(header):
    """(width, height) of an image_header result, or its string reason."""
    return header if isinstance(header, str) else (header.width, header.height)


def image_header(image_path, key, cache):
    """ImageHeader of an image (cached under ``key``), or a string saying why it cannot be read."""
    try:
        signature = file_signature(os.stat(image_path))
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
    key = "h:" + key
    hit = cache.get(key, signature)
    if not (isinstance(hit, str) or (isinstance(hit, list) and len(hit) == 3)):  # a miss, or an old entry
        try:
            header = read_header(image_path)
            hit = [header.width, header.height, header.orientation]
        except ImageReadError as e:
            hit = e.reason
        cache.put(key, signature, hit)
    return ImageHeader(*hit) if isinstance(hit, list) else hit


def settle_image(entry, header):
    """Fill ``entry``'s image size and orientation from its header (or a string: why it is unreadable)."""
    if isinstance(header, str):
        entry.problems.append(error(entry.image_path, "unreadable-image", header))
        return
    reading = choose_orientation(header, entry.declared_size)
    entry.header_size = reading.size
    entry.orientation = header.orientation
    entry.apply_orientation = reading.apply_orientation
    if reading.note:
        detail = f"{_name(entry.image_path)}: {reading.note}"
        entry.problems.append(warning(entry.ann_file, "exif-orientation", detail))


def _name(path):
    return os.path.basename(path)


def _problem(file, severity, code, detail):
    return (error if severity == "error" else warning)(file, code, detail)


def _progress(items, desc):
    return Progress(items, desc=desc, unit="file", enabled=len(items) > 2000)  # only for real work


# ----------------------------------------------------------------------------- splits
def read_split_file(path):
    """Ids listed in a split file, in order (duplicates kept, for check to report)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as e:
        raise GluondetError(f"{path}: cannot read split file ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise GluondetError(f"{path}: split file is not UTF-8 text") from None
    ids = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _CLASS_SPLIT_LINE.match(line)
        ids.append(m.group(1) if m else line)
    return ids


def voc_roots_under(root):
    """The VOC folders of ``root``: itself, or the year folders of a VOCdevkit ({name: path})."""
    root = Path(root)
    if is_voc_root(root):
        return {"": root}
    if not root.is_dir():
        raise GluondetError(f"{root}: dataset folder not found (set $GLUONDET_DATA or the config's root)")
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and is_voc_root(p))
    except OSError as e:
        raise GluondetError(f"{root}: cannot read the dataset folder ({e.strerror or e})") from None
    if not children:
        raise GluondetError(f"{root}: not a VOC folder (no Annotations/ in it or in a year folder like VOC2007/)")
    return {p.name: p for p in children}


def resolve_split_parts(root, spec):
    """A split spec to [(voc_root, split name or None for every annotation)].

    ``trainval`` for a single VOC folder; ``2007/trainval+2012/trainval`` (or ``VOC2007/...``)
    for a VOCdevkit; None for every annotation of every folder.
    """
    roots = voc_roots_under(root)
    if spec is None:
        return [(p, None) for p in roots.values()]
    parts = []
    for part in str(spec).split("+"):
        part = part.strip()
        folder, _, split = part.rpartition("/")
        if not split:
            raise GluondetError(f"split '{spec}': empty part")
        if not folder:
            if "" not in roots:
                raise GluondetError(
                    f"{root} holds several VOC folders ({', '.join(roots)}): name one in the split, "
                    f"e.g. '{_year(next(iter(roots)))}/{split}'")
            parts.append((roots[""], split))
            continue
        found = roots.get(folder) or roots.get("VOC" + folder)
        if found is None:
            raise GluondetError(f"split '{spec}': {root} has no VOC folder '{folder}' "
                                f"(found: {', '.join(n or '.' for n in roots)})")
        parts.append((found, split))
    return parts


def _year(name):
    return name[3:] if name.startswith("VOC") else name


def split_file(voc_root, split):
    return Path(voc_root) / SPLIT_DIR / f"{split}.txt"


def read_voc_dataset(cfg, split=None):
    """DatasetIndex of a VOC dataset config for a role (train/val/test) or a split spec.

    ``split`` None selects every annotation, and every split file under ImageSets/Main (of every
    folder of a VOCdevkit) is still checked for ids with no annotation and duplicates.
    """
    if split is not None:
        return read_voc(cfg.root, cfg.split_spec(split))
    index = read_voc(cfg.root, None)
    for name, voc_root in voc_roots_under(cfg.root).items():
        for path in sorted((voc_root / SPLIT_DIR).glob("*.txt")):
            if "_" in path.stem:  # VOC's per-class lists (cat_train.txt) hold every id with a flag
                continue
            spec = f"{name}/{path.stem}" if name else path.stem
            index.problems.extend(read_voc(cfg.root, spec, index).problems)
    return index


def read_voc(root, spec=None, known=None):
    """DatasetIndex of a VOC folder or VOCdevkit for a split spec (None: every annotation).

    ``entries`` follow split-file order; ``problems`` are ids with no annotation and duplicate
    ids; ``all_entries`` is every annotation under ``root``. ``known``, a DatasetIndex of the same
    root, saves indexing again.
    """
    indexes = {}
    if known is not None:
        by_folder = {}
        for e in known.all_entries:  # <voc_root>/Annotations/<id>.xml
            by_folder.setdefault(os.path.dirname(os.path.dirname(e.ann_file)), {})[e.image_id] = e
    for voc_root in voc_roots_under(root).values():
        if known is not None:
            indexes[voc_root] = by_folder.get(str(voc_root), {})
        else:
            indexes[voc_root] = index_voc_root(voc_root)
    all_entries = [e for index in indexes.values() for e in index.values()]
    selected, problems, seen = [], [], set()
    for voc_root, split in resolve_split_parts(root, spec):
        index = indexes[voc_root]
        if split is None:
            selected.extend(index.values())
            continue
        path = split_file(voc_root, split)
        if not path.is_file():
            have = sorted(p.stem for p in (voc_root / SPLIT_DIR).glob("*.txt") if "_" not in p.stem)
            raise GluondetError(
                f"{path}: split file not found (found: {', '.join(have) or 'none'}); "
                f"write train/val/test lists with: gluondet data split {voc_root}")
        for image_id in read_split_file(path):
            if (voc_root, image_id) in seen:
                problems.append(error(path, "duplicate-id", f"id '{image_id}' is listed more than once"))
                continue
            seen.add((voc_root, image_id))
            entry = index.get(image_id)
            if entry is None:
                problems.append(error(path, "missing-annotation",
                                      f"id '{image_id}' has no annotation Annotations/{image_id}.xml"))
                continue
            selected.append(entry)
    return DatasetIndex(selected, problems, all_entries)
