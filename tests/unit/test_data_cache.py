"""The parsed-index cache: parse once, never stale, safe to lose, elsewhere when read-only."""
import json
import os

import pytest

import gluondet.data.voc as voc
from data_helpers import voc_config, voc_xml, write_image, write_voc
from gluondet.data import cache as cache_mod
from gluondet.data import load_dataset
from gluondet.data.check import check_dataset


@pytest.fixture
def parse_count(monkeypatch):
    calls = []
    real = voc.parse_voc_xml

    def counting(path):
        calls.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(voc, "parse_voc_xml", counting)
    return calls


def three(tmp_path):
    return write_voc(tmp_path, {k: {"objects": [("cat", 5, 5, 20, 20)]} for k in ("a", "b", "c")})


def test_annotations_are_parsed_once(tmp_path, parse_count):
    three(tmp_path)
    check_dataset(voc_config(tmp_path))
    assert sorted(parse_count) == ["a.xml", "b.xml", "c.xml"]
    assert (tmp_path / ".gluondet_cache").is_dir()
    parse_count.clear()
    load_dataset(voc_config(tmp_path), "train")
    assert parse_count == []


def test_edited_file_is_parsed_again_even_with_same_size_and_mtime(tmp_path, parse_count):
    three(tmp_path)
    assert load_dataset(voc_config(tmp_path), "train").classes == ["cat"]
    path = tmp_path / "Annotations" / "b.xml"
    before = os.stat(path)
    path.write_text(path.read_text().replace("cat", "dog"))  # same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old mtime: ctime still moves
    parse_count.clear()
    ds = load_dataset(voc_config(tmp_path), "train")
    assert parse_count == ["b.xml"] and ds.classes == ["cat", "dog"]


def test_added_and_deleted_files_and_changed_splits(tmp_path, parse_count):
    three(tmp_path)
    load_dataset(voc_config(tmp_path), "train")
    (tmp_path / "Annotations" / "c.xml").unlink()
    write_voc(tmp_path, {"d": {"objects": [("owl", 1, 1, 9, 9)]}}, {"train": ["a", "d"]})
    parse_count.clear()
    ds = load_dataset(voc_config(tmp_path), "train")
    assert parse_count == ["d.xml"]
    assert [ds.image_id(i) for i in range(len(ds))] == ["a", "d"] and ds.classes == ["cat", "owl"]
    cache_file = next((tmp_path / ".gluondet_cache").glob("voc-index-*.json"))
    stored = [e[0] for e in json.loads(cache_file.read_text())["entries"]]
    assert "a:c.xml" not in stored and "a:d.xml" in stored


def test_replaced_image_gets_its_new_size(tmp_path):
    write_voc(tmp_path, {"a": {"xml": voc_xml([("cat", 5, 5, 20, 20)])}})  # no <size>: from the header
    assert load_dataset(voc_config(tmp_path), "train").image_size(0) == (64, 48)
    write_image(tmp_path / "JPEGImages" / "a.jpg", 30, 40)
    assert load_dataset(voc_config(tmp_path), "train").image_size(0) == (30, 40)


def test_corrupt_cache_is_ignored_and_rewritten(tmp_path, parse_count):
    three(tmp_path)
    check_dataset(voc_config(tmp_path))
    cache_file = next((tmp_path / ".gluondet_cache").glob("voc-index-*.json"))
    cache_file.write_text("{ not json")
    parse_count.clear()
    assert check_dataset(voc_config(tmp_path)).ok
    assert len(parse_count) == 3 and json.loads(cache_file.read_text())["version"] == cache_mod.CACHE_VERSION


def test_cache_of_a_copied_dataset_is_not_trusted(tmp_path, parse_count):
    three(tmp_path / "one")
    check_dataset(voc_config(tmp_path / "one"))
    import shutil

    shutil.copytree(tmp_path / "one", tmp_path / "two", copy_function=shutil.copy2)  # keeps mtimes
    parse_count.clear()
    check_dataset(voc_config(tmp_path / "two"))
    assert len(parse_count) == 3


def test_read_only_dataset_caches_under_xdg_cache_home(tmp_path, monkeypatch, parse_count):
    root = three(tmp_path / "data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    real_access = os.access
    monkeypatch.setattr(cache_mod.os, "access", lambda p, mode: False if str(p) == str(root) else real_access(p, mode))
    check_dataset(voc_config(root))
    assert not (root / ".gluondet_cache").exists()
    assert list((tmp_path / "xdg" / "gluondet").glob("data-*/*.json"))
    parse_count.clear()
    check_dataset(voc_config(root))
    assert parse_count == []


@pytest.fixture
def writes(monkeypatch):
    """The entries FileCache.save writes, one list per write."""
    import gluondet.fileio as fileio

    done = []
    real = fileio.atomic_write_text

    def counting(path, text):
        done.append([e[0] for e in json.loads(text)["entries"]])
        return real(path, text)

    monkeypatch.setattr(cache_mod, "atomic_write_text", counting)  # the cache's own name for it
    return done


def filled_cache(tmp_path, names):
    cache = cache_mod.FileCache(tmp_path, "test")
    for n in names:
        cache.put(n, [1, 2, 3], {"value": n})
    cache.save()
    return cache_mod.FileCache(tmp_path, "test")


def test_cache_lookups_in_any_order_and_no_write_when_every_entry_was_used(tmp_path, writes):
    cache = filled_cache(tmp_path, ["a", "b", "c", "d"])
    assert writes == [["a", "b", "c", "d"]]
    # in order, then out of order (the fallback), then in order again after the found entry
    assert [cache.get(k, [1, 2, 3]) for k in ("a", "c", "d", "b", "b")] == [{"value": k} for k in "acdbb"]
    assert cache.get("zz", [1, 2, 3]) is None and cache.get("a", [1, 2, 4]) is None  # unknown; other signature
    cache.save()
    assert len(writes) == 1  # each entry used (b twice counts once), nothing put: not rewritten


def test_cache_keeps_what_was_used_in_the_order_used_with_the_last_value(tmp_path, writes):
    cache = filled_cache(tmp_path, ["a", "b", "c", "d"])
    assert cache.get("c", [1, 2, 3]) == {"value": "c"}
    assert cache.get("a", [1, 2, 3]) == {"value": "a"}
    cache.put("c", [1, 2, 9], {"value": "c2"})  # e.g. a value the reader refused: parsed again
    cache.put("e", [1, 2, 3], {"value": "e"})
    cache.save()  # b and d were not used (their files are gone): dropped
    assert writes[-1] == ["c", "a", "e"]
    again = cache_mod.FileCache(tmp_path, "test")
    assert again.get("c", [1, 2, 9]) == {"value": "c2"} and again.get("c", [1, 2, 3]) is None


def test_cache_leaves_out_malformed_entries_and_rewrites_without_them(tmp_path, writes):
    filled_cache(tmp_path, ["a"])
    path = next(tmp_path.glob(".gluondet_cache/test.json"))
    data = json.loads(path.read_text())
    data["entries"] += [5, ["b"], [7, [1, 2, 3], "x"]]  # hand-edited
    path.write_text(json.dumps(data))
    cache = cache_mod.FileCache(tmp_path, "test")
    assert cache.get("a", [1, 2, 3]) == {"value": "a"} and cache.get("b", [1, 2, 3]) is None
    cache.save()
    assert writes == [["a"], ["a"]]  # rewritten, without them
