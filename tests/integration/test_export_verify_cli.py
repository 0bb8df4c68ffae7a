"""Every export format evaluated as its run is: ``gluondet eval EXPORT_DIR`` gives the run's eval
(symbol and ONNX: equal; INT8: within its tolerance), and ``gluondet export --verify`` passes a
good export and fails a broken one in one line.

The reference for the exports is the run itself, evaluated by the same command on the same split,
and its network's raw outputs on the same batch.
"""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from gluondet.export import TOLERANCES

from cli_helpers import invoke_cli

pytestmark = pytest.mark.slow

SPLIT = "val"


def _cli(*args):
    return invoke_cli(args)


# How far an export's analysis may be from its run's. The symbol export runs MXNet's own operators:
# equal numbers. onnxruntime's scores differ from MXNet's by ~1e-7, so where two detections of an
# image tie at its 100-box cut either may be kept: the mAP and each class's AP stay equal (checked
# exactly), while a low-threshold point of a curve may count one or two detections more or less: of
# a class's ~100 detections there, a precision of 33/126 against 33/125 (0.262 and 0.264, seen).
ANALYSIS_TOLERANCE = {"mxnet": (1e-5, 0), "onnx": (2e-2, 2)}


def _assert_same_numbers(got, want, tolerance, where="analysis"):
    """Equal trees; floats within tolerance[0], counts within tolerance[1]."""
    assert type(got) is type(want) or isinstance(got, (int, float)) and isinstance(want, (int, float)), where
    if isinstance(want, dict):
        assert sorted(got) == sorted(want), where
        for key in want:
            _assert_same_numbers(got[key], want[key], tolerance, f"{where}/{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want)):
            _assert_same_numbers(a, b, tolerance, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=tolerance[0]), where
    elif isinstance(want, int) and not isinstance(want, bool):
        assert abs(got - want) <= tolerance[1], where
    else:
        assert got == want, where


def _command(*args):
    """``gluondet ARGS`` in a process of its own, as a user runs it: what one evaluation computes
    must not depend on what the test process ran before it."""
    env = dict(os.environ, MXNET_GLUON_REPO="http://127.0.0.1:9/")
    done = subprocess.run([sys.executable, "-m", "gluondet", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=900)
    return SimpleNamespace(exit_code=done.returncode, output=done.stdout, stderr=done.stderr)


def _eval(source, json_path):
    result = _command("eval", source, "--split", SPLIT, "--quiet", "--json", json_path)
    assert result.exit_code == 0, result.stderr
    return json.loads(json_path.read_text(encoding="utf-8")), result.output


@pytest.fixture(scope="module")
def run_eval(trained_tiny_run, tmp_path_factory):
    return _eval(trained_tiny_run, tmp_path_factory.mktemp("eval") / "run.json")


@pytest.fixture(scope="module")
def exports(trained_tiny_run, tmp_path_factory):
    """{format: export folder} of the trained tiny SSD: symbol, ONNX and INT8."""
    pytest.importorskip("onnxruntime")
    root = tmp_path_factory.mktemp("exports")
    flags = {"mxnet": [], "onnx": ["--format", "onnx"], "int8": ["--int8", "--calib-images", "16"]}
    for name, extra in flags.items():
        result = _command("export", trained_tiny_run, "--out", root / name, *extra)
        assert result.exit_code == 0, result.stderr
    return {name: root / name for name in flags}


@pytest.mark.parametrize("fmt", ["mxnet", "onnx"])
def test_eval_of_a_float_export_is_the_runs_eval(fmt, exports, run_eval, tmp_path):
    meta = json.loads((exports[fmt] / "export.json").read_text(encoding="utf-8"))
    assert meta["format"] == fmt
    if fmt == "onnx":
        assert meta["opset"] >= 13 and meta["onnx"] == "model.onnx"
    want, want_output = run_eval
    got, got_output = _eval(exports[fmt], tmp_path / "export.json")
    assert got["format"] == fmt
    assert got["map"] == pytest.approx(want["map"], abs=1e-9)
    assert got["per_class"] == pytest.approx(want["per_class"], abs=1e-9)
    assert got["images"] == want["images"] > 0
    # the same analysis (thresholds, counts, curves), into the export's own folder
    _assert_same_numbers(got["analysis"], want["analysis"], ANALYSIS_TOLERANCE[fmt])
    assert got["analysis_dir"] == str(exports[fmt] / f"eval-{SPLIT}")
    pictures = sorted(p.name for p in (exports[fmt] / f"eval-{SPLIT}").iterdir())
    assert "pr_curve.png" in pictures and any(name.startswith("worst_") for name in pictures)
    # the printed output differs only in what was evaluated, where its folder is and the --json file
    differing = [b for a, b in zip(want_output.splitlines(), got_output.splitlines()) if a != b]
    assert len(want_output.splitlines()) == len(got_output.splitlines())
    assert len(differing) <= 3 and all(str(exports[fmt]) in b or b.startswith("wrote ") for b in differing)


@pytest.mark.parametrize("fmt", ["mxnet", "onnx"])
def test_a_float_exports_raw_outputs_are_the_runs(fmt, exports, trained_tiny_run, held_back_shapes):
    from gluondet.predict import Detector

    run, export = Detector.load(trained_tiny_run), Detector.load(exports[fmt])
    batch = np.stack([run.preprocess(held_back_shapes(seed=3000 + i).image)[0] for i in range(4)])
    want, got = run.forward(batch), export.forward(batch)
    assert (want[0] >= 0).sum() > 0
    for i in range(len(batch)):
        # the same detections: every one of each model has its twin (class, score to 1e-5, box to
        # 1e-3 px) in the other; two of one class and (nearly) one score may come in either order,
        # and ties at the 100-box cut may fall either side of it, so the lowest scores are left out
        a, b = _rows(want, i), _rows(got, i)
        floor = min(a[:, 1].min(), b[:, 1].min()) + 1e-5
        for one, other in ((a, b), (b, a)):
            for row in one[one[:, 1] > floor]:
                twins = other[(other[:, 0] == row[0]) & (np.abs(other[:, 1] - row[1]) <= 1e-5)]
                assert (np.abs(twins[:, 2:] - row[2:]).max(axis=1) <= 1e-3).any(), (i, row)


def _rows(outputs, i):
    """Image i's detections as (id, score, xmin, ymin, xmax, ymax) rows, the -1 padding left out."""
    ids, scores, boxes = outputs[:3]
    rows = np.concatenate([ids[i].reshape(-1, 1), scores[i].reshape(-1, 1), boxes[i].reshape(-1, 4)], axis=1)
    return rows[rows[:, 0] >= 0]


def test_eval_of_the_int8_export_is_within_its_tolerance(exports, run_eval, tmp_path):
    meta = json.loads((exports["int8"] / "export.json").read_text(encoding="utf-8"))
    assert meta["format"] == "int8" and meta["quantized"] is True
    want, _ = run_eval
    got, _ = _eval(exports["int8"], tmp_path / "int8.json")
    assert got["format"] == "int8"
    assert abs(got["map"] - want["map"]) <= TOLERANCES["int8"], (got["map"], want["map"])


def test_verify_passes_a_good_export_and_records_it(trained_tiny_run, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "onnx"
    result = _cli("export", trained_tiny_run, "--out", out, "--format", "onnx", "--verify", "--split", SPLIT)
    assert result.exit_code == 0, result.stderr
    assert "verified:" in result.output and "img/s" in result.output
    verified = json.loads((out / "export.json").read_text(encoding="utf-8"))["verified"]
    assert verified["passed"] is True and verified["split"] == SPLIT
    assert verified["export_map"] == pytest.approx(verified["run_map"], abs=TOLERANCES["float32"])
    assert verified["tolerance"] == TOLERANCES["float32"] and verified["box_difference"] <= verified["box_tolerance"]
    assert verified["run_img_per_s"] > 0 and verified["export_img_per_s"] > 0


def test_verify_fails_a_broken_export_in_one_line(trained_tiny_run, tmp_path, monkeypatch):
    """An export whose params have one convolution's weights scaled (planted between writing the
    symbol and installing it, as a faulty converter would) is refused with exit status 1."""
    import mxnet as mx

    import gluondet.export as export

    write_symbol = export.write_symbol

    def broken(net, detector, folder, quantized=False):
        write_symbol(net, detector, folder, quantized)
        params_file = str(folder / "model-0000.params")
        params = mx.nd.load(params_file)
        conv = sorted(k for k in params if k.endswith("weight") and params[k].ndim == 4)[0]
        params[conv] = params[conv] * 0.5
        mx.nd.save(params_file, params)

    monkeypatch.setattr(export, "write_symbol", broken)
    out = tmp_path / "broken"
    result = _cli("export", trained_tiny_run, "--out", out, "--verify", "--split", SPLIT)
    assert result.exit_code == 1, (result.output, result.stderr)
    failures = [line for line in result.stderr.splitlines() if "verification failed" in line]
    assert len(failures) == 1 and str(out) in failures[0]
    verified = json.loads((out / "export.json").read_text(encoding="utf-8"))["verified"]
    assert verified["passed"] is False and verified["reason"] in failures[0]


def test_a_conversion_that_fails_writes_nothing(trained_tiny_run, tmp_path, monkeypatch):
    import gluondet.export as export
    from gluondet.errors import GluondetError

    def fails(folder, detector):
        assert (folder / "model-symbol.json").is_file()  # the symbol is staged, not in --out
        raise GluondetError("ONNX export: MXNet's ONNX exporter has no conversion for operator 'X'")

    monkeypatch.setattr(export, "write_onnx", fails)
    result = _cli("export", trained_tiny_run, "--out", tmp_path / "out", "--format", "onnx")
    assert result.exit_code == 2 and "operator 'X'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
