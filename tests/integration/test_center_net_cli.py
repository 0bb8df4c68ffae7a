"""CenterNet through the real CLI: trains from scratch on one and two devices, evaluates, detects and
exports (MXNet symbol, ONNX run by onnxruntime, INT8), on a micro shapes dataset that
``gluondet data synth`` writes. Kept small: the tiny base at 64 px, a couple of iterations; each zoo
base one iteration at 64 px."""
import json

import numpy as np
import pytest

from cli_helpers import eval_json, invoke_cli

pytestmark = pytest.mark.slow

SIZE = 64


@pytest.fixture(scope="module")
def micro_voc(tmp_path_factory):
    """8 train and 3 val images of coloured shapes, as ``gluondet data synth`` writes them."""
    out = tmp_path_factory.mktemp("micro") / "voc"
    result = invoke_cli(["data", "synth", out, "--train", 8, "--val", 3, "--seed", 5, "--size", 96])
    assert result.exit_code == 0, result.stderr
    return out


def _train(micro_voc, run_dir, model="center_net_tiny", ctx="cpu", batch_size=2, iters=2):
    return invoke_cli(["train", "--dataset", micro_voc, "--model", model, "--ctx", ctx, "--no-pretrained-base",
                       "--epochs", 1, "--max-iters", iters, "--batch-size", batch_size, "--data-shape", SIZE,
                       "--num-workers", 0, "--out", run_dir])


@pytest.fixture(scope="module")
def runs(micro_voc, tmp_path_factory):
    """{ctx: run folder} of center_net_tiny trained a few steps on one and on two devices."""
    out = {}
    for ctx, batch_size in (("cpu", 2), ("cpu0,cpu1", 3)):  # on two devices, one gets an image more
        run_dir = tmp_path_factory.mktemp("runs") / "run"
        result = _train(micro_voc, run_dir, ctx=ctx, batch_size=batch_size)
        assert result.exit_code == 0, result.stderr
        out[ctx] = run_dir
    return out


def _detect(target, images, out, ctx="cpu", extra=()):
    result = invoke_cli(["detect", *images, "--run", target, "--ctx", ctx, "--thresh", 0.0, "--batch-size", 2,
                         "--no-draw", "--json", out, "-q", *extra])
    assert result.exit_code == 0, result.stderr
    return json.loads(out.read_text())["images"]


@pytest.mark.parametrize("ctx", ["cpu", "cpu0,cpu1"])
def test_trains_evaluates_and_detects_on_its_devices(ctx, runs, micro_voc, tmp_path):
    import yaml

    run_dir = runs[ctx]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["family"] == "center_net" and config["train"]["ctx"] == ctx
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    header, values = rows[0].split(","), rows[1].split(",")
    for name in ("heatmap_loss", "wh_loss", "center_reg_loss"):
        assert np.isfinite(float(values[header.index(name)])), (name, rows)

    scores = {}
    for devices in dict.fromkeys([ctx, "cpu"]):  # eval on the run's devices gives one device's mAP
        out = tmp_path / f"ap-{devices}.json"
        result = invoke_cli(["eval", run_dir, "--which", "last", "--split", "val", "--ctx", devices,
                             "--json", out, "--num-workers", 0])
        assert result.exit_code == 0, result.stderr
        scores[devices] = json.loads(out.read_text())
    assert scores[ctx]["images"] == 3 and scores[ctx]["map"] == scores["cpu"]["map"]

    images = sorted((micro_voc / "JPEGImages").iterdir())[:3]  # batches of 2: the last one padded
    found = {d: _detect(run_dir, images, tmp_path / f"det-{d}.json", ctx=d, extra=["--which", "last"])
             for d in dict.fromkeys([ctx, "cpu"])}
    assert len(found[ctx]) == 3 and all(len(im["boxes"]) for im in found[ctx])
    for one, two in zip(found["cpu"], found[ctx]):
        assert [b["class"] for b in one["boxes"]] == [b["class"] for b in two["boxes"]]
        np.testing.assert_allclose([b["bbox"] for b in two["boxes"]], [b["bbox"] for b in one["boxes"]], atol=0.02)
        boxes = np.array([b["bbox"] for b in one["boxes"]])
        assert boxes.min() >= 0 and boxes[:, [0, 2]].max() <= 96 and boxes[:, [1, 3]].max() <= 96  # image pixels


def _same_boxes(expected, found, top=50):
    """Each image's ``top`` best boxes of ``expected`` are in ``found``: same class, corners within
    0.02 px, score within 1e-4. (An untrained network scores many boxes alike, so the order of
    near-ties, and which of them make the last places, is float rounding; the best are not.)"""
    for a, b in zip(expected, found):
        assert a["file"] == b["file"] and len(a["boxes"]) == len(b["boxes"])
        for box in sorted(a["boxes"], key=lambda x: -x["score"])[:top]:
            assert any(x["class"] == box["class"] and abs(x["score"] - box["score"]) <= 1e-4
                       and np.abs(np.subtract(x["bbox"], box["bbox"])).max() <= 0.02 for x in b["boxes"]), box


def test_exports_detect_as_the_run_does(runs, micro_voc, tmp_path):
    run_dir = runs["cpu"]
    images = sorted((micro_voc / "JPEGImages").iterdir())[:3]
    from_run = _detect(run_dir, images, tmp_path / "run.json", extra=["--which", "best"])

    result = invoke_cli(["export", run_dir, "--out", tmp_path / "symbol"])
    assert result.exit_code == 0, result.stderr
    from_export = _detect(tmp_path / "symbol", images, tmp_path / "symbol.json")
    _same_boxes(from_run, from_export)

    result = invoke_cli(["export", run_dir, "--out", tmp_path / "onnx", "--format", "onnx"])
    assert result.exit_code == 0, result.stderr
    _same_boxes(from_run, _detect(tmp_path / "onnx", images, tmp_path / "onnx.json"))  # run by onnxruntime

    result = invoke_cli(["export", run_dir, "--out", tmp_path / "int8", "--int8", "--calib-images", 3])
    assert result.exit_code == 0, result.stderr
    int8 = _detect(tmp_path / "int8", images, tmp_path / "int8.json")
    assert len(int8) == 3 and all(len(im["boxes"]) for im in int8)


@pytest.mark.parametrize("model", ["center_net_resnet18_v1b", "center_net_dla34", "center_net_resnet50_v1b",
                                   "center_net_mobilenetv3_large_duc"])
def test_every_zoo_base_trains_from_scratch_and_evaluates(model, micro_voc, tmp_path):
    run_dir = tmp_path / "run"
    result = _train(micro_voc, run_dir, model=model, iters=1)
    assert result.exit_code == 0, result.stderr
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and "nan" not in rows[1].lower()
    assert eval_json(run_dir, tmp_path / "ap.json")["images"] == 3


def test_a_data_shape_the_network_cannot_take_is_one_line(micro_voc, tmp_path):
    result = invoke_cli(["train", "--dataset", micro_voc, "--model", "center_net_tiny", "--data-shape", 72,
                         "--epochs", 1, "--max-iters", 1, "--num-workers", 0, "--out", tmp_path / "run"])
    assert result.exit_code != 0
    assert "--data-shape 72" in result.stderr and "such as 96" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_resumed_run_equals_the_straight_one(micro_voc, tmp_path):
    """GluonCV's CenterNet augmentation (random scale, centre, colour) and Adam's state: 2 epochs
    straight, or 1 then resumed to 2, give byte-identical weights and the same losses. (The lr
    steps are given: the YAML's would be scaled to --epochs 2 in one run and to 1 in the other.)"""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for out, epochs in ((straight, 2), (resumed, 1)):
        result = invoke_cli(["train", "--dataset", micro_voc, "--model", "center_net_tiny", "--augment", "ssd",
                             "--epochs", epochs, "--max-iters", 2, "--batch-size", 2, "--data-shape", SIZE,
                             "--lr-steps", 1, "--num-workers", 0, "--seed", 3, "--out", out, "-q"])
        assert result.exit_code == 0, result.stderr
    result = invoke_cli(["train", "--resume", resumed, "--epochs", 2, "-q"])
    assert result.exit_code == 0, result.stderr
    assert (straight / "last.params").read_bytes() == (resumed / "last.params").read_bytes()

    def losses(run):
        lines = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()]
        keep = [i for i, name in enumerate(lines[0]) if name.endswith("_loss")]
        return [[line[i] for i in keep] for line in lines]

    assert losses(straight) == losses(resumed) and len(losses(straight)) == 3
