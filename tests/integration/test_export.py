"""gluondet export: the exported model gives the run's outputs; ONNX and INT8 exports."""
import json

import cv2
import numpy as np
import pytest

from gluondet.errors import GluondetError

from cli_helpers import invoke_cli

pytestmark = pytest.mark.slow


def _cli(*args):
    return invoke_cli(args)


@pytest.fixture(scope="module")
def exported(trained_tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny"
    result = _cli("export", trained_tiny_run, "--out", out)
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def held_back_pngs(tmp_path_factory, held_back_shapes):
    """A folder of four never-seen shapes images (PNG)."""
    folder = tmp_path_factory.mktemp("img")
    for seed in range(2000, 2004):
        cv2.imwrite(str(folder / f"sample_{seed}.png"), held_back_shapes(seed=seed).image[:, :, ::-1])
    return folder


def test_exported_symbol_gives_the_runs_outputs(trained_tiny_run, exported):
    import mxnet as mx

    from gluondet.run_folder import RunFolder

    meta = json.loads((exported / "export.json").read_text(encoding="utf-8"))
    assert meta["classes"] == (trained_tiny_run / "classes.txt").read_text(encoding="utf-8").split()
    assert (exported / "classes.txt").is_file() and (exported / "config.yaml").is_file()
    side = meta["data_shape"]
    x = mx.nd.array(np.random.default_rng(0).normal(size=(3, 3, side, side)).astype(np.float32))
    net, _ = RunFolder.open(trained_tiny_run).load_network()  # the run's own network, not hybridized
    blk = mx.gluon.SymbolBlock.imports(str(exported / meta["symbol"]), [meta["input_name"]],
                                       str(exported / meta["params"]))
    for want, got in zip(net(x), blk(x)):
        np.testing.assert_allclose(got.asnumpy(), want.asnumpy(), rtol=1e-4, atol=1e-4)


def test_detect_with_the_export_equals_detect_with_the_run(trained_tiny_run, exported, held_back_pngs,
                                                           tmp_path):
    path = held_back_pngs / "sample_2000.png"
    docs = []
    for source, name in ((trained_tiny_run, "run.json"), (exported, "export.json")):
        result = _cli("detect", path, "--run", source, "--no-draw", "--json", tmp_path / name,
                      "--thresh", "0.1", "--quiet")
        assert result.exit_code == 0, result.stderr
        docs.append(json.loads((tmp_path / name).read_text(encoding="utf-8")))
    run_boxes, export_boxes = (d["images"][0]["boxes"] for d in docs)
    assert len(run_boxes) > 0 and len(run_boxes) == len(export_boxes)
    for a, b in zip(run_boxes, export_boxes):
        assert a["class"] == b["class"]
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=0.05)
        assert abs(a["score"] - b["score"]) < 1e-3


def test_onnx_export_is_a_valid_onnx_model(trained_tiny_run, tmp_path):
    onnx = pytest.importorskip("onnx")
    result = _cli("export", trained_tiny_run, "--out", tmp_path / "onnx", "--format", "onnx")
    assert result.exit_code == 0, result.stderr
    model = onnx.load(str(tmp_path / "onnx" / "model.onnx"))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["data"]  # every weight an initializer
    meta = json.loads((tmp_path / "onnx" / "export.json").read_text(encoding="utf-8"))
    assert meta["format"] == "onnx" and meta["opset"] == model.opset_import[0].version


def test_onnx_export_names_an_unsupported_operator(tmp_path):
    pytest.importorskip("onnx")
    import mxnet as mx

    from gluondet.export import write_onnx
    from gluondet.predict import Detector, ModelInfo

    # MultiBoxDetection (the older SSD output operator) has no ONNX conversion in MXNet 1.9
    cls_prob, loc, anchors = mx.sym.var("data"), mx.sym.var("loc"), mx.sym.var("anchors")
    sym = mx.sym.contrib.MultiBoxDetection(cls_prob, loc, anchors)
    sym.save(str(tmp_path / "model-symbol.json"))
    mx.nd.save(str(tmp_path / "model-0000.params"), {})
    info = ModelInfo(classes=["a"], family="ssd", data_shape=32)
    with pytest.raises(GluondetError, match="_contrib_MultiBoxDetection"):
        write_onnx(tmp_path, Detector(mx.gluon.nn.HybridSequential(), info, hybridize=False))


def test_int8_export_detects_like_the_float_model(trained_tiny_run, held_back_pngs, tmp_path, box_iou):
    out = tmp_path / "int8"
    result = _cli("export", trained_tiny_run, "--int8", "--calib-images", "16", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "export.json").read_text())["quantized"] is True
    boxes = {}
    for source in (trained_tiny_run, out):
        result = _cli("detect", held_back_pngs, "--run", source, "--no-draw", "--json", tmp_path / "d.json",
                      "--thresh", "0.3", "--quiet")
        assert result.exit_code == 0, result.stderr
        boxes[source] = [r["boxes"] for r in json.loads((tmp_path / "d.json").read_text())["images"]]
    assert any(boxes[trained_tiny_run]), "the float model found nothing to compare with"
    for float_boxes, int8_boxes in zip(boxes[trained_tiny_run], boxes[out]):
        # every confident float box has an INT8 box of its class on it (scores near 0.3 may
        # fall either side of the threshold, so only boxes clearly above it are compared)
        for ref in (b for b in float_boxes if b["score"] >= 0.4):
            same = [b for b in int8_boxes if b["class"] == ref["class"]]
            assert max((box_iou(ref["bbox"], b["bbox"]) for b in same), default=0) > 0.5, (ref, int8_boxes)
