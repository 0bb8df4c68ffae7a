"""The run folder: creating one, metadata that travels with the weights, reading it back, and the
clear errors for damaged files (truncated weights, a class list that disagrees with them)."""
import json

import mxnet as mx
import numpy as np
import pytest

from gluondet.engine.metrics_log import read_metrics, write_metrics
from gluondet.errors import GluondetError
from gluondet.run_folder import RunFolder, read_json, write_json

CLASSES = ["helmet", "head", "person wearing vest"]
MODEL = {"name": "tiny_ssd", "family": "ssd", "builder": "tiny_ssd", "data_shape": 64}


def _run(tmp_path, classes=CLASSES, weights_classes=None):
    """A run folder with config, classes and best.params of a tiny SSD for ``weights_classes``."""
    from gluondet.models import build_model

    run = RunFolder.create(tmp_path / "run")
    run.write_info({"model": MODEL, "train": {"lr": 0.1}}, classes)
    net = build_model(MODEL, weights_classes or classes, pretrained_base=False)
    net(mx.nd.zeros((1, 3, 64, 64)))
    run.save_params(net, "best.params")
    run.unlock()
    return run, net


def test_an_explicit_out_with_a_run_in_it_is_refused(tmp_path):
    RunFolder.create(tmp_path / "new").unlock()
    (tmp_path / "old").mkdir()
    RunFolder.create(tmp_path / "old").unlock()  # empty: fine
    (tmp_path / "old" / "last.params").write_bytes(b"x")
    with pytest.raises(GluondetError, match="--resume"):
        RunFolder.create(tmp_path / "old")


def test_class_names_round_trip_exactly(tmp_path):
    run = RunFolder.create(tmp_path / "run")
    run.write_info({"model": MODEL}, CLASSES + ["Kopfbedeckung ü", "安全帽"])
    assert RunFolder.open(run.path).classes == CLASSES + ["Kopfbedeckung ü", "安全帽"]


def test_weights_are_refused_without_classes_or_config(tmp_path):
    (tmp_path / "best.params").write_bytes(b"x")
    with pytest.raises(GluondetError, match="config.yaml or classes.txt"):
        RunFolder.open(tmp_path)
    with pytest.raises(GluondetError, match="best.params: no config.yaml or classes.txt beside it"):
        RunFolder.open(tmp_path / "best.params")


def test_missing_weights_are_named_with_how_to_get_them(tmp_path):
    run = RunFolder.create(tmp_path / "run")
    run.write_info({"model": MODEL}, CLASSES)
    with pytest.raises(GluondetError, match="best.params: missing .*--which last"):
        run.weights("best")
    with pytest.raises(GluondetError, match="epoch_0003.params: missing .*--save-interval"):
        run.weights(3)
    (run / "epoch_0002.params").write_bytes(b"x")
    with pytest.raises(GluondetError, match="kept epochs: 2"):
        run.weights(3)
    assert run.weights(2) == run / "epoch_0002.params"


def test_load_network_rebuilds_the_network_with_its_weights(tmp_path):
    run, net = _run(tmp_path)
    x = mx.nd.random.uniform(shape=(1, 3, 64, 64))
    loaded, params = RunFolder.open(run.path).load_network()
    assert params == run / "best.params" and list(loaded.classes) == CLASSES
    np.testing.assert_allclose(loaded(x)[1].asnumpy(), net(x)[1].asnumpy(), rtol=1e-5, atol=1e-6)


def test_load_network_on_two_contexts(tmp_path):
    run, net = _run(tmp_path)
    loaded, _ = RunFolder.open(run.path).load_network(ctx=[mx.cpu(0), mx.cpu(1)])
    x = mx.nd.random.uniform(shape=(1, 3, 64, 64))
    for ctx in (mx.cpu(0), mx.cpu(1)):
        np.testing.assert_allclose(loaded(x.as_in_context(ctx))[1].asnumpy(), net(x)[1].asnumpy(),
                                   rtol=1e-5, atol=1e-6)


def test_a_class_list_that_disagrees_with_the_weights_names_classes_txt(tmp_path):
    run, _ = _run(tmp_path, classes=CLASSES, weights_classes=CLASSES[:2])
    with pytest.raises(GluondetError, match=r"classes.txt: lists 3 classes, but .*best.params was trained "
                                            r"for another number of classes"):
        RunFolder.open(run.path).load_network()


def test_truncated_weights_are_called_damaged(tmp_path):
    run, _ = _run(tmp_path)
    data = (run / "best.params").read_bytes()
    (run / "best.params").write_bytes(data[: len(data) // 3])
    with pytest.raises(GluondetError, match="best.params: damaged or truncated"):
        RunFolder.open(run.path).load_network()


def test_weights_of_another_network_say_so(tmp_path):
    run, _ = _run(tmp_path)
    mx.nd.save(str(run / "best.params"), {"something.weight": mx.nd.zeros((2, 2))})
    with pytest.raises(GluondetError, match="weights of another network"):
        RunFolder.open(run.path).load_network()


def test_json_writes_are_atomic_and_damage_is_named(tmp_path):
    write_json(tmp_path / "last.json", {"epoch": 3, "best_map": None})
    assert json.loads((tmp_path / "last.json").read_text()) == {"epoch": 3, "best_map": None}
    assert read_json(tmp_path / "last.json")["epoch"] == 3
    with pytest.raises(GluondetError, match="missing"):
        read_json(tmp_path / "nope.json")
    (tmp_path / "half.json").write_text('{"epoch": ')
    with pytest.raises(GluondetError, match="half.json: damaged"):
        read_json(tmp_path / "half.json")


def test_metrics_csv_is_a_view_of_the_history_with_growing_columns(tmp_path):
    path = tmp_path / "metrics.csv"
    history = [{"epoch": 1, "lr": 0.1, "seconds": 2.0, "images_per_sec": 5.0, "loss": 3.0},
               {"epoch": 2, "lr": 0.1, "seconds": 2.0, "images_per_sec": 5.0, "loss": 2.0,
                "val_map": 0.5, "ap/helmet": 0.4},
               {"epoch": 3, "lr": 0.01, "seconds": 2.0, "images_per_sec": 5.0, "loss": 1.0}]
    write_metrics(path, history)
    rows = read_metrics(path)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[2]["lr"] == "0.01" and rows[2]["val_map"] == "" and rows[1]["ap/helmet"] == "0.4"
