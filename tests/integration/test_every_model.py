"""Every model of the models table builds (from scratch, from a local pretrained-base file, with
--init-from) and trains; every family trains, evaluates and detects on one and on two devices.

``--ctx cpu0,cpu1`` stands in for two GPUs (MXNet gives each context its own copy of every
parameter). Kept small: a micro shapes dataset, one or two iterations, the smallest input each
network allows, and Faster R-CNN with few RoIs (its R-CNN head runs a ResNet stage on every RoI).
SSD512 VGG16, SSD300 VGG16 and Faster R-CNN ResNet50 on one device train in test_train.py.
"""
import json
import re

import numpy as np
import pytest
import yaml

from gluondet.config import resolve_model_config

from cli_helpers import eval_json, eval_on_devices, invoke_cli

pytestmark = pytest.mark.slow

ZOO_MODELS = ["ssd_512_vgg16_atrous", "ssd_300_vgg16_atrous", "ssd_512_mobilenet1.0", "ssd_512_resnet50_v1",
              "faster_rcnn_resnet50_v1b", "faster_rcnn_resnet101_v1d", "yolo3_darknet53", "yolo3_mobilenet1.0",
              "yolo3_mobilenet0.25", "center_net_resnet18_v1b", "center_net_resnet50_v1b", "center_net_dla34",
              "center_net_mobilenetv3_large_duc"]
# The ImageNet network each model's backbone comes from, and what of it the detector leaves out.
BACKBONES = {
    "ssd_512_vgg16_atrous": ("vgg16_atrous", "extras."),  # the file has no extras: nothing left out
    "ssd_300_vgg16_atrous": ("vgg16_atrous", "extras."),
    "ssd_512_mobilenet1.0": ("mobilenet1.0", "output."),
    "ssd_512_resnet50_v1": ("resnet50_v1", "output."),
    "faster_rcnn_resnet50_v1b": ("resnet50_v1b", "fc."),
    "faster_rcnn_resnet101_v1d": ("resnet101_v1d", "fc."),
    "yolo3_darknet53": ("darknet53", "output."),
    "yolo3_mobilenet1.0": ("mobilenet1.0", "output."),
    "yolo3_mobilenet0.25": ("mobilenet0.25", "output."),
    "center_net_resnet18_v1b": ("resnet18_v1b", "fc."),
    "center_net_resnet50_v1b": ("resnet50_v1b", "fc."),
    "center_net_dla34": ("dla34", "fc."),
    # DUC upsamples the features before the global pool: the last convolution and the classifier are left out
    "center_net_mobilenetv3_large_duc": ("mobilenetv3_large", ("features.22.", "output.")),
}


def _cli(args):
    return invoke_cli(args)


@pytest.fixture(scope="module")
def micro_voc(tmp_path_factory):
    """8 train and 3 val images of coloured shapes (one of every ten has no objects)."""
    from gluondet.data.synth import write_shapes_voc

    return write_shapes_voc(tmp_path_factory.mktemp("micro") / "micro_voc", n_train=8, n_val=3,
                            seed=5, size=96)


def _few_rois(model_name, tmp_path):
    """The shipped Faster R-CNN config with few RoIs and the smallest input its RPN allows."""
    cfg = resolve_model_config(model_name)
    cfg.update(data_shape=256, kwargs={"rpn_test_post_nms": 16, "num_sample": 32})
    path = tmp_path / f"{model_name}_few_rois.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if k != "name"}), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- pretrained base
@pytest.fixture(scope="module")
def fake_backbone(tmp_path_factory):
    """``fake_backbone(name)``: the ImageNet network ``name`` with recognisable weights (every array
    its own random values), saved as GluonCV's model store would hand it over; (path, {key: array})."""
    made = {}

    def make(name):
        if name not in made:
            made[name] = _fake_backbone_file(name, tmp_path_factory.mktemp("backbones"))
        return made[name]

    return make


def _fake_backbone_file(name, folder):
    import mxnet as mx
    from gluoncv.model_zoo import get_model
    from gluoncv.model_zoo.ssd.vgg_atrous import vgg16_atrous_300

    net = vgg16_atrous_300() if name == "vgg16_atrous" else get_model(name, pretrained=False)
    net.infer_shape(mx.nd.zeros((1, 3, 300, 300) if name == "vgg16_atrous" else (1, 3, 64, 64)))
    net.initialize()
    mx.random.seed(7)
    arrays = {key: mx.nd.random.uniform(0.5, 1.5, p.shape) for key, p in net._collect_params_with_prefix().items()
              if not (name == "vgg16_atrous" and key.startswith("extras."))}  # SSD's own layers: not in the file
    path = folder / f"{name}-fake.params"
    mx.nd.save(str(path), arrays)
    return path, {k: v.asnumpy() for k, v in arrays.items()}


@pytest.mark.parametrize("model_name", ZOO_MODELS)
def test_builds_from_a_local_pretrained_base_file(model_name, fake_backbone):
    from gluondet.models import build_model

    backbone, left_out = BACKBONES[model_name]
    path, arrays = fake_backbone(backbone)
    net = build_model(resolve_model_config(model_name), ["a", "b"], pretrained_base=path)
    loaded = {p.data().asnumpy().tobytes() for p in net.collect_params().values() if p._data is not None}
    expected = {k: v for k, v in arrays.items() if not k.startswith(left_out)}
    missing = [k for k, v in expected.items() if v.tobytes() not in loaded]
    assert len(expected) > 20 and not missing, missing[:5]


def test_tiny_ssd_refuses_a_pretrained_base_file(tmp_path):
    from gluondet.errors import GluondetError
    from gluondet.models import build_model

    weights = tmp_path / "w.params"
    weights.write_bytes(b"")
    with pytest.raises(GluondetError, match="no pretrained backbone"):
        build_model(resolve_model_config("tiny_ssd"), ["a"], pretrained_base=weights)


# ----------------------------------------------------------------------------- from scratch, --init-from
@pytest.mark.parametrize("model_name, data_shape", [
    ("tiny_ssd", 96),
    ("ssd_512_mobilenet1.0", 256),  # both SSD512 backbones keep every feature map at 256 px
    ("ssd_512_resnet50_v1", 256),
    ("faster_rcnn_resnet101_v1d", 256),
    ("yolo3_mobilenet0.25", 96),  # its recipe's options: mixup, random sides 320-608 in training
])
def test_trains_from_scratch_evaluates_and_inits_another_run(model_name, data_shape, micro_voc, tmp_path):
    model = _few_rois(model_name, tmp_path) if model_name.startswith("faster_rcnn") else model_name
    run_dir = tmp_path / "run"
    result = _cli(["train", "--dataset", micro_voc, "--model", model, "--no-pretrained-base",
                   "--epochs", 1, "--max-iters", 1, "--batch-size", 2, "--data-shape", data_shape,
                   "--num-workers", 0, "--out", run_dir])
    assert result.exit_code == 0, result.stderr
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and "nan" not in rows[1].lower()
    assert eval_json(run_dir, tmp_path / "ap.json")["images"] == 3

    # --init-from the run: the backbone continues from its weights, classes reset to the new list
    from gluondet.models.pretrained import init_from

    classes = (run_dir / "classes.txt").read_text().split()
    model_cfg = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]
    net = init_from(run_dir / "best.params", model_cfg, classes[::-1] + ["new"], source_classes=classes)
    saved = {v.asnumpy().tobytes() for v in _load(run_dir / "best.params").values()}
    own = [p for p in net.collect_params().values() if p._data is not None and p.grad_req != "null"]
    kept = [p for p in own if p.data().asnumpy().tobytes() in saved]
    assert len(kept) > 0.8 * len(own)


def _load(path):
    import mxnet as mx

    return mx.nd.load(str(path))


# ----------------------------------------------------------------------------- family x devices
@pytest.mark.parametrize("family, ctx, batch_size", [
    ("ssd", "cpu", 2),
    ("ssd", "cpu0,cpu1", 3),  # one device gets one image more
    ("faster_rcnn", "cpu0,cpu1", 3),  # 2 images on cpu(0) one after the other, 1 on cpu(1)
])
def test_family_trains_evaluates_and_detects_on_its_devices(family, ctx, batch_size, micro_voc, tmp_path):
    if family == "ssd":
        model, data_shape = "tiny_ssd", 96
    else:
        model, data_shape = _few_rois("faster_rcnn_resnet50_v1b", tmp_path), 256
    run_dir = tmp_path / "run"
    result = _cli(["train", "--dataset", micro_voc, "--model", model, "--ctx", ctx, "--no-pretrained-base",
                   "--epochs", 1, "--max-iters", 1, "--batch-size", batch_size, "--data-shape", data_shape,
                   "--num-workers", 0, "--out", run_dir])
    assert result.exit_code == 0, result.stderr
    # config.yaml says what ran: the batch asked for, on the devices asked for
    train = yaml.safe_load((run_dir / "config.yaml").read_text())["train"]
    assert train["batch_size"] == batch_size and train["ctx"] == ctx
    assert f"batch {batch_size}" in result.stdout + result.stderr

    scores = eval_on_devices(run_dir, ctx, tmp_path)
    assert scores[ctx]["map"] == scores["cpu"]["map"] and scores[ctx]["per_class"] == scores["cpu"]["per_class"]

    found = {}
    images = sorted((micro_voc / "JPEGImages").iterdir())[:3]  # batches of 2: the last one padded
    for devices in dict.fromkeys([ctx, "cpu"]):
        out = tmp_path / f"det-{devices}.json"
        result = _cli(["detect", *images, "--run", run_dir, "--which", "last", "--ctx", devices,
                       "--thresh", 0.0, "--batch-size", 2, "--no-draw", "--json", out, "-q"])
        assert result.exit_code == 0, result.stderr
        found[devices] = json.loads(out.read_text())["images"]
    assert len(found[ctx]) == 3 and sum(len(im["boxes"]) for im in found[ctx]) > 0
    for one, two in zip(found["cpu"], found[ctx]):
        assert one["file"] == two["file"]
        assert [b["class"] for b in one["boxes"]] == [b["class"] for b in two["boxes"]]
        np.testing.assert_allclose([b["bbox"] for b in two["boxes"]], [b["bbox"] for b in one["boxes"]],
                                   atol=0.02)


def test_eval_of_a_trained_run_on_two_devices_equals_one(trained_tiny_run, tmp_path):
    scores = []
    for ctx in ("cpu", "cpu0,cpu1"):
        out = tmp_path / f"{ctx}.json"
        result = _cli(["eval", trained_tiny_run, "--split", "val", "--ctx", ctx, "--batch-size", 7,
                       "--json", out, "--num-workers", 0])
        assert result.exit_code == 0, result.stderr
        scores.append(json.loads(out.read_text()))
    assert scores[0]["map"] > 0.05  # a trained network: the comparison means something
    assert scores[1]["map"] == pytest.approx(scores[0]["map"], abs=1e-9)
    assert scores[1]["per_class"] == pytest.approx(scores[0]["per_class"], abs=1e-9)


def test_int8_export_on_two_devices_calibrates_as_on_one(trained_tiny_run, tmp_path):
    """export --int8 loads the run on --ctx and calibrates on the CPU: the same INT8 model either way."""
    import mxnet as mx

    def without_prefix(text):  # names carry the network instance's prefix (ssd1_, ssd2_)
        return re.sub(r"ssd\d+_", "ssd_", text)

    graphs, weights = {}, {}
    for ctx in ("cpu", "cpu0,cpu1"):
        out = tmp_path / ctx.replace(",", "_")
        result = _cli(["export", trained_tiny_run, "--int8", "--calib-images", 8, "--ctx", ctx, "--out", out])
        assert result.exit_code == 0, result.stderr
        nodes = json.loads((out / "model-symbol.json").read_text())["nodes"]
        graphs[ctx] = [(n["op"], (n.get("attrs") or {}).get("min_calib_range"),
                        (n.get("attrs") or {}).get("max_calib_range")) for n in nodes]
        weights[ctx] = {without_prefix(k): v.asnumpy() for k, v in mx.nd.load(str(out / "model-0000.params")).items()}
    assert any(low is not None for _, low, _ in graphs["cpu"])  # calibrated ranges live in the graph
    assert graphs["cpu0,cpu1"] == graphs["cpu"]
    assert sorted(weights["cpu0,cpu1"]) == sorted(weights["cpu"])
    for name, value in weights["cpu"].items():
        np.testing.assert_array_equal(weights["cpu0,cpu1"][name], value, err_msg=name)
