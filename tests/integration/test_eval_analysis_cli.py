"""gluondet eval writes RUN/eval-<split>/ from the matches the mAP used; detect --thresh best and
gluondet report read it back (on the shared tiny SSD run, copied so the fixture stays as trained)."""
import json
import re
import shutil

import pytest

from cli_helpers import invoke_cli

pytestmark = pytest.mark.slow


def _run(args):
    return invoke_cli(args)


@pytest.fixture(scope="module")
def evaluated(trained_tiny_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("evalpics") / "run"
    shutil.copytree(trained_tiny_run, run)
    json_file = run.parent / "ap.json"
    result = _run(["eval", run, "--split", "val", "--num-workers", 0, "--json", json_file, "--grid", "3x3"])
    assert result.exit_code == 0, result.stderr
    return run, json.loads(json_file.read_text(encoding="utf-8")), result.stdout


def test_eval_writes_the_analysis_folder_that_agrees_with_the_map(evaluated):
    run, doc, stdout = evaluated
    folder = run / "eval-val"
    saved = json.loads((folder / "analysis.json").read_text(encoding="utf-8"))
    analysis = doc["analysis"]
    assert saved["analysis"] == analysis
    # the same matched detections: the same numbers to the last digit
    assert analysis["map"] == doc["map"]
    assert [r["ap"] for r in analysis["per_class"]] == list(doc["per_class"].values())
    assert analysis["errors"]["all"]["C50"]["ap"] == doc["map"]
    best = analysis["f1"]["best"]
    assert analysis["threshold"] == best["threshold"]
    rows = analysis["per_class"]
    assert sum(r["tp"] for r in rows) / sum(r["gt"] for r in rows) == pytest.approx(best["recall"])
    for name in list(saved["pictures"].values()) + saved["mosaics"]:
        assert (folder / name).stat().st_size > 1000, name
    assert saved["mosaics"] == ["worst_01.jpg", "worst_02.jpg"]
    assert "precision" in stdout and "F1-best" in stdout and str(folder) in stdout


def test_detect_thresh_best_uses_the_f1_best_threshold(evaluated, held_back_shapes, tmp_path):
    import cv2

    run, doc, _ = evaluated
    image = tmp_path / "shapes.png"
    cv2.imwrite(str(image), cv2.cvtColor(held_back_shapes().image, cv2.COLOR_RGB2BGR))
    out = tmp_path / "boxes.json"
    result = _run(["detect", image, "--run", run, "--thresh", "best", "--json", out, "--no-draw", "-q"])
    assert result.exit_code == 0, result.stderr
    boxes = json.loads(out.read_text())
    assert boxes["thresh"] == doc["analysis"]["f1"]["best"]["threshold"]
    assert "eval-val" in result.stderr


def test_detect_thresh_best_without_an_evaluation_says_what_to_run(trained_tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_tiny_run, run, ignore=shutil.ignore_patterns("eval-*"))
    result = _run(["detect", tmp_path, "--run", run, "--thresh", "best"])
    assert result.exit_code == 2
    assert "gluondet eval" in result.stderr and "Traceback" not in result.stderr


def test_report_of_the_evaluated_run(evaluated):
    run, _, _ = evaluated
    result = _run(["report", run])
    assert result.exit_code == 0, result.stderr
    page = (run / "report.html").read_text(encoding="utf-8")
    pictures = set(re.findall(r'data-picture="([^"]+)"', page))
    assert {"curves.png", "eval-val/pr_curve.png", "eval-val/confusion_matrix.png",
            "eval-val/worst_01.jpg"} <= pictures


def test_training_ended_with_the_eval_folder_and_the_page(trained_tiny_run):
    # (other tests may evaluate the shared run again: the best weights on val give the same numbers)
    best = json.loads((trained_tiny_run / "best.json").read_text())
    doc = json.loads((trained_tiny_run / "eval-val" / "analysis.json").read_text(encoding="utf-8"))
    assert doc["analysis"]["map"] == best["map"]
    assert (trained_tiny_run / "report.html").stat().st_size > 10000  # only training writes it there


def test_evaluating_other_weights_keeps_the_best_ones_analysis(evaluated):
    run, doc, _ = evaluated
    result = _run(["eval", run / "last.params", "--split", "val", "--num-workers", 0, "--metric", "voc07",
                   "--mosaics", 0])
    assert result.exit_code == 0, result.stderr
    last = json.loads((run / "eval-val-last" / "analysis.json").read_text(encoding="utf-8"))
    assert last["result"]["params"].endswith("last.params") and last["mosaics"] == []
    best = json.loads((run / "eval-val" / "analysis.json").read_text(encoding="utf-8"))
    assert best["analysis"] == doc["analysis"]
