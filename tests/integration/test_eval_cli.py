"""gluondet eval on a run folder trained by gluondet train (the shared tiny SSD run)."""
import json
import shutil

import pytest

from cli_helpers import invoke_cli

pytestmark = pytest.mark.slow


def _eval(args):
    return invoke_cli(["eval", *args])


def test_eval_reproduces_the_validation_map_of_best_params(trained_tiny_run, tmp_path):
    best = json.loads((trained_tiny_run / "best.json").read_text())
    json_file = tmp_path / "ap.json"
    result = _eval([trained_tiny_run, "--split", "val", "--metric", best["metric"], "--json", json_file,
                    "--num-workers", 0])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(json_file.read_text())
    classes = (trained_tiny_run / "classes.txt").read_text(encoding="utf-8").split()
    # The same weights on the same split through a separate code path give the number training logged.
    assert doc["map"] == pytest.approx(best["map"], abs=1e-6)
    assert list(doc["per_class"]) == classes
    table = result.stdout
    for name in classes:
        assert name in table
    assert "mAP" in table and f"{doc['map']:.4f}" in table


def test_eval_of_a_params_file_and_another_metric(trained_tiny_run, tmp_path):
    from gluondet.engine.metrics_log import read_metrics

    best = json.loads((trained_tiny_run / "best.json").read_text())
    result = _eval([trained_tiny_run / "last.params", "--split", "val", "--metric", best["metric"], "--json",
                    tmp_path / "ap.json", "--num-workers", 0])
    assert result.exit_code == 0, result.stderr
    doc = json.loads((tmp_path / "ap.json").read_text())
    # last.params holds the weights of the last epoch, validated at the end: the last row of metrics.csv
    last_row = read_metrics(trained_tiny_run / "metrics.csv")[-1]
    assert doc["params"].endswith("last.params")
    assert doc["map"] == pytest.approx(float(last_row["val_map"]), abs=1e-6)
    result = _eval([trained_tiny_run / "last.params", "--split", "val", "--metric", "voc07", "--json", "-",
                    "--num-workers", 0])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["metric"] == "voc07"


def test_eval_refuses_weights_without_their_classes(trained_tiny_run, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(trained_tiny_run / "best.params", bare / "best.params")
    shutil.copy(trained_tiny_run / "config.yaml", bare / "config.yaml")
    result = _eval([bare])
    assert result.exit_code == 2
    assert "classes.txt" in result.stderr and "Traceback" not in result.stderr
