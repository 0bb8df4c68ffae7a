"""`gluondet data show` and `data stats --plot` through the CLI on generated data."""
import pytest
from click.testing import CliRunner
from PIL import Image

from gluondet.cli import main


def run(*args):
    result = CliRunner(mix_stderr=False).invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


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
