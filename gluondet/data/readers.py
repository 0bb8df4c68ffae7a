"""The dataset readers by a dataset config's ``format``: each ``reader(cfg, split)`` returns a
DatasetIndex (``split`` None: the whole dataset)."""
from .coco import read_coco_dataset
from .voc import read_voc_dataset

READERS = {
    "voc": read_voc_dataset,
    "coco": read_coco_dataset,
}
