"""`gluondet data show` and `data stats --plot` through the CLI on generated data."""
import pytest
from PIL import Image

from cli_helpers import invoke_cli


def run(*args):
    return invoke_cli(args)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("show") / "voc"
    assert run("data", "synth", root, "--train", 6, "--val", 3, "--size", 64, "--seed", 2).exit_code == 0
    return root


def test_show_writes_mosaics_of_the_chosen_split(shapes, tmp_path):
    result = run("data", "show", shapes, "--split", "train", "--grid", "2x2", "--pages", 2, "--out", tmp_path)
    assert result.exit_code == 0, result.stderr
    assert "wrote 2 mosaic(s)" in result.stdout
    sheets = sorted(tmp_path.glob("show_*.jpg"))
    assert [p.name for p in sheets] == ["show_01.jpg", "show_02.jpg"]
    assert Image.open(sheets[0]).width == 2 * (320 + 6)  # two tiles of 320 px per row


def test_show_refuses_a_bad_grid(shapes, tmp_path):
    result = run("data", "show", shapes, "--grid", "2-2", "--out", tmp_path)
    assert result.exit_code == 2 and "--grid" in result.stderr


def test_stats_plot_compares_splits_unless_one_is_chosen(shapes, tmp_path):
    assert run("data", "stats", shapes, "--plot", tmp_path / "all.png").exit_code == 0
    assert run("data", "stats", shapes, "--split", "val", "--plot", tmp_path / "val.png").exit_code == 0
    every, one = Image.open(tmp_path / "all.png"), Image.open(tmp_path / "val.png")
    assert every.width == one.width and every.height == one.height * 4 // 3  # one more row of panels


def test_show_draws_the_masks_of_both_instance_layouts(tmp_path):
    """`data synth --masks` writes the same shapes as VOC SegmentationObject PNGs and COCO polygons:
    data show draws both, and the two decode to the same pixels (up to the polygon's rim)."""

    from gluondet.config import resolve_dataset
    from gluondet.data import READERS
    from gluondet.data.show import entry_masks

    root = tmp_path / "masked"
    assert run("data", "synth", root, "--train", 3, "--val", 0, "--size", 64, "--seed", 5, "--masks").exit_code == 0
    for dataset, out in ((root, "voc"), (root / "coco.yaml", "coco")):
        result = run("data", "show", dataset, "--split", "train", "--grid", "2x2", "--out", tmp_path / out)
        assert result.exit_code == 0, result.stderr
        assert (tmp_path / out / "show_01.jpg").is_file()
    voc = {e.image_path: e for e in READERS["voc"](resolve_dataset(str(root)), "train").entries}
    coco = READERS["coco"](resolve_dataset(str(root / "coco.yaml")), "train").entries
    assert coco and all(isinstance(e.masks[0], list) for e in coco if e.masks)  # polygons
    compared = 0
    for entry in coco:
        other = voc[entry.image_path]  # both layouts share JPEGImages/
        assert other.masks and isinstance(other.masks[0], dict) and "png" in other.masks[0]
        w, h = entry.size
        (a, bad_a), (b, bad_b) = entry_masks(entry, h, w), entry_masks(other, h, w)
        assert bad_a == bad_b == 0 and a.shape == b.shape
        for x, y in zip(a.astype(bool), b.astype(bool)):
            assert (x & y).sum() / (x | y).sum() > 0.8
            compared += 1
    assert compared >= 3
