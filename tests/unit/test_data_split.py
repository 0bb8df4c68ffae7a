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
