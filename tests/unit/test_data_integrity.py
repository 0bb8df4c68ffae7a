"""Cut and corrupt image files: found by data check (in parallel, cached), refused by the decoders."""
import cv2
import numpy as np
import pytest

from data_helpers import voc_config, write_voc
from gluondet.data import integrity, load_dataset
from gluondet.data.check import check_dataset
from gluondet.errors import GluondetError
from gluondet.image import read_image

GOOD = {"objects": [("cat", 5, 5, 40, 30)], "size": (64, 48)}


def noisy(path, ext=".jpg", w=64, h=48, seed=0):
    """An image of noise (so a third of its bytes is a third of its rows, not all headers)."""
    img = np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)
    ok, data = cv2.imencode(ext, img)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.tobytes())
    return path


def cut(path, fraction=1 / 3):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
    return path


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_cut_files_are_found_whole_ones_pass(tmp_path, ext):
    whole = noisy(tmp_path / f"whole{ext}", ext)
    assert integrity.file_problem(whole) is None and integrity.file_problem(whole, full=True) is None
    assert cv2.imdecode(np.fromfile(str(cut(noisy(tmp_path / f"c{ext}", ext))), np.uint8),
                        cv2.IMREAD_COLOR) is not None or ext == ".png"  # OpenCV alone does not see it
    assert "truncated" in integrity.file_problem(tmp_path / f"c{ext}")


def test_found_even_after_gluoncv_told_pillow_to_accept_cut_images(tmp_path):
    from PIL import ImageFile

    import gluoncv.data  # noqa: F401  (its mhp module sets LOAD_TRUNCATED_IMAGES = True on import)

    ImageFile.LOAD_TRUNCATED_IMAGES = True
    assert "truncated" in integrity.file_problem(cut(noisy(tmp_path / "c.jpg")))


def test_data_after_the_end_marker_is_fine_and_bmp_is_decoded(tmp_path):
    trailer = noisy(tmp_path / "phone.jpg")
    trailer.write_bytes(trailer.read_bytes() + b"SEFT" * 100)  # phones append data after EOI
    assert integrity.file_problem(trailer) is None
    bmp = cut(noisy(tmp_path / "b.bmp", ".bmp"), 0.5)
    assert "corrupt" in integrity.file_problem(bmp)


def test_decoders_refuse_a_cut_jpeg_naming_it(tmp_path):
    path = cut(noisy(tmp_path / "x.jpg"))
    for stored in (True, False):  # the reader of training (as stored or turned) and of detect
        with pytest.raises(GluondetError, match=r"x\.jpg: truncated"):
            read_image(path, apply_orientation=stored)
    assert read_image(noisy(tmp_path / "y.jpg")).shape == (48, 64, 3)


def test_check_finds_cut_images_in_parallel_and_caches_the_answers(tmp_path, monkeypatch):
    root = write_voc(tmp_path / "voc", {f"i{k:02d}": GOOD for k in range(24)})
    for k in range(24):
        noisy(root / "JPEGImages" / f"i{k:02d}.jpg", seed=k)
    cut(root / "JPEGImages" / "i03.jpg")
    cut(root / "JPEGImages" / "i17.jpg", 0.5)
    calls = []
    real = integrity.file_problem
    monkeypatch.setattr(integrity, "file_problem", lambda p, full=False: calls.append(p) or real(p, full))
    result = check_dataset(voc_config(root), None)
    bad = sorted(p.file.rsplit("/", 1)[-1] for p in result.errors)
    assert bad == ["i03.jpg", "i17.jpg"] and {p.problem for p in result.errors} == {"corrupt-image"}
    assert len(calls) == 24  # more than SERIAL_BELOW: the thread pool ran them
    calls.clear()
    assert [p.file for p in check_dataset(voc_config(root), None).errors] == [p.file for p in result.errors]
    assert calls == []  # cached
    check_dataset(voc_config(root), None, full_decode=True)
    assert len(calls) == 24  # a quick answer does not serve a full decode
    calls.clear()
    noisy(root / "JPEGImages" / "i03.jpg", seed=3)  # repaired: checked again, no longer an error
    assert len(check_dataset(voc_config(root), None).errors) == 1 and len(calls) == 1
    with pytest.raises(GluondetError, match=r"i17\.jpg: error: corrupt-image: truncated"):
        load_dataset(voc_config(root), None)  # what training calls before it reads an image
    assert len(load_dataset(voc_config(root), None, skip_bad=True)) == 23


def test_checking_one_split_keeps_the_answers_for_the_others(tmp_path, monkeypatch):
    import json

    ids = [f"i{k}" for k in range(6)]
    root = write_voc(tmp_path / "voc", {i: GOOD for i in ids}, {"train": ids[:3], "val": ids[3:]})
    calls = []
    real = integrity.file_problem
    monkeypatch.setattr(integrity, "file_problem", lambda p, full=False: calls.append(p) or real(p, full))
    for split in ("train", "val", "train", "val"):  # what every training run checks
        assert check_dataset(voc_config(root), split).ok
    assert sorted(p.rsplit("/", 1)[-1] for p in calls) == [f"{i}.jpg" for i in ids]  # each image once
    (root / "JPEGImages" / "i5.jpg").unlink()
    (root / "ImageSets" / "Main" / "val.txt").write_text("i3\ni4\n")
    noisy(root / "JPEGImages" / "i0.jpg")  # changed: checked again, and the cache is saved
    calls.clear()
    assert check_dataset(voc_config(root), "train").ok and [p.rsplit("/", 1)[-1] for p in calls] == ["i0.jpg"]
    stored = json.loads((root / ".gluondet_cache" / f"{integrity.CACHE_KIND}.json").read_text())["entries"]
    assert sorted(e[0].rsplit("/", 1)[-1] for e in stored) == ["i0.jpg", "i1.jpg", "i2.jpg", "i3.jpg", "i4.jpg"]
