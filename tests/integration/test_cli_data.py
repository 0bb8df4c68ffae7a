"""The `gluondet data` commands through click's CliRunner, on data they generate themselves."""
import json
import shutil
from pathlib import Path

import pytest

from cli_helpers import invoke_cli

FIXTURES = Path(__file__).resolve().parent.parent / "unit" / "fixtures"


def run(*args, env=None):
    return invoke_cli(args, env=env)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes") / "voc"
    result = run("data", "synth", root, "--train", 6, "--val", 2, "--size", 64, "--seed", 1)
    assert result.exit_code == 0, result.output + result.stderr
    return root


def test_synth_then_check_is_clean(shapes):
    result = run("data", "check", shapes)
    assert result.exit_code == 0, result.stdout
    assert "classes (discovered, sorted)" in result.stdout and "0 error(s)" in result.stdout


def test_check_json_and_exit_status_on_errors(shapes, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(shapes, root)
    train = (root / "ImageSets" / "Main" / "train.txt").read_text().split()
    xml = next(p for p in (root / "Annotations" / f"{i}.xml" for i in train) if "<xmax>" in p.read_text())
    xml.write_text(xml.read_text().replace("<xmax>", "<xmax>9", 1))  # e.g. 57 -> 957: outside the 64px image
    result = run("data", "check", "--dataset", root, "--split", "train", "--json")
    assert result.exit_code == 1
    problems = json.loads(result.stdout)
    errors = [p for p in problems if p["severity"] == "error"]
    assert [(Path(p["file"]).name, p["problem"]) for p in errors] == [(xml.name, "box-outside-image")]
    assert set(problems[0]) == {"file", "severity", "problem", "detail"}


def test_root_and_dataset_together_is_a_usage_error(shapes):
    result = run("data", "check", shapes, "--dataset", shapes)
    assert result.exit_code == 2 and "not both" in result.stderr


def test_stats_json_and_plot(shapes, tmp_path):
    result = run("data", "stats", shapes, "--split", "train", "--json", "--plot", tmp_path / "s.png")
    assert result.exit_code == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["images"] == 6 and stats["boxes"] == sum(stats["per_class"].values())
    assert (tmp_path / "s.png").stat().st_size > 0


def test_split_writes_and_refuses_to_overwrite(shapes, tmp_path):
    root = tmp_path / "v"
    shutil.copytree(shapes, root)
    assert run("data", "split", root).exit_code == 2  # synth wrote split files already
    result = run("data", "split", root, "--val", 0.25, "--test", 0, "--seed", 5, "--force")
    assert result.exit_code == 0 and "train 6, val 2, test 0, trainval 8" in result.stdout
    val = (root / "ImageSets" / "Main" / "val.txt").read_text().split()
    run("data", "split", root, "--val", 0.25, "--test", 0, "--seed", 5, "--force")
    assert (root / "ImageSets" / "Main" / "val.txt").read_text().split() == val


def test_dataset_with_synth_section_is_generated_on_first_use(tmp_path):
    configs = tmp_path / "configs" / "datasets"
    configs.mkdir(parents=True)
    (configs / "tiny_shapes.yaml").write_text(
        "name: tiny_shapes\nformat: voc\nroot: ${GLUONDET_DATA}/tiny_shapes\n"
        "synth: {train: 4, val: 2, size: 48, seed: 0}\n")
    env = {"GLUONDET_DATA": str(tmp_path / "data")}
    result = run("data", "check", "--dataset", "tiny_shapes", "--config-dir", tmp_path / "configs", env=env)
    assert result.exit_code == 0, result.stderr
    assert "generating it now" in result.stderr
    assert len(list((tmp_path / "data" / "tiny_shapes" / "Annotations").glob("*.xml"))) == 6
    again = run("data", "stats", "--dataset", "tiny_shapes", "--config-dir", tmp_path / "configs", "--split", "val",
                env=env)
    assert again.exit_code == 0 and "generating" not in again.stderr and "images: 2" in again.stdout



def test_convert_labelme_to_voc_and_coco(tmp_path):
    import cv2
    import numpy as np

    src = tmp_path / "labelme"
    shutil.copytree(FIXTURES / "labelme", src)
    cv2.imwrite(str(src / "hats.jpg"), np.zeros((48, 64, 3), np.uint8))
    result = run("data", "convert", "labelme", src, tmp_path / "voc", "--to", "voc")
    assert result.exit_code == 0, result.stderr
    assert "converted 2 images, 4 boxes" in result.stdout and "warning:" in result.stderr
    assert run("data", "split", tmp_path / "voc", "--val", 0.5, "--test", 0).exit_code == 0
    assert run("data", "check", tmp_path / "voc", "--split", "train").exit_code == 0
    result = run("data", "convert", "labelme", src, tmp_path / "coco", "--to", "coco")
    assert result.exit_code == 0
    check = run("data", "check", tmp_path / "coco" / "annotations" / "instances_default.json")
    assert check.exit_code == 0, check.stdout


def test_every_data_command_has_help():
    for command in ("synth", "split", "check", "stats", "convert"):
        result = run("data", command, "--help")
        assert result.exit_code == 0 and "Usage:" in result.stdout
