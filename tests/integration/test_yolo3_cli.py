"""YOLOv3 through the real CLI: the tiny YOLOv3 trained from scratch for a few iterations with every
family option on (mixup, label smoothing, no-wd, random input sizes), on one device and on two,
then ``eval``, ``detect`` and ``export`` (symbol, ONNX, INT8); a stopped and resumed run equals a
straight one to the last bit.

Kept small: 8 generated images of 96 px, a 64 px input (random sizes 64-96), 2 iterations per epoch.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cli_helpers import eval_on_devices, invoke_cli

pytestmark = pytest.mark.slow

GLUONDET = str(Path(sys.executable).parent / "gluondet")
# The tiny YOLOv3 at a small input, every option of the family on (random sizes every iteration); a
# small lr, so that its objectness still clears the 0.01 score YOLOv3 keeps boxes above after 4 steps.
TINY_YOLO = {
    "family": "yolo3", "builder": "yolo3_tiny", "data_shape": 64,
    "options": {"mixup": True, "no_mixup_epochs": 1, "label_smooth": True, "no_wd": True, "random_shape": True,
                "random_shape_range": [64, 96], "random_shape_every": 1},
    "train": {"batch_size": 2, "lr": 0.0005, "lr_mode": "cosine", "warmup_epochs": 0, "augment": "ssd"},
}
LOSSES = ("obj_loss", "center_loss", "scale_loss", "cls_loss")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """8 train and 3 val images (one of every ten without objects) and the model YAML."""
    from gluondet.data.synth import write_shapes_voc

    root = tmp_path_factory.mktemp("yolo3")
    data = write_shapes_voc(root / "voc", n_train=8, n_val=3, seed=5, size=96)
    model = root / "tiny_yolo3.yaml"
    model.write_text(yaml.safe_dump(TINY_YOLO), encoding="utf-8")
    return data, model


@pytest.fixture(scope="module")
def runs(setup, tmp_path_factory):
    """{ctx: run folder} trained by gluondet train on one device and on two (3 images: 2 + 1)."""
    data, model = setup
    out = {}
    for ctx in ("cpu", "cpu0,cpu1"):
        run_dir = tmp_path_factory.mktemp("runs") / ctx.replace(",", "-")
        result = invoke_cli(["train", "--dataset", data, "--model", model, "--ctx", ctx, "--no-pretrained-base",
                             "--epochs", 2, "--max-iters", 2, "--batch-size", 3, "--num-workers", 0,
                             "--model-option", "no_mixup_epochs=1", "--out", run_dir])
        assert result.exit_code == 0, (result.stdout, result.stderr)
        out[ctx] = run_dir
    return out


@pytest.mark.parametrize("ctx", ["cpu", "cpu0,cpu1"])
def test_trains_with_every_option_evaluates_and_detects_alike_on_its_devices(ctx, runs, setup, tmp_path):
    data, _ = setup
    run_dir = runs[ctx]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["options"] == TINY_YOLO["options"] and saved["train"]["ctx"] == ctx
    header, *rows = [line.split(",") for line in (run_dir / "metrics.csv").read_text().splitlines()]
    assert len(rows) == 2
    for name in LOSSES:
        values = [float(row[header.index(name)]) for row in rows]
        assert all(math.isfinite(v) and v >= 0 for v in values), (name, values)

    scores = eval_on_devices(run_dir, ctx, tmp_path)
    assert scores[ctx]["images"] == 3
    assert scores[ctx]["map"] == scores["cpu"]["map"] and scores[ctx]["per_class"] == scores["cpu"]["per_class"]

    found = _detect(run_dir, data, tmp_path, "cpu")
    assert sum(len(im["boxes"]) for im in found) > 0
    if ctx != "cpu":
        for one, two in zip(found, _detect(run_dir, data, tmp_path, ctx)):
            assert [b["class"] for b in one["boxes"]] == [b["class"] for b in two["boxes"]]
            np.testing.assert_allclose([b["bbox"] for b in two["boxes"]], [b["bbox"] for b in one["boxes"]],
                                       atol=0.02)


def _detect(source, data, tmp_path, ctx="cpu"):
    """gluondet detect on 3 training images (batches of 2: the last one padded), every box kept."""
    images = sorted((data / "JPEGImages").iterdir())[:3]
    out = tmp_path / "det.json"
    result = invoke_cli(["detect", *images, "--run", source, "--which", "last", "--ctx", ctx, "--thresh", 0.0,
                         "--batch-size", 2, "--no-draw", "--json", out, "-q"])
    assert result.exit_code == 0, result.stderr
    return json.loads(out.read_text())["images"]


def test_the_symbol_export_detects_as_the_run_and_onnx_converts(runs, setup, tmp_path):
    data, _ = setup
    run_dir = runs["cpu"]
    export = tmp_path / "export"
    result = invoke_cli(["export", run_dir, "--which", "last", "--out", export])
    assert result.exit_code == 0, result.stderr
    assert json.loads((export / "export.json").read_text())["family"] == "yolo3"
    for one, two in zip(_detect(run_dir, data, tmp_path), _detect(export, data, tmp_path)):
        assert [b["class"] for b in one["boxes"]] == [b["class"] for b in two["boxes"]]
        np.testing.assert_allclose([b["bbox"] for b in two["boxes"]], [b["bbox"] for b in one["boxes"]], atol=0.05)

    onnx = pytest.importorskip("onnx")
    result = invoke_cli(["export", run_dir, "--which", "last", "--out", tmp_path / "onnx", "--format", "onnx"])
    assert result.exit_code == 0, result.stderr
    onnx.checker.check_model(onnx.load(str(tmp_path / "onnx" / "model.onnx")))


def test_resumed_run_equals_the_straight_one_to_the_last_bit(setup, tmp_path):
    """Mixup (its second image), random sizes and the augmentation drawn in two loader workers, as a
    user runs it: 3 epochs straight, or 1 then resumed to 3, give byte-identical weights. (A constant
    lr and mixup to the end: a cosine curve and the mixup switch-off follow --epochs, which the
    resumed run changes.)"""
    data, model = setup
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for out, epochs in ((straight, 3), (resumed, 1)):
        done = subprocess.run([GLUONDET, "train", "--dataset", str(data), "--model", str(model), "--epochs",
                               str(epochs), "--max-iters", "2", "--num-workers", "2", "--lr-mode", "step",
                               "--model-option", "no_mixup_epochs=0", "--no-pretrained-base", "--out", str(out),
                               "-q"], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    done = subprocess.run([GLUONDET, "train", "--resume", str(resumed), "--epochs", "3", "-q"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (straight / "last.params").read_bytes() == (resumed / "last.params").read_bytes()


def test_int8_export_calibrates_even_where_box_sizes_overflow(runs, setup, tmp_path):
    """The run's prediction biases set to 100: exp(100) overflows float32 in every box size. The
    exp-scaled box corners stay float32 in the INT8 graph, so calibration still finds finite ranges
    (all INT8, quantize_net failed on an infinite one) and the export detects."""
    import shutil

    import mxnet as mx

    data, _ = setup
    run = tmp_path / "run"
    shutil.copytree(runs["cpu"], run)
    weights = mx.nd.load(str(run / "last.params"))
    biases = [k for k in weights if k.endswith("prediction.bias")]
    assert len(biases) == 3
    for key in biases:
        weights[key] = mx.nd.full(weights[key].shape, 100.0)
    mx.nd.save(str(run / "last.params"), weights)
    out = tmp_path / "int8"
    result = invoke_cli(["export", run, "--which", "last", "--int8", "--calib-images", 3, "--out", out])
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "export.json").read_text())["quantized"] is True
    assert len(_detect(out, data, tmp_path)) == 3
