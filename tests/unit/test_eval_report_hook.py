"""EvalReport: at the end of training, RUN/eval-val/ from the best epoch's own validation (no
re-evaluation) and RUN/report.html; nothing on Ctrl-C. A toy network through the real Trainer."""
import json

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon
from test_trainer import ITERS, ToyLoader, ToyStep, toy_net

from gluondet.data.base import DetectionDataset
from gluondet.engine import hooks as H
from gluondet.engine.trainer import Trainer, TrainingStopped
from gluondet.eval.results import metric_result
from gluondet.families import get_family
from gluondet.run_folder import RunFolder

BOXES = np.array([[4, 4, 20, 20, 0, 0], [30, 30, 50, 50, 1, 0]], np.float32)


@pytest.fixture
def setup(tmp_path):
    from PIL import Image

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"img{i}.png")
        Image.new("RGB", (64, 64), (40 * i, 90, 160)).save(paths[-1])
    dataset = DetectionDataset(["a", "b"], paths, [f"img{i}" for i in range(3)], [(64, 64)] * 3,
                               [BOXES] * 3, name="toy")
    run = RunFolder.create(tmp_path / "run")
    run.write_info({"model": {"name": "toy", "family": "ssd"}, "dataset": {"name": "toy"}}, ["a", "b"])
    yield run, dataset
    run.unlock()


def _trainer(run, dataset, found, stop_at=None):
    """Epoch k's validation finds ``found[k]`` of the two objects in every image."""
    report = H.EvalReport(run, dataset, "val", get_family("ssd"), 64, "voc", ["a", "b"])
    per_epoch = iter(found)

    def validate(guard):
        metric, k = report.new_metric(), next(per_epoch)
        for _ in guard(range(len(dataset))):
            dets = BOXES[:k] if k else np.array([[0, 0, 8, 8, 1, 0]], np.float32)
            metric.update(dets[None, :, :4], dets[None, :, 4], np.full((1, len(dets)), 0.9),
                          BOXES[None, :, :4], BOXES[None, :, 4], BOXES[None, :, 5])
        return metric_result(metric)

    net = toy_net()
    optimizer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    step = ToyStep(on_step=stop_at)
    hooks = [H.Validation(validate, 1), H.BestScore(), H.Checkpointer(run, 0.1, "voc"), report]
    return Trainer(net, ToyLoader(), step, optimizer, [mx.cpu()], hooks, lambda e, i: 0.1,
                   len(found), ITERS)


def test_the_best_epochs_matches_become_the_eval_folder_and_the_page(setup):
    run, dataset = setup
    trainer = _trainer(run, dataset, found=[1, 2, 0])  # mAP 0.5, then 1.0 (best), then 0
    trainer.train()
    doc = json.loads((run.path / "eval-val" / "analysis.json").read_text(encoding="utf-8"))
    assert doc["result"]["epoch"] == 2 and doc["result"]["map"] == 1.0
    assert doc["analysis"]["map"] == 1.0
    best = json.loads((run.path / "best.json").read_text())
    assert best["epoch"] == 2 and best["map"] == doc["analysis"]["map"]
    assert [r["tp"] for r in doc["analysis"]["per_class"]] == [3, 3]
    page = (run.path / "report.html").read_text(encoding="utf-8")
    assert 'data-picture="eval-val/pr_curve.png"' in page and 'data-picture="eval-val/worst_01.jpg"' in page


def test_a_stopped_run_writes_no_report(setup):
    run, dataset = setup

    def interrupt(calls):
        if calls == ITERS + 1:  # in the second epoch, after the first validation
            raise KeyboardInterrupt

    trainer = _trainer(run, dataset, found=[2, 2, 2], stop_at=interrupt)
    with pytest.raises(TrainingStopped):
        trainer.train()
    assert not (run.path / "eval-val").exists() and not (run.path / "report.html").exists()
