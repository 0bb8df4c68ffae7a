"""A run that does not learn is called out (gluondet.engine.not_learning): the decision on generated
and measured histories, each likely-cause check on data with a known answer, the hook through the
real Trainer with the toy network, and the report page's warning."""
import json

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon
from test_trainer import ITERS, ToyLoader, ToyStep, toy_net

from gluondet.data.base import DetectionDataset
from gluondet.engine import hooks as H
from gluondet.engine import not_learning as NL
from gluondet.engine.trainer import Trainer
from gluondet.families import get_family
from gluondet.run_folder import DIAGNOSIS_FILE, RunFolder

LOSSES = ("cls_loss", "box_loss")

# The tiny SSD demo as it learns (gluondet train --model tiny_ssd --val-interval 1 --seed 0 on
# gluondet data synth --train 1000 --val 100: metrics.csv of its first 5 epochs).
HEALTHY_TINY_SSD = [
    {"epoch": 1, "lr": 0.05, "cls_loss": 5.15135, "box_loss": 2.27632, "val_map": 0.0283507},
    {"epoch": 2, "lr": 0.05, "cls_loss": 3.72585, "box_loss": 1.70013, "val_map": 0.160426},
    {"epoch": 3, "lr": 0.05, "cls_loss": 3.19187, "box_loss": 1.21671, "val_map": 0.283282},
    {"epoch": 4, "lr": 0.05, "cls_loss": 2.98626, "box_loss": 1.02208, "val_map": 0.313339},
    {"epoch": 5, "lr": 0.05, "cls_loss": 2.85420, "box_loss": 0.93257, "val_map": 0.377307},
]

# The same at lr 0.15, 3x the recipe's (the model YAML: 0.1 and 0.15 stalled at all-background).
STALLED_TINY_SSD = [
    {"epoch": 1, "lr": 0.15, "cls_loss": 5.14809, "box_loss": 2.40475, "val_map": 0.0117113},
    {"epoch": 2, "lr": 0.15, "cls_loss": 3.55813, "box_loss": 2.02694, "val_map": 0.00252863},
    {"epoch": 3, "lr": 0.15, "cls_loss": 3.49276, "box_loss": 1.99286, "val_map": 0.00174877},
    {"epoch": 4, "lr": 0.15, "cls_loss": 3.48005, "box_loss": 1.98317, "val_map": 0.00265202},
]


def history(epochs, per_epoch_drop, maps, start=6.0, val_every=1):
    """Rows whose total loss falls by ``per_epoch_drop`` (a fraction; negative: rises) each epoch,
    split 2:1 between the two losses; validation every ``val_every`` epochs scoring ``maps`` in turn."""
    rows, scores = [], iter(maps)
    for e in range(1, epochs + 1):
        total = start * (1 - per_epoch_drop) ** (e - 1)
        row = {"epoch": e, "lr": 0.05, "cls_loss": total * 2 / 3, "box_loss": total / 3}
        if e % val_every == 0:
            row["val_map"] = next(scores)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- the decision
def test_flat_losses_and_a_score_near_zero_are_not_learning():
    verdict = NL.not_learning(history(6, 0.003, [0.001, 0.0005, 0.001, 0.0, 0.001, 0.0008]), LOSSES)
    assert verdict["best_map"] == 0.001 and verdict["best_epoch"] == 1 and verdict["validations"] == 6
    assert verdict["loss_from"]["epoch"] == 4 and verdict["loss_to"]["epoch"] == 6  # the last 2 epochs
    assert verdict["loss_drop"] == pytest.approx(1 - 0.997 ** 2)
    line = NL.summary(verdict, "COCO mask AP")
    assert "best validation COCO mask AP 0.0010 (epoch 1) after 6 validation(s)" in line
    assert "cls_loss + box_loss" in line and "fell 0.6%" in line
    assert "stayed flat" in NL.summary(NL.not_learning(history(3, 0.0, [0.0] * 3), LOSSES))


def test_a_loss_that_rises_while_the_score_stays_at_zero_is_not_learning():
    verdict = NL.not_learning(history(5, -0.04, [0.0] * 5), LOSSES)
    assert verdict is not None and verdict["loss_drop"] < 0
    assert "rose" in NL.summary(verdict)


@pytest.mark.parametrize("per_epoch_drop, maps, why", [
    (0.003, [0.001, 0.004, 0.03], "the score reached the floor"),
    (0.15, [0.0, 0.001, 0.002], "the losses still fall fast"),
    (0.003, [0.5, 0.0, 0.0], "it learned once"),
])
def test_a_run_that_learns_or_still_improves_is_left_alone(per_epoch_drop, maps, why):
    assert NL.not_learning(history(3, per_epoch_drop, maps), LOSSES) is None, why


def test_not_called_out_at_its_first_validation_unless_the_run_ends_there():
    flat = history(4, 0.0, [0.001, 0.0], val_every=2)  # validated at epochs 2 and 4
    assert NL.not_learning(flat[:2], LOSSES) is None  # one validation: wait for the next
    assert NL.not_learning(flat[:2], LOSSES, final=True) is not None  # the run ends: no next one
    assert NL.not_learning(flat, LOSSES) is not None
    assert NL.not_learning(flat[:1], LOSSES, final=True) is None  # nothing validated yet


def test_the_measured_healthy_tiny_ssd_is_never_called_out():
    for k in range(1, len(HEALTHY_TINY_SSD) + 1):
        for final in (False, True):
            assert NL.not_learning(HEALTHY_TINY_SSD[:k], LOSSES, final=final) is None


def test_the_measured_stalled_tiny_ssd_is_called_out_once_its_loss_settles():
    assert NL.not_learning(STALLED_TINY_SSD[:2], LOSSES) is None  # 26% lower: still falling
    assert NL.not_learning(STALLED_TINY_SSD[:3], LOSSES) is None  # epoch 1 in the window
    verdict = NL.not_learning(STALLED_TINY_SSD, LOSSES)
    assert verdict["epoch"] == 4 and verdict["best_map"] == 0.0117113 and verdict["best_epoch"] == 1
    assert verdict["loss_from"]["epoch"] == 2 and 0 < verdict["loss_drop"] < NL.FLAT_DROP


def test_its_slow_first_epochs_with_a_lower_score_are_not_called_out_either():
    """The same losses with every score scaled under the floor: the falling loss alone holds it back
    (a slower learner than the demo, at its first epochs)."""
    slow = [dict(row, val_map=row["val_map"] / 20) for row in HEALTHY_TINY_SSD[:4]]
    assert max(r["val_map"] for r in slow) < NL.FLOOR
    for k in range(1, 5):
        assert NL.not_learning(slow[:k], LOSSES, final=True) is None


# ----------------------------------------------------------------------------- the causes
def test_lr_against_the_recipe_scaled_to_the_batch():
    recipe = {"lr": 0.05, "batch_size": 8}
    falling = [(1, 6.0), (2, 5.0)]
    high = NL.lr_cause(0.15, 8, recipe, falling, "tiny_ssd")
    assert high.startswith("learning rate: --lr 0.15 is 3x the recipe lr of tiny_ssd (0.05)")
    assert high.endswith("try --lr 0.05")
    low = NL.lr_cause(0.001, 8, recipe, falling, "tiny_ssd")
    assert "1/50 of" in low and "barely move" in low
    assert "--lr 1e-05 is 1/5,000 of" in NL.lr_cause(1e-5, 8, recipe, falling)
    assert "is 2.5x" in NL.lr_cause(0.125, 8, recipe, falling)
    assert NL.lr_cause(0.1, 16, recipe, falling) is None  # 0.05 at batch 8 is 0.1 at batch 16
    assert "(0.05 at batch 8, so 0.2 at batch 32)" in NL.lr_cause(0.8, 32, recipe, falling)
    assert NL.lr_cause(0.05, 8, recipe, falling) is None
    assert NL.lr_cause(0.05, 8, None, falling) is None  # no recipe, falling loss: nothing to say


def test_a_loss_that_rose_points_at_the_lr_even_at_the_recipes_rate():
    rose = NL.lr_cause(0.05, 8, {"lr": 0.05}, [(1, 6.0), (2, 3.0), (3, 4.2), (4, 4.0)])
    assert "rose from 3 (epoch 2) to 4 (epoch 4)" in rose and "lower --lr" in rose
    assert NL.lr_cause(0.05, 8, {"lr": 0.05}, [(1, 6.0), (2, 3.0), (3, 3.2)]) is None  # 7%: noise


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """The demo data (64 px images): objects 9% to 40% of the image side (gluondet.data.synth)."""
    from data_helpers import voc_config

    from gluondet.data import load_dataset
    from gluondet.data.synth import write_shapes_voc

    root = write_shapes_voc(tmp_path_factory.mktemp("data") / "shapes", n_train=24, n_val=1, size=64)
    return load_dataset(voc_config(root), "train")


def test_objects_too_small_at_the_input(shapes):
    from gluondet.data.synth import MAX_SIZE_FRACTION, MIN_SIZE_FRACTION

    assert MAX_SIZE_FRACTION * 16 < NL.SMALL_PX  # at 16 px every shape is under SMALL_PX
    found = NL.geometry_causes(NL.sampled_boxes(shapes), get_family("ssd"), 16)
    assert len(found) == 1 and found[0].startswith("small objects: with every image stretched to 16x16")
    assert "100% are under 8 px" in found[0]
    assert MIN_SIZE_FRACTION * 192 > 2 * NL.SMALL_PX  # the tiny SSD's own shape: none is
    assert NL.geometry_causes(NL.sampled_boxes(shapes), get_family("ssd"), 192) == []


def test_the_rcnn_input_size_is_gluoncvs_resize_short_within():
    from gluoncv.data.transforms.image import resize_short_within


    rng = np.random.default_rng(0)
    for _ in range(20):
        w, h = (int(v) for v in rng.integers(40, 400, size=2))
        short, max_size = int(rng.integers(32, 160)), int(rng.integers(160, 300))
        resized = resize_short_within(mx.nd.zeros((h, w, 3), dtype="uint8"), short, max_size)
        assert get_family("faster_rcnn").input_size(w, h, short, max_size) == (resized.shape[1], resized.shape[0])
    assert get_family("ssd").input_size(640, 480, 192) == (192, 192)


def test_class_counts_agree_with_data_stats(shapes):
    """Training labels counted as `gluondet data stats` counts the reader's entries."""
    from data_helpers import voc_config

    from gluondet.data import READERS
    from gluondet.data.stats import dataset_stats, readable_entries

    cfg = voc_config(shapes.image_path(0).parent.parent)
    per_class = dataset_stats(readable_entries(READERS["voc"](cfg, "train"))[0])["per_class"]
    assert NL.class_counts(shapes) == {k: per_class.get(k, 0) for k in shapes.classes}
    assert sum(per_class.values()) > 24  # the shapes data: up to 4 objects an image


def labels_dataset(boxes_per_image, classes, size=(256, 256)):
    """A DetectionDataset of labels only (its images are never read)."""
    n = len(boxes_per_image)
    return DetectionDataset(classes, [f"/nonexistent/{i}.jpg" for i in range(n)], [str(i) for i in range(n)],
                            [size] * n, boxes_per_image)


def test_one_class_swamping_the_others():
    rows = [[10, 10, 50, 50, 0, 0]] * 95 + [[10, 10, 50, 50, 1, 0]] * 4 + [[10, 10, 50, 50, 2, 0]]
    crowd = [[0, 0, 9, 9, 1, 2]] * 50  # crowd regions train nothing: not counted
    ds = labels_dataset([np.array(rows + crowd, np.float32)], ["helmet", "head", "vest"])
    assert NL.class_counts(ds) == {"helmet": 95, "head": 4, "vest": 1}
    sentence = NL.imbalance_cause(NL.class_counts(ds))
    assert sentence == ("class imbalance: 'helmet' has 95% of the 100 training objects (the others: head 4, "
                        "vest 1); collect or weight more of the others")
    assert NL.imbalance_cause({"a": 60, "b": 40}) is None
    assert NL.imbalance_cause({"a": 100}) is None  # one class: nothing to swamp


def test_best_iou_is_gluoncvs_bbox_iou_maximum():
    from gluoncv.utils.bbox import bbox_iou

    from gluondet.models.anchors import best_iou

    rng = np.random.default_rng(1)
    for _ in range(30):
        boxes, anchors = (np.sort(rng.uniform(0, 100, size=(n, 2, 2)), axis=1).transpose(0, 2, 1)
                          .reshape(n, 4)[:, [0, 2, 1, 3]] for n in (rng.integers(1, 40), rng.integers(1, 700)))
        np.testing.assert_allclose(best_iou(boxes, anchors, chunk=7),
                                   bbox_iou(boxes, anchors, offset=0).max(axis=1), atol=1e-9)


@pytest.fixture(scope="module")
def tiny_ssd():
    from gluondet.config import resolve_model_config

    cfg = dict(resolve_model_config("tiny_ssd"), data_shape=96)
    net, max_size = NL.network_geometry(cfg, ["a", "b"])
    return cfg, net


def test_ssd_anchors_are_the_ones_its_training_targets_use(tiny_ssd):
    from gluondet.data.loader import ssd_anchors
    from gluondet.models.anchors import anchor_corners

    cfg, net = tiny_ssd
    centre = ssd_anchors(net, 96).asnumpy()[0]  # the whole network's forward, as the loader runs it
    corners = np.concatenate([centre[:, :2] - centre[:, 2:] / 2, centre[:, :2] + centre[:, 2:] / 2], axis=1)
    np.testing.assert_allclose(anchor_corners(net, get_family("ssd"), 96, 96), corners, rtol=1e-6)


def test_boxes_no_anchor_fits_are_called_out(tiny_ssd):
    """A 90x3 px plank at a 96 px input overlaps any anchor (squares and 2:1 boxes of 7 to 50 px)
    by well under IoU 0.5; a box that is one of the anchors overlaps it by 1."""
    from gluondet.models.anchors import anchor_corners

    cfg, net = tiny_ssd
    anchor = anchor_corners(net, get_family("ssd"), 96, 96)[-1]  # a 2:1 box of 26x52 px
    planks = [np.array([[2, 40, 92, 43, 0, 0]], np.float32)] * 3
    ds = labels_dataset(planks + [np.array([[*anchor, 1, 0]], np.float32)], ["plank", "fit"], size=(96, 96))
    found = NL.geometry_causes(NL.sampled_boxes(ds), get_family("ssd"), 96, net)
    assert len(found) == 1
    assert found[0].startswith("anchors: 75% of 4 training boxes overlap no anchor by IoU 0.5 or more")
    fitting = labels_dataset([np.array([[*anchor, 1, 0]], np.float32)], ["fit"], size=(96, 96))
    assert NL.geometry_causes(NL.sampled_boxes(fitting), get_family("ssd"), 96, net) == []


@pytest.fixture(scope="module")
def mask_tiny():
    from gluondet.config import resolve_model_config

    return NL.network_geometry(resolve_model_config("mask_rcnn_tiny"), ["a"])


@pytest.mark.filterwarnings("ignore:Cannot decide type")  # GluonCV's transform, the reference
def test_rcnn_anchors_are_the_rpns_training_anchors(mask_tiny):
    """mask_rcnn_tiny's RPN anchors at a 128x213 input: those GluonCV's R-CNN train transform crops
    to each FPN level's feature map and matches the boxes against."""
    from gluoncv.data.transforms.presets.rcnn import FasterRCNNDefaultTrainTransform

    from gluondet.models.anchors import anchor_corners

    net, max_size = mask_tiny
    assert max_size == 213
    reference = FasterRCNNDefaultTrainTransform(net.short, net.max_size, net, multi_stage=True)
    expected = []
    for anchor, feat in zip(reference._anchors, reference._feat_sym):
        shape = feat.infer_shape(data=(1, 3, 128, 213))[1][0]
        expected.append(anchor[:, :, :shape[2], :shape[3], :].reshape((-1, 4)).asnumpy())
    np.testing.assert_allclose(anchor_corners(net, get_family("mask_rcnn"), 213, 128), np.concatenate(expected))


def test_rcnn_anchors_are_checked_on_the_most_common_input_sizes(mask_tiny):
    """R-CNN keeps aspect ratios: one forward per input size, so only the images of the
    ANCHOR_SIZES most common sizes are matched (here 7 of 9 boxes, one 120x3 plank each)."""
    net, max_size = mask_tiny
    assert NL.ANCHOR_SIZES == 4
    widths = [128, 128, 128, 160, 160, 170, 180, 190, 200]  # 6 sizes: 128 x3, 160 x2, then singles
    samples = [((w, 128), np.array([[4, 60, 124, 63]], np.float32)) for w in widths]
    found = NL.geometry_causes(samples, get_family("mask_rcnn"), 128, net, max_size)
    assert len(found) == 1 and found[0].startswith("anchors: 100% of 7 training boxes")


# ----------------------------------------------------------------------------- the hook
TINY_SSD_RECIPE = {"lr": 0.05, "batch_size": 8}


@pytest.fixture
def run(tmp_path):
    folder = RunFolder.create(tmp_path / "run")
    folder.write_info({"model": {"name": "tiny_ssd", "family": "ssd"}, "dataset": {"name": "toy"}}, ["a", "b"])
    yield folder
    folder.unlock()


def _trainer(run, maps, losses, tiny_ssd, dataset, epochs=None, lr=0.15):
    """The toy network through the real Trainer with the production hooks around NotLearning; the
    losses and validation scores are scripted (``losses``: every step's loss)."""
    cfg, _net = tiny_ssd
    scores = iter(maps)
    epochs = epochs or len(maps)

    def validate(guard):
        return {"map": next(scores), "per_class": {}}

    hook = NL.NotLearning(run, cfg, dataset, lr, 8, metric_label="VOC mAP")
    step = ToyStep(loss_at={k + 1: v for k, v in enumerate(losses)})
    net = toy_net()
    hooks = [H.Validation(validate, 1), H.BestScore(), H.Checkpointer(run, lr, "voc"), hook]
    return Trainer(net, ToyLoader(), step, gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1}),
                   [mx.cpu()], hooks, lambda e, i: 0.1, epochs, ITERS), hook


def _small_and_mostly_one_class():
    boxes = [np.array([[40, 40, 44, 44, 0, 0]] * 19 + [[10, 10, 13, 13, 1, 0]], np.float32)] * 5
    return labels_dataset(boxes, ["a", "b"], size=(256, 256))


def test_the_hook_warns_once_writes_the_diagnosis_and_the_page_shows_it(run, tiny_ssd, capsys):
    from gluondet.eval.html_report import write_report

    ds = _small_and_mostly_one_class()  # 4 px boxes at 96 px: small, and no anchor fits
    trainer, hook = _trainer(run, [0.001, 0.0, 0.0005, 0.0], [4.0] * 4 * ITERS, tiny_ssd, ds)
    trainer.train()
    err = capsys.readouterr().err
    assert err.count("likely causes gluondet can check") == 1  # the block, once (at epoch 2)
    doc = json.loads((run / DIAGNOSIS_FILE).read_text(encoding="utf-8"))
    assert doc["epoch"] == 2 and doc["best_map"] == 0.001 and doc["metric"] == "VOC mAP"
    assert [c.split(":")[0] for c in doc["causes"]] == ["learning rate", "small objects", "anchors",
                                                         "class imbalance"]
    assert doc["causes"][0].startswith("learning rate: --lr 0.15 is 3x the recipe lr of tiny_ssd (0.05)")
    assert f"- {doc['causes'][1]}" in err
    assert err.rstrip().splitlines()[-1] == ("warning: the run did not learn: best VOC mAP 0.0010; the likely "
                                             f"causes found at epoch 2 are in {run / DIAGNOSIS_FILE}")
    page = write_report(run.path).read_text(encoding="utf-8")
    assert page.index('id="not-learning"') < page.index("<h2>Run</h2>")  # first on the page
    assert "This run did not learn" in page and "class imbalance: &#x27;a&#x27; has 95%" in page


def test_a_run_that_learns_gets_no_diagnosis_and_no_warning_section(run, tiny_ssd, capsys):
    from gluondet.eval.html_report import write_report

    trainer, _ = _trainer(run, [0.1, 0.3, 0.5], [4.0] * 3 * ITERS, tiny_ssd, _small_and_mostly_one_class())
    trainer.train()
    assert not (run / DIAGNOSIS_FILE).exists() and "not learning" not in capsys.readouterr().err
    assert 'id="not-learning"' not in write_report(run.path).read_text(encoding="utf-8")


def test_a_stalled_run_that_takes_off_later_is_cleared(run, tiny_ssd, capsys):
    trainer, hook = _trainer(run, [0.0, 0.001, 0.4], [4.0] * 3 * ITERS, tiny_ssd, _small_and_mostly_one_class())
    trainer.train()
    assert not (run / DIAGNOSIS_FILE).exists() and hook.verdict is None
    err = capsys.readouterr().err
    assert "epoch 3: best VOC mAP 0.4000: the run learns after all; removed diagnosis.json" in err
    assert err.rstrip().splitlines()[-1].startswith("epoch 3: best")  # no reminder at the end


def test_the_hook_must_come_after_the_checkpointer(run, tiny_ssd):
    trainer, hook = _trainer(run, [0.0], [4.0] * ITERS, tiny_ssd, _small_and_mostly_one_class())
    trainer.hooks.remove(hook)
    trainer.hooks.insert(1, hook)  # before Checkpointer: the epoch's row is not in the history yet
    with pytest.raises(RuntimeError, match="after Checkpointer"):
        trainer.train()


def test_the_page_says_when_no_check_found_a_cause_and_escapes_the_text(run):
    from gluondet.eval.html_report import write_report

    (run / DIAGNOSIS_FILE).write_text(json.dumps({"epoch": 6, "summary": "the run is not learning: <b>x</b>",
                                                  "causes": []}), encoding="utf-8")
    page = write_report(run.path).read_text(encoding="utf-8")
    assert "the run is not learning: &lt;b&gt;x&lt;/b&gt; (found at epoch 6)." in page
    assert "found no cause" in page


def test_a_rollback_to_before_the_verdict_clears_it(run, tiny_ssd):
    ds = _small_and_mostly_one_class()
    trainer, hook = _trainer(run, [0.001, 0.0, 0.0005, 0.0], [4.0] * 4 * ITERS, tiny_ssd, ds)
    trainer.train()
    assert hook.verdict["epoch"] == 2 and (run / DIAGNOSIS_FILE).exists()
    trainer.state.epoch = 2  # rolled back to the end of epoch 2: the verdict's epochs stay
    hook.on_rollback()
    assert (run / DIAGNOSIS_FILE).exists()
    trainer.state.epoch = 1  # rolled back into epoch 2: it is trained again
    hook.on_rollback()
    assert not (run / DIAGNOSIS_FILE).exists() and hook.verdict is None
