"""gluondet data split: deterministic per seed, disjoint, complete, never overwrites by accident."""
import pytest

from data_helpers import voc_config, write_voc
from gluondet.data import load_dataset
from gluondet.data.split import make_splits, write_splits
from gluondet.errors import GluondetError

IDS = [f"img_{i:03d}" for i in range(50)]


def test_fractions_disjoint_and_complete():
    s = make_splits(IDS, val=0.2, test=0.1, seed=0)
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (35, 10, 5)
    assert set(s["train"]) | set(s["val"]) | set(s["test"]) == set(IDS)
    assert not set(s["train"]) & set(s["val"]) and not set(s["val"]) & set(s["test"])
    assert s["trainval"] == sorted(s["train"] + s["val"])


def test_deterministic_per_seed_and_independent_of_listing_order():
    assert make_splits(IDS, seed=3) == make_splits(list(reversed(IDS)), seed=3)
    assert make_splits(IDS, seed=3)["val"] != make_splits(IDS, seed=4)["val"]


def test_bad_fractions():
    with pytest.raises(GluondetError, match="sum below 1"):
        make_splits(IDS, val=0.6, test=0.5)


def test_write_splits_then_read_them_and_refuse_overwrite(tmp_path):
    write_voc(tmp_path, {i: {"objects": [("cat", 5, 5, 20, 20)]} for i in IDS[:10]}, splits={})
    splits = write_splits(tmp_path, val=0.2, test=0.1, seed=1)
    for name in ("train", "val", "test", "trainval"):
        ds = load_dataset(voc_config(tmp_path), name)
        assert sorted(ds.image_id(i) for i in range(len(ds))) == splits[name]
    with pytest.raises(GluondetError, match="--force"):
        write_splits(tmp_path, seed=2)
    assert write_splits(tmp_path, seed=1, force=True) == splits


def test_not_a_voc_folder(tmp_path):
    with pytest.raises(GluondetError, match="no Annotations"):
        write_splits(tmp_path)


def test_stratified_split_spreads_a_rare_class_and_keeps_the_counts():
    # 40 images of 'common', 5 of 'rare', 5 negatives: each stratum reaches every split in proportion
    labels = {f"c{i:02d}": ["common"] for i in range(40)}
    labels.update({f"r{i}": ["rare", "common"] for i in range(5)})
    labels.update({f"n{i}": [] for i in range(5)})
    from gluondet.data.split import rarest_class_strata

    strata = rarest_class_strata(labels)
    assert strata["r0"] == "rare" and strata["n0"] == "" and strata["c00"] == "common"
    for seed in range(5):
        s = make_splits(list(labels), val=0.2, test=0.2, seed=seed, strata=strata)
        assert (len(s["train"]), len(s["val"]), len(s["test"])) == (30, 10, 10)
        for prefix, n in (("r", 5), ("n", 5), ("c", 40)):  # 3/5 train, 1/5 val, 1/5 test of each stratum
            got = [sum(i.startswith(prefix) for i in s[name]) for name in ("train", "val", "test")]
            assert got == [n * 3 // 5, n // 5, n // 5], (seed, prefix, got)
    # one stratum: the plain seeded permutation, as before strata existed
    assert make_splits(IDS, seed=3, strata={i: "x" for i in IDS}) == make_splits(IDS, seed=3)


def write_coco_set(root, n=30):
    """A COCO 2017-like root: annotations/instances_all.json, images in all/; class 'b' on 5 images."""
    from data_helpers import write_image
    import json

    images, anns = [], []
    for i in range(n):
        write_image(root / "all" / f"{i:03d}.jpg", 32, 24)
        images.append({"id": i + 1, "file_name": f"{i:03d}.jpg", "width": 32, "height": 24})
        if i % 10 != 9:  # three negatives
            anns.append({"id": i + 1, "image_id": i + 1, "category_id": 2 if i < 5 else 1,
                         "bbox": [2, 2, 10, 10], "area": 100, "iscrowd": 0})
    path = root / "annotations" / "instances_all.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    return path


def test_coco_split_is_seeded_stratified_and_trains_as_a_coco_root(tmp_path):
    from gluondet.config import resolve_dataset
    from gluondet.data.split import val_overlap_warning

    path = write_coco_set(tmp_path)
    first = write_splits(path, val=0.2, test=0.2, seed=7)
    with pytest.raises(GluondetError, match="--force"):
        write_splits(path, seed=7)
    assert write_splits(path, val=0.2, test=0.2, seed=7, force=True) == first  # reproducible by seed
    assert write_splits(path, val=0.2, test=0.2, seed=8, force=True)["val"] != first["val"]
    write_splits(path, val=0.2, test=0.2, seed=7, force=True)
    cfg = resolve_dataset(tmp_path)  # the root now holds instances_{all,train,val,test}.json
    train, val = load_dataset(cfg, "train"), load_dataset(cfg, "val")
    assert sorted(int(train.image_id(i)) for i in range(len(train))) == first["train"]
    assert sorted(int(val.image_id(i)) for i in range(len(val))) == first["val"]
    assert sum(val.label(i)[:, 4].tolist().count(1) for i in range(len(val))) == 1  # one of the five 'b'
    assert val.image_path(0).parent.name == "all" and val_overlap_warning(train, val) is None
    single = resolve_dataset(path)  # the unsplit file alone: train and val are the same images
    message = val_overlap_warning(load_dataset(single, "train"), load_dataset(single, "val"))
    assert message.startswith("the validation images are the training images")
