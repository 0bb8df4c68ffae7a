"""gluondet train end to end: zoo models on CPU, multi-context, resume, best checkpoint, NaN guard.

Kept small: a micro shapes dataset (a few images), --max-iters, and the tiny SSD for everything
that is about the loop rather than a particular network.
"""
import json

import numpy as np
import pytest
import yaml

from gluondet.config import resolve_model_config

from cli_helpers import TINY_YAML, invoke_cli

pytestmark = pytest.mark.slow



def _cli(args, env=None):
    return invoke_cli(args, env=env)


def _csv_rows(run_dir):
    from gluondet.engine.metrics_log import read_metrics

    return read_metrics(run_dir / "metrics.csv")


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory):
    """A tiny SSD config of the loop tests' own, independent of the demo's tuned tiny_ssd.yaml."""
    path = tmp_path_factory.mktemp("models") / "loop_tiny_ssd.yaml"
    path.write_text(TINY_YAML, encoding="utf-8")
    return path


@pytest.fixture
def TINY(tiny_yaml):
    return ["--model", tiny_yaml, "--num-workers", "0"]


@pytest.fixture(scope="module")
def micro_voc(tmp_path_factory):
    """8 train and 2 val images of coloured shapes (seed 3: every one has objects)."""
    from gluondet.data.synth import write_shapes_voc

    return write_shapes_voc(tmp_path_factory.mktemp("micro") / "micro_voc", n_train=8, n_val=2,
                            seed=3, size=96)


def _one_batch(model_name, dataset_root, batch_size, data_shape, lr=None):
    """A network (random init), its step, trainer and one fixed training batch."""
    from gluondet.config import resolve_dataset, resolve_model_config, resolve_train_config
    from gluondet.data import load_dataset
    from gluondet.engine.train import make_optimizer
    from gluondet.families import family_of
    from gluondet.models import build_model

    model_cfg = dict(resolve_model_config(model_name), data_shape=data_shape)
    config = resolve_train_config(model_cfg, {"warmup_epochs": 0, "lr": lr})
    family = family_of(model_cfg)
    ds = load_dataset(resolve_dataset(str(dataset_root)), "train")
    import mxnet as mx

    mx.random.seed(0)
    np.random.seed(0)
    net = build_model(model_cfg, ds.classes, pretrained_base=False)
    loader = family.train_loader(net, ds, data_shape, batch_size, 0)
    batch = next(iter(loader))
    trainer = make_optimizer(net, family, config, "device")
    family.hybridize_for_training(net)
    return net, family.make_step(), trainer, batch, config


# The shipped Faster R-CNN config with fewer RoIs: the R-CNN head runs ResNet's last stage on every
# RoI, 300 of them per image at test time, which costs ~15 s per image on 2 busy cores.
FEW_ROIS_YAML = """\
family: faster_rcnn
builder: faster_rcnn_resnet50_v1b_custom
data_shape: 256
kwargs: {rpn_test_post_nms: 16, num_sample: 32}
"""


@pytest.mark.parametrize("model_name, data_shape", [
    ("ssd_512_vgg16_atrous", 300),  # 300 px keeps it quick on CPU; all 7 SSD512 feature maps exist
    ("ssd_300_vgg16_atrous", 300),
    ("faster_rcnn_resnet50_v1b", 256),  # shorter side: small, still above the 225 px its 2000 training proposals need
])
def test_zoo_model_loss_falls_and_eval_accepts_its_run(model_name, data_shape, micro_voc, tmp_path):
    import mxnet as mx

    if model_name.startswith("faster_rcnn"):
        base = resolve_model_config(model_name)
        few = tmp_path / "faster_rcnn_resnet50_v1b_few_rois.yaml"
        few.write_text(FEW_ROIS_YAML, encoding="utf-8")
        assert yaml.safe_load(FEW_ROIS_YAML)["builder"] == base["builder"]
        model_name = few

    # Falling, robustly: repeated steps on one fixed batch must lower the loss (Faster R-CNN
    # samples anchors and RoIs at random, so compare averages of two steps too). The VGG SSDs from
    # scratch without warm-up swing at their configured lr 0.001 (measured: 114, 1029, 404, 40,
    # 173 for SSD512, which is why their configs warm up): the test steps them at 0.0002.
    ssd = step_is_ssd(str(model_name))
    net, step, trainer, batch, config = _one_batch(model_name, micro_voc, 2 if ssd else 1, data_shape,
                                                   lr=0.0002 if ssd else None)
    losses = []
    for _ in range(5):
        values = step(net, batch, [mx.cpu()])
        assert all(np.isfinite(v) for v in values.values()), values
        losses.append(sum(values.values()))
        trainer.step(step.step_batch_size(batch))
    assert np.mean(losses[-2:]) < np.mean(losses[:2]) and losses[-1] < losses[0], losses

    # The real command: a few iterations, a run folder, and eval accepts it.
    run_dir = tmp_path / "run"
    result = _cli(["train", "--dataset", micro_voc, "--model", model_name, "--no-pretrained-base",
                   "--epochs", 1, "--max-iters", 2, "--batch-size", 2, "--data-shape", data_shape,
                   "--num-workers", 0, "--out", run_dir])
    assert result.exit_code == 0, result.stderr
    for name in ("config.yaml", "classes.txt", "best.params", "best.json", "last.params", "last.states",
                 "last.json", "metrics.csv", "curves.png"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tb").iterdir())
    rows = _csv_rows(run_dir)
    assert len(rows) == 1 and np.isfinite(float(rows[0]["val_map"]))
    result = _cli(["eval", run_dir, "--split", "val", "--json", tmp_path / "ap.json", "--num-workers", 0])
    assert result.exit_code == 0, result.stderr
    doc = json.loads((tmp_path / "ap.json").read_text())
    assert list(doc["per_class"]) == (run_dir / "classes.txt").read_text().split()
    # eval of best.params on the val split is the validation training logged (undefined counts as 0)
    assert (doc["map"] or 0.0) == pytest.approx(float(rows[0]["val_map"]), abs=1e-6)


def step_is_ssd(model_name):
    return "ssd" in model_name


def test_two_contexts_split_the_batch_and_agree_with_one(micro_voc, tiny_yaml, TINY, tmp_path):
    import mxnet as mx

    net, step, trainer, batch, _ = _one_batch(tiny_yaml, micro_voc, 4, 64)
    halves = [[part[:2] for part in batch], [part[2:] for part in batch]]
    # Each half alone on one device (BatchNorm sees the same 2 images as on that device below);
    # SSD's loss is normalized by the positives of the whole batch, so re-weight by positives.
    alone = [step(net, half, [mx.cpu(0)]) for half in halves]
    positives = [float((half[1] > 0).sum().asscalar()) for half in halves]
    net.collect_params().reset_ctx([mx.cpu(0), mx.cpu(1)])
    split = step(net, batch, [mx.cpu(0), mx.cpu(1)])
    for name in split:
        expected = sum(a[name] * p for a, p in zip(alone, positives)) / sum(positives)
        assert split[name] == pytest.approx(expected, rel=1e-4), (name, alone, split)

    run_dir = tmp_path / "run"
    result = _cli(["train", "--dataset", micro_voc, *TINY, "--ctx", "cpu0,cpu1", "--batch-size", 4,
                   "--epochs", 1, "--max-iters", 2, "--out", run_dir])
    assert result.exit_code == 0, result.stderr
    assert "cpu(0), cpu(1)" in result.stdout + result.stderr
    assert (run_dir / "best.params").is_file()


def test_training_graph_survives_a_validation(micro_voc, tiny_yaml):
    """Known trap: a hybridized SSD keeps the graph it traced first; after validation (predict
    mode) the training step silently ran the predict graph until hybridize() was called again."""
    import mxnet as mx

    from gluondet.config import resolve_dataset
    from gluondet.data import load_dataset
    from gluondet.families import get_family
    from gluondet.engine.validation import validate

    net, step, _, batch, _ = _one_batch(tiny_yaml, micro_voc, 4, 64)
    before = step(net, batch, [mx.cpu()])
    ds = load_dataset(resolve_dataset(str(micro_voc)), "val", classes=list(net.classes))
    result = validate(net, get_family("ssd"), get_family("ssd").val_loader(net, ds, 64, 2, 0), [mx.cpu()], "voc", list(net.classes),
                      progress=False)
    assert list(result["per_class"]) == list(net.classes)
    after = step(net, batch, [mx.cpu()])  # no trainer.step in between: same weights
    for name in before:
        assert after[name] == pytest.approx(before[name], rel=1e-4), (before, after)


def test_resume_continues_with_lr_epoch_and_best_map(micro_voc, TINY, tmp_path, monkeypatch):
    import gluondet.engine.hooks as hooks
    import gluondet.engine.train as engine

    # Scripted validation matches nothing, so the end-of-training analysis has nothing to keep.
    monkeypatch.setattr(hooks.EvalReport, "after_epoch", lambda self: None)
    # Scripted mAPs: 0.5, 0.3, then 0.4 after the resume, which beats nothing if the best carried over.
    scripted = iter([0.5, 0.3, 0.4])
    monkeypatch.setattr(engine, "validate",
                        lambda *a, **k: {"map": next(scripted), "per_class": {}, "metric": "voc"})
    run_dir = tmp_path / "run"
    common = ["--lr", 0.02, "--lr-steps", 2, "--lr-decay", 0.1, "--max-iters", 2, "--batch-size", 4]
    result = _cli(["train", "--dataset", micro_voc, *TINY, *common, "--epochs", 2, "--out", run_dir])
    assert result.exit_code == 0, result.stderr
    last = json.loads((run_dir / "last.json").read_text())
    best = json.loads((run_dir / "best.json").read_text())
    assert last["epoch"] == 2 and last["lr"] == pytest.approx(0.02)
    assert best == {"epoch": 1, "map": 0.5, "metric": "voc"}
    states_before = (run_dir / "last.states").read_bytes()

    result = _cli(["train", "--resume", run_dir, "--epochs", 3])
    assert result.exit_code == 0, result.stderr
    assert "epochs 3..3" in result.stdout + result.stderr
    rows = _csv_rows(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[2]["lr"]) == pytest.approx(0.002)  # epoch index 2 >= lr step 2: decayed once
    last = json.loads((run_dir / "last.json").read_text())
    assert last["epoch"] == 3
    # The best mAP carried over: epoch 3's 0.4 does not beat epoch 1's 0.5 (a reset best would take it).
    assert float(rows[2]["val_map"]) == pytest.approx(0.4)
    assert json.loads((run_dir / "best.json").read_text()) == best
    assert (run_dir / "last.states").read_bytes() != states_before  # optimizer state moved on
    result = _cli(["train", "--dataset", micro_voc, *TINY, "--epochs", 1, "--out", run_dir])
    assert result.exit_code == 2 and "--resume" in result.stderr  # never overwrites a run


# Best-only-on-improvement, the NaN guard, Ctrl-C / SIGTERM and patience are unit-tested with a toy
# network in tests/unit/test_trainer.py; tests/integration/test_crash.py stops real runs.


def test_offline_pretrained_base_is_one_clear_message(micro_voc, tmp_path, monkeypatch):
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxnet_home"))
    result = _cli(["train", "--dataset", micro_voc, "--model", "ssd_300_vgg16_atrous", "--out", tmp_path / "run"])
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("gluondet: error")]
    assert len(errors) == 1  # one line; an earlier "classes found in the labels" note may precede it
    message = errors[0]
    assert "vgg16_atrous" in message and str(tmp_path / "mxnet_home" / "models") in message
    assert "--pretrained-base PATH" in message and "--no-pretrained-base" in message
    assert not (tmp_path / "run").exists()  # a start that failed leaves no half run folder behind


def test_pretrained_base_path_is_loaded_into_the_backbone(micro_voc, tmp_path):
    """--pretrained-base PATH: the backbone starts from that file, not from random weights."""
    import mxnet as mx

    from gluondet.config import resolve_model_config
    from gluondet.models import build_model

    from gluoncv.model_zoo import get_model

    backbone = get_model("mobilenet1.0", pretrained=False)
    backbone.initialize(mx.init.Constant(0.0123))
    backbone(mx.nd.zeros((1, 3, 224, 224)))
    weights = tmp_path / "mobilenet1.0-custom.params"
    backbone.save_parameters(str(weights))
    net = build_model(resolve_model_config("ssd_512_mobilenet1.0"), ["a", "b"], pretrained_base=str(weights))
    first_conv = [p for name, p in net.collect_params().items() if name.endswith("conv0_weight")][0]
    assert np.allclose(first_conv.data().asnumpy(), 0.0123)


# Measured: the shared tiny SSD run of integration/conftest.py (800 images, 12 epochs at 192 px, the
# tiny_ssd.yaml recipe) reached val VOC mAP (area) 0.49 here (shared, loaded machine); the floor sits
# at half of it, so noise does not fail it, and far above what an untrained or broken loop gives
# (< 0.01: 0.000-0.004 measured after 1-2 epochs, and with the predict graph left in place after
# validation).
TINY_MAP_FLOOR = 0.25


def test_tiny_ssd_learns_the_shapes(trained_tiny_run):
    rows = _csv_rows(trained_tiny_run)
    losses = [float(r["cls_loss"]) + float(r["box_loss"]) for r in rows]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:2]), losses
    best = json.loads((trained_tiny_run / "best.json").read_text())
    assert best["map"] >= TINY_MAP_FLOOR, best
    # a healthy run never trips the divergence guard: no step skipped, no rollback
    last = json.loads((trained_tiny_run / "last.json").read_text())
    assert last["rollbacks"] == [] and not any(row.get("skipped_steps") for row in last["history"])
    assert not (trained_tiny_run / "diagnosis.json").exists()  # nor is it called out as not learning


def test_init_from_a_run_keeps_the_backbone_and_resets_the_classes(micro_voc, tiny_yaml, tmp_path):
    import mxnet as mx

    from gluondet.models import build_model
    from gluondet.models.pretrained import init_from
    from gluondet.run_folder import RunFolder

    model_cfg = yaml.safe_load(TINY_YAML)
    source = build_model(model_cfg, ["circle", "square", "triangle"], pretrained_base=False)
    source(mx.nd.zeros((1, 3, 64, 64)))
    run = RunFolder.create(tmp_path / "run")
    run.write_info({"model": model_cfg}, ["circle", "square", "triangle"])
    run.save_params(source, "best.params")

    net = init_from(run / "best.params", model_cfg, ["triangle", "star", "circle"],
                    source_classes=RunFolder.open(run.path).classes)
    assert list(net.classes) == ["triangle", "star", "circle"]
    ids, scores, boxes = net(mx.nd.zeros((1, 3, 64, 64)))  # a working detector for the new classes
    assert ids.asnumpy().max() <= 2
    source_params = {k.split("_", 1)[1]: v for k, v in source.collect_params().items()}
    shared = 0
    for name, param in net.collect_params().items():
        key = name.split("_", 1)[1]
        if "features" in key or "stages" in key:
            np.testing.assert_array_equal(param.data().asnumpy(), source_params[key].data().asnumpy())
            shared += 1
    assert shared > 5


def test_bad_numbers_and_finished_runs_are_refused_up_front(micro_voc, TINY, tmp_path):
    for flag, value in (("--lr", "inf"), ("--lr", "nan"), ("--wd", "-inf")):
        result = _cli(["train", "--dataset", micro_voc, *TINY, flag, value, "--out", tmp_path / "bad"])
        assert result.exit_code == 2 and f"{flag} must be a finite number" in result.stderr, result.stderr
        assert not (tmp_path / "bad").exists()
    run_dir = tmp_path / "run"
    result = _cli(["train", "--dataset", micro_voc, *TINY, "--epochs", 1, "--max-iters", 1, "--batch-size", 2,
                   "--out", run_dir])
    assert result.exit_code == 0, result.stderr
    result = _cli(["train", "--resume", run_dir])
    assert result.exit_code == 2 and "finished all 1 epochs" in result.stderr and "--epochs 11" in result.stderr

    states = run_dir / "last.states"
    states.write_bytes(states.read_bytes()[:100])
    result = _cli(["train", "--resume", run_dir, "--epochs", 2])
    assert result.exit_code == 2 and "last.states: missing or damaged" in result.stderr, result.stderr
    assert "--init-from" in result.stderr and "Traceback" not in result.stderr


def test_clip_grad_norm_trains_through_the_cli_on_two_devices(micro_voc, TINY, tmp_path):
    """--clip-grad-norm through the real set-up (the precision's loss scale, the optimizer's summed
    gradients on cpu0,cpu1): it trains, and a tight norm changes the weights it ends with."""
    import mxnet as mx

    ends = {}
    for name, extra in (("clipped", ["--clip-grad-norm", "0.01"]), ("free", [])):
        run_dir = tmp_path / name
        result = _cli(["train", "--dataset", micro_voc, *TINY, "--ctx", "cpu0,cpu1", "--batch-size", 4,
                       "--epochs", 1, "--max-iters", 2, "--out", run_dir, *extra])
        assert result.exit_code == 0, result.stderr
        ends[name] = {k: v.asnumpy() for k, v in mx.nd.load(str(run_dir / "last.params")).items()}
    assert yaml.safe_load((tmp_path / "clipped" / "config.yaml").read_text())["train"]["clip_grad_norm"] == 0.01
    assert any(not np.allclose(ends["clipped"][k], ends["free"][k]) for k in ends["free"])
