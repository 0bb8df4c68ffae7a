"""A COCO root folder made by gluondet data convert trains and evaluates; --metric coco records the
12 COCO numbers every validation; --lr-step-every decays the lr; training on its validation
images says so."""
import json

import pytest

from cli_helpers import TINY_YAML, invoke_cli

pytestmark = pytest.mark.slow

COCO_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _cli(*args):
    return invoke_cli(args)


def _tensorboard_scalars(folder):
    """{tag: [(step, value)]} from the event files (TFRecord framing, tensorboardX's Event proto)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    scalars = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_coco_root_trains_with_coco_numbers_and_evaluates(tmp_path):
    from gluondet.data.convert import convert_dataset
    from gluondet.data.synth import write_shapes_voc
    from gluondet.engine.metrics_log import read_metrics

    voc = write_shapes_voc(tmp_path / "voc", n_train=8, n_val=4, seed=3, size=96)
    convert_dataset("voc", voc, tmp_path / "coco", "coco")  # instances_{train,val,test,trainval}.json
    model = tmp_path / "tiny.yaml"
    model.write_text(TINY_YAML)
    run = tmp_path / "run"
    result = _cli("train", "--dataset", tmp_path / "coco", "--model", model, "--num-workers", 0,
                  "--epochs", 2, "--max-iters", 1, "--metric", "coco", "--lr-step-every", 1,
                  "--lr-decay", 0.5, "--log-every", 1, "--out", run)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "warning:" not in result.stderr  # train and val are apart: no overlap warning
    rows = read_metrics(run / "metrics.csv")
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.02, 0.01])
    for row in rows:
        assert all(f"coco/{n}" in row for n in COCO_NAMES) and float(row["coco/AP"]) == float(row["val_map"])
    scalars = _tensorboard_scalars(run / "tb")
    assert [step for step, _ in scalars["iter/lr"]] == [1, 2]  # one point per iteration (--max-iters 1)
    assert [v for _, v in scalars["iter/lr"]] == pytest.approx([0.02, 0.01])
    assert "iter/cls_loss" in scalars and [s for s, _ in scalars["coco/AP50"]] == [1, 2]
    result = _cli("eval", run, "--dataset", tmp_path / "coco", "--split", "val", "--json", tmp_path / "e.json")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    scores = json.loads((tmp_path / "e.json").read_text())
    assert scores["metric"] == "coco" and set(scores["coco"]) == set(COCO_NAMES)

    result = _cli("train", "--dataset", tmp_path / "coco", "--model", model, "--num-workers", 0,
                  "--epochs", 1, "--max-iters", 1, "--val-split", "train", "--out", tmp_path / "run2")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "warning: the validation images are the training images" in result.stderr
