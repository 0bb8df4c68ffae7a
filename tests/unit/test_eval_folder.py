"""Reading the F1-best threshold back, the per-class text table, and the CLI's argument checks."""
import json
import os

import pytest
from click.testing import CliRunner

from gluondet.cli import main
from gluondet.errors import GluondetError
from gluondet.eval.folder import best_threshold, eval_dir, format_threshold_table, weights_name


def _analysis(folder, threshold, split="val", weights="best"):
    folder.mkdir(parents=True)
    best = None if threshold is None else {"threshold": threshold, "f1": 0.5}
    doc = {"result": {"params": f"/runs/x/{weights}.params", "split": split},
           "analysis": {"f1": {"best": best}}}
    (folder / "analysis.json").write_text(json.dumps(doc))
    return folder / "analysis.json"


def test_best_threshold_prefers_the_val_split_of_the_same_weights(tmp_path):
    val = _analysis(tmp_path / "eval-val", 0.42)
    test = _analysis(tmp_path / "eval-test", 0.7, split="test")
    last = _analysis(tmp_path / "eval-val-last", 0.1, weights="last")
    os.utime(val, (1, 1))  # val is older; it is still preferred
    assert best_threshold(tmp_path) == (0.42, val)
    assert best_threshold(tmp_path, "last") == (0.1, last)
    val.unlink()
    assert best_threshold(tmp_path) == (0.7, test)
    with pytest.raises(GluondetError, match="epoch_0003 weights"):
        best_threshold(tmp_path, "epoch_0003")


def test_best_threshold_without_evaluation_or_detections(tmp_path):
    with pytest.raises(GluondetError, match="gluondet eval"):
        best_threshold(tmp_path)
    _analysis(tmp_path / "eval-val", None)
    with pytest.raises(GluondetError, match="no detections"):
        best_threshold(tmp_path)


def test_eval_dir_names_are_safe_and_say_which_weights(tmp_path):
    assert eval_dir(tmp_path, "val").name == "eval-val"
    assert eval_dir(tmp_path, "2007/test+2012/val").name == "eval-2007_test+2012_val"
    assert eval_dir(tmp_path, "val", weights_name("last")).name == "eval-val-last"
    assert eval_dir(tmp_path, "val", weights_name(6)).name == "eval-val-epoch_0006"
    assert weights_name(tmp_path / "epoch_0002.params") == "epoch_0002"


def test_threshold_table():
    analysis = {"threshold": 0.5, "threshold_source": "F1-best", "iou": 0.5, "per_class": [
        {"class": "安全帽", "precision": 0.75, "recall": float("nan"), "tp": 3, "fp": 1, "fn": 0, "gt": 0}]}
    lines = format_threshold_table(analysis).splitlines()
    assert "score >= 0.500 (F1-best)" in lines[0]
    assert lines[2].split() == ["安全帽", "0.7500", "-", "3", "1", "0", "0"]


@pytest.mark.parametrize("value", ["1.5", "best-ish"])
def test_detect_refuses_a_bad_threshold(value, tmp_path):
    result = CliRunner(mix_stderr=False).invoke(main, ["detect", str(tmp_path), "--thresh", value])
    assert result.exit_code == 2 and "--thresh" in result.stderr


def test_report_refuses_a_folder_that_is_no_run(tmp_path):
    result = CliRunner(mix_stderr=False).invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "config.yaml" in result.stderr and "Traceback" not in result.stderr


def test_eval_refuses_a_bad_grid_before_loading_anything(tmp_path):
    result = CliRunner(mix_stderr=False).invoke(main, ["eval", str(tmp_path), "--grid", "4by4"])
    assert result.exit_code == 2 and "--grid" in result.stderr
