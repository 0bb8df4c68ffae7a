"""Where a COCO dataset keeps its files: pure path logic, no file is read. Below config (which
resolves ``--dataset FOLDER`` or ``FILE.json`` with it) and data (whose COCO reader uses it)."""
from pathlib import Path


def coco_file_spec(ann_path):
    """(dataset root, split spec) of an instances JSON, finding its images the usual ways.

    COCO layout: ``<root>/annotations/instances_X.json`` with images in ``<root>/X/``; CVAT and
    ``gluondet data convert`` put them in ``<root>/images/``; else the JSON's own folder.
    """
    ann = Path(ann_path).resolve()
    root = ann.parent.parent if ann.parent.name == "annotations" else ann.parent
    split = ann.stem.replace("instances_", "")
    images = next((d for d in (root / split, root / "images") if d.is_dir()), root)
    return root, {"annotations": str(ann), "images": str(images)}


def find_coco_splits(root):
    """{split name: spec} of a COCO root folder's ``annotations/instances_*.json`` (sorted; {} if none).

    The name is what follows ``instances_``: ``train2017``, ``val2017``, ``default``.
    """
    ann_dir = Path(root) / "annotations"
    files = sorted(ann_dir.glob("instances_*.json")) if ann_dir.is_dir() else []
    return {f.stem[len("instances_"):]: coco_file_spec(f)[1] for f in files}


def coco_roles(splits):
    """train/val/test -> spec for a COCO root's splits: ``train2017`` serves train, ``val2017`` val
    (and test when there is no test file); a single file (``instances_default.json``) serves all three."""
    roles = {}
    for role in ("train", "val", "test"):
        match = [spec for name, spec in splits.items() if name.startswith(role)]
        if match:
            roles[role] = match[0]
    roles.setdefault("test", roles.get("val"))
    if len(splits) == 1:
        only = next(iter(splits.values()))
        roles = {role: roles.get(role) or only for role in ("train", "val", "test")}
    return {role: spec for role, spec in roles.items() if spec is not None}
