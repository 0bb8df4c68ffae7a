"""The run folder: naming, atomic writes, metadata that travels with the weights, load_run."""
import json

import numpy as np
import pytest

from gluondet.engine import checkpoint
from gluondet.engine.logging import append_metrics_row, read_metrics
from gluondet.errors import GluondetError

CLASSES = ["helmet", "head", "person wearing vest"]
MODEL = {"name": "tiny_ssd", "family": "ssd", "builder": "tiny_ssd", "data_shape": 64}


def test_default_run_dir_never_reuses_a_folder(tmp_path):
    first = checkpoint.default_run_dir("helmet_voc", "ssd_512_vgg16_atrous", tmp_path)
    assert first == tmp_path / "helmet_voc-ssd_512_vgg16_atrous"
    first.mkdir()
    second = checkpoint.default_run_dir("helmet_voc", "ssd_512_vgg16_atrous", tmp_path)
    assert second.name == "helmet_voc-ssd_512_vgg16_atrous-2"
    second.mkdir()
    assert checkpoint.default_run_dir("helmet_voc", "ssd_512_vgg16_atrous", tmp_path).name.endswith("-3")


def test_explicit_out_with_a_run_in_it_is_refused(tmp_path):
    assert checkpoint.check_new_run_dir(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "old").mkdir()
    assert checkpoint.check_new_run_dir(tmp_path / "old")  # empty: fine
    (tmp_path / "old" / "last.params").write_bytes(b"x")
    with pytest.raises(GluondetError, match="--resume"):
        checkpoint.check_new_run_dir(tmp_path / "old")


def test_run_info_round_trip_keeps_class_names_exactly(tmp_path):
    checkpoint.write_run_info(tmp_path, {"model": MODEL, "train": {"lr": 0.1}}, CLASSES + ["Kopfbedeckung ü"])
    assert checkpoint.read_classes(tmp_path) == CLASSES + ["Kopfbedeckung ü"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_read_run_info_refuses_weights_without_classes_or_config(tmp_path):
    (tmp_path / "best.params").write_bytes(b"weights")
    with pytest.raises(GluondetError, match="config"):
        checkpoint.read_run_info(tmp_path)
    checkpoint.write_run_info(tmp_path, {"model": MODEL}, CLASSES)
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(GluondetError, match="classes"):
        checkpoint.read_run_info(tmp_path)


def test_read_run_info_names_the_missing_weights(tmp_path):
    checkpoint.write_run_info(tmp_path, {"model": MODEL}, CLASSES)
    with pytest.raises(GluondetError, match="best.params: missing"):
        checkpoint.read_run_info(tmp_path)
    (tmp_path / "epoch_0003.params").write_bytes(b"w")
    info = checkpoint.read_run_info(tmp_path, which=3)
    assert info.params.name == "epoch_0003.params" and info.family == "ssd" and info.data_shape == 64
    assert checkpoint.read_run_info(tmp_path / "epoch_0003.params").classes == CLASSES


def test_load_run_rebuilds_the_network_with_its_weights(tmp_path):
    import mxnet as mx

    from gluondet.models import build_model

    net = build_model(MODEL, CLASSES, pretrained_base=False)
    x = mx.nd.random.uniform(shape=(1, 3, 64, 64))
    expected = net(x)[1].asnumpy()  # scores
    checkpoint.write_run_info(tmp_path, {"model": MODEL}, CLASSES)
    checkpoint.save_params(net, tmp_path / "best.params")
    loaded, info = checkpoint.load_run(tmp_path)
    assert info.classes == CLASSES and info["family"] == "ssd" and list(loaded.classes) == CLASSES
    np.testing.assert_allclose(loaded(x)[1].asnumpy(), expected, rtol=1e-5, atol=1e-6)


def test_load_run_says_when_weights_do_not_fit(tmp_path):
    from gluondet.models import build_model

    net = build_model(MODEL, CLASSES[:2], pretrained_base=False)
    import mxnet as mx

    net(mx.nd.zeros((1, 3, 64, 64)))
    checkpoint.write_run_info(tmp_path, {"model": MODEL}, CLASSES)  # three classes: a mismatch
    checkpoint.save_params(net, tmp_path / "best.params")
    with pytest.raises(GluondetError, match="does not fit"):
        checkpoint.load_run(tmp_path)


def test_write_json_is_atomic_and_readable(tmp_path):
    checkpoint.write_json(tmp_path / "last.json", {"epoch": 3, "best_map": None})
    assert json.loads((tmp_path / "last.json").read_text()) == {"epoch": 3, "best_map": None}
    assert checkpoint.read_json(tmp_path / "last.json")["epoch"] == 3
    with pytest.raises(GluondetError, match="missing"):
        checkpoint.read_json(tmp_path / "nope.json")


def test_metrics_rows_gain_columns_and_resume_drops_abandoned_epochs(tmp_path):
    path = tmp_path / "metrics.csv"
    append_metrics_row(path, {"epoch": 1, "lr": 0.1, "seconds": 2.0, "images_per_sec": 5.0, "loss": 3.0})
    append_metrics_row(path, {"epoch": 2, "lr": 0.1, "seconds": 2.0, "images_per_sec": 5.0, "loss": 2.0,
                              "val_map": 0.5, "ap/helmet": 0.4})
    append_metrics_row(path, {"epoch": 3, "lr": 0.1, "seconds": 2.0, "images_per_sec": 5.0, "loss": 1.5})
    # resumed from epoch 2: the old epoch 3 row is replaced
    rows = append_metrics_row(path, {"epoch": 3, "lr": 0.01, "seconds": 2.0, "images_per_sec": 5.0, "loss": 1.0})
    assert [r["epoch"] for r in read_metrics(path)] == ["1", "2", "3"] == [str(r["epoch"]) for r in rows]
    last = read_metrics(path)[-1]
    assert last["lr"] == "0.01" and last["val_map"] == "" and read_metrics(path)[1]["ap/helmet"] == "0.4"
