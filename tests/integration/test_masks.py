"""Mask R-CNN end to end where a user first tries it: ``gluondet data synth --masks`` at the generator's
defaults (300 train + 100 val images of 256 px) and ``gluondet train --model mask_rcnn_tiny`` with the
recipe as shipped, on 4 of its 6 epochs. The small model learns them (losses fall, mask AP on the
held-out val images above a measured floor), eval's box and mask AP are pycocotools' own, detect finds the masks of the val
images and writes them, export gives the run's outputs, and --init-from carries a mask run's shared
classes into another run (or says which file to place).

One seeded training run through the real CLI (``trained_mask_run``, below) serves every test here.
"""
import contextlib
import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from cli_helpers import invoke_cli

from gluondet.precision import cpu_has_bf16

# the module's one training run (4 epochs at 256 px) is part of its first test's time
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

MASK_SEED = 7  # data and training seed (bench_recipes.py checks the recipe on seeds 101-103)
# The recipe's 6 epochs took 8 of the suite's 24 minutes; 4 keep everything else of it (data at the
# generator's defaults, data shape, batch, lr, clipping) with its lr step scaled to epoch 3, as
# `--epochs 4` runs for a user. The whole schedule is bench_recipes.py's (README: 9 cells, all pass).
TEST_EPOCHS = 4
# Measured: this module's run (--seed 7 data and training, 4 epochs of 263 steps, the lr step at 3)
# reached val mask AP 0.364, box AP 0.340 (the recipe's 6 epochs: 0.413, 0.403); the same recipe on seeds
# 101-103 (bench_recipes.py, the CLI in a process of its own) 0.499 / 0.469 / 0.417, box 0.474 / 0.439 /
# 0.401. The mask AP floor is issue 20's 0.25 (the recipe as shipped before, diverging on other data:
# 0.001); box AP the same margin. Losses from the first epoch's mean to the last's (seeds 101-103):
# rpn_cls 0.10 -> 0.010, mask 0.53-0.56 -> 0.17 (chance: 0.69). rcnn_cls_loss rises in epoch 2 (more
# objects among the proposals as the RPN learns) before it falls (0.52-0.56 -> 0.35-0.41): not asserted.
LOSSES_FALL_TO = {"rpn_cls_loss": 0.3, "mask_loss": 0.6}  # of the first epoch's
SEGM_AP_FLOOR = 0.25
BOX_AP_FLOOR = 0.2
MASK_IOU = 0.5
# Of the val objects, the share that has a detected mask of its class with IoU > MASK_IOU at
# DETECT_THRESH: 0.88 of 221 here, 0.93 of 250 with seed 103. The masks are good before the class
# scores are sure (the YAML's note): detect the demo model at 0.3.
FOUND_FRACTION = 0.75
DETECT_THRESH = 0.3
API_IMAGES = 8  # val images whose JSON masks are compared with the Detector API's


@pytest.fixture(scope="module")
def masked_shapes(tmp_path_factory):
    """``gluondet data synth DIR --masks`` at the generator's defaults: COCO (``coco.yaml``) and VOC
    instance layouts of the same images."""
    root = tmp_path_factory.mktemp("data") / "masked_shapes"
    result = invoke_cli(["data", "synth", root, "--masks", "--seed", MASK_SEED])
    assert result.exit_code == 0, result.stderr
    return root


@pytest.fixture(scope="module")
def trained_mask_run(tmp_path_factory, masked_shapes):
    """A run folder of mask_rcnn_tiny trained from scratch on ``masked_shapes`` by ``gluondet train``
    with the recipe (configs/models/mask_rcnn_tiny.yaml) on TEST_EPOCHS epochs. In a process of its own, as
    a user runs it: there gluondet picks MXNet's synchronous engine on CPUs (1.8x this model's
    training speed, bench_engine.py), which this test process, having imported MXNet, cannot."""
    run_dir = tmp_path_factory.mktemp("runs") / "masked_shapes-mask_rcnn_tiny"
    result = subprocess.run([sys.executable, "-m", "gluondet", "train", "--dataset", str(masked_shapes / "coco.yaml"),
                             "--model", "mask_rcnn_tiny", "--out", str(run_dir), "--seed", str(MASK_SEED),
                             "--epochs", str(TEST_EPOCHS), "--quiet"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def _cli(*args):
    return invoke_cli(args)


def test_mask_model_learns_the_masked_shapes(trained_mask_run):
    from gluondet.engine.metrics_log import read_metrics

    rows = read_metrics(trained_mask_run / "metrics.csv")
    first, last = rows[0], rows[-1]
    for name, fraction in LOSSES_FALL_TO.items():
        assert float(last[name]) < fraction * float(first[name]), (name, first[name], last[name])
    # held-out validation images, COCO mask AP@[.5:.95] by our evaluation (checked against
    # pycocotools below); best.params is picked on it
    assert float(last["segm/AP"]) >= SEGM_AP_FLOOR, last["segm/AP"]
    assert float(last["bbox/AP"]) >= BOX_AP_FLOOR, last["bbox/AP"]
    assert float(last["segm/AP"]) == pytest.approx(float(last["val_map"]))  # --metric coco_segm
    assert {"bbox/AP50", "segm/ARl", "segm_ap/circle", "bbox_ap/triangle"} <= set(last)


def test_eval_mask_ap_equals_pycocotools_on_the_written_results(trained_mask_run, masked_shapes, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from gluondet.eval.coco_metric import COCO_STAT_NAMES

    result = _cli("eval", trained_mask_run, "--split", "val", "--json", tmp_path / "ap.json",
                  "--coco-results", tmp_path / "res.json")
    assert result.exit_code == 0, result.stderr
    assert "box AP:" in result.output and "mask AP:" in result.output and "circle" in result.output
    got = json.loads((tmp_path / "ap.json").read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(masked_shapes / "annotations" / "instances_val.json"))
        ev = COCOeval(gt, gt.loadRes(str(tmp_path / "res.json")), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    for name, want in zip(COCO_STAT_NAMES, ev.stats):
        have = got["mask"]["coco_segm"][name]
        assert (want < 0 and have is None) or abs(want - have) < 1e-9, (name, want, have)
    assert got["map"] == got["mask"]["map"] and got["map"] >= SEGM_AP_FLOOR


# ----------------------------------------------------------------------------- detect
def _decode(rle):
    from pycocotools import mask as mask_utils

    return mask_utils.decode(dict(rle, counts=rle["counts"].encode())).astype(bool)


def _mask_iou(a, b):
    union = (a | b).sum()
    return (a & b).sum() / union if union else 0.0


def _val_images_with_objects(root):
    """[(path, {annotation id: (class name, mask)})] of the val images that hold objects, the masks as
    pycocotools rasterizes the generator's polygons (the reference)."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(root / "annotations" / "instances_val.json"))
    names = {c["id"]: c["name"] for c in gt.dataset["categories"]}
    return [(root / gt.imgs[i]["file_name"],
             {a["id"]: (names[a["category_id"]], gt.annToMask(a).astype(bool)) for a in gt.imgToAnns[i]})
            for i in sorted(gt.imgs) if gt.imgToAnns[i]]


def test_detect_writes_the_masks_of_the_val_images(trained_mask_run, masked_shapes, tmp_path):
    """``gluondet detect`` on the held-out val images writes a mask per box at the image's size, the
    same masks the Detector API gives, and finds most objects with a mask of their class."""
    from gluondet.image import read_image
    from gluondet.predict import Detector

    images = _val_images_with_objects(masked_shapes)
    result = _cli("detect", *[p for p, _ in images], "--run", trained_mask_run, "--thresh", DETECT_THRESH,
                  "--json", tmp_path / "d.json", "--out", tmp_path / "drawn")
    assert result.exit_code == 0, result.stderr
    records = {r["file"].split("/")[-1]: r for r in json.loads((tmp_path / "d.json").read_text())["images"]}
    detector = Detector.load(trained_mask_run)
    ious = []
    for k, (path, objects) in enumerate(images):
        boxes = records[path.name]["boxes"]
        masks = [_decode(b["segmentation"]) for b in boxes]
        size = next(iter(objects.values()))[1].shape
        assert all(m.shape == size for m in masks)
        if k < API_IMAGES:  # the JSON's RLE is exactly the masks the Detector API gives for the same file
            [api] = detector.detect([read_image(path)], thresh=DETECT_THRESH)
            assert len(api) == len(boxes)
            for mask, want in zip(masks, api.masks):
                np.testing.assert_array_equal(mask, want.astype(bool))
        for class_name, gt_mask in objects.values():
            same = [m for m, b in zip(masks, boxes) if b["class"] == class_name]
            ious.append(max((_mask_iou(gt_mask, m) for m in same), default=0.0))
    found = np.mean(np.array(ious) > MASK_IOU)
    assert found >= FOUND_FRACTION, (found, len(ious))


def _data_shape(run_dir):
    import yaml

    return int(yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["data_shape"])


def test_detect_draws_the_masks_it_writes(trained_mask_run, masked_shapes, tmp_path):
    import cv2

    doc = json.loads((masked_shapes / "annotations" / "instances_val.json").read_text())
    with_objects = {a["image_id"] for a in doc["annotations"]}
    name = next(im["file_name"] for im in doc["images"] if im["id"] in with_objects)
    image = masked_shapes / name
    result = _cli("detect", image, "--run", trained_mask_run, "--thresh", "0", "--max-boxes", "3", "--json",
                  tmp_path / "d.json", "--out", tmp_path)
    assert result.exit_code == 0, result.stderr
    [record] = json.loads((tmp_path / "d.json").read_text())["images"]
    assert record["boxes"]
    original = cv2.imread(str(image))[:, :, ::-1].astype(int)
    drawn = cv2.imread(str(tmp_path / f"{image.stem}.det.jpg"))[:, :, ::-1].astype(int)
    covered = np.zeros(original.shape[:2], bool)
    for box in record["boxes"]:
        mask = _decode(box["segmentation"])
        assert mask.shape == original.shape[:2]  # may be empty: a box whose mask scores stay below 0.5
        covered |= mask
    assert covered.any()
    # a translucent fill changes the masked pixels; far from every mask only labels and JPEG noise do
    far = cv2.dilate(covered.astype(np.uint8), np.ones((15, 15), np.uint8)) == 0
    inside = np.abs(drawn[covered] - original[covered]).mean()
    assert inside > max(10.0, 3 * np.median(np.abs(drawn[far] - original[far])))


# ----------------------------------------------------------------------------- export
def test_export_gives_the_runs_outputs_masks_included(trained_mask_run, tmp_path):
    import mxnet as mx

    from gluondet.predict import Detector
    from gluondet.run_folder import RunFolder

    result = _cli("export", trained_mask_run, "--out", tmp_path / "export")
    assert result.exit_code == 0, result.stderr
    meta = json.loads((tmp_path / "export" / "export.json").read_text())
    assert meta["family"] == "mask_rcnn" and len(meta["outputs"]) == 4
    size = _data_shape(trained_mask_run)
    x = mx.nd.array(np.random.default_rng(0).normal(size=(1, 3, size, size)).astype(np.float32))
    net, _ = RunFolder.open(trained_mask_run).load_network()
    with mx.autograd.predict_mode():
        want = net(x)
    got = Detector.load(tmp_path / "export").net(x)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- devices, --init-from
def test_two_devices_train_a_mask_model(masked_shapes, tmp_path):
    from gluondet.engine.metrics_log import read_metrics
    from gluondet.run_folder import RunFolder

    result = _cli("train", "--dataset", masked_shapes / "coco.yaml", "--model", "mask_rcnn_tiny", "--out",
                  tmp_path / "run", "--ctx", "cpu0,cpu1", "--batch-size", "2", "--epochs", "1", "--max-iters", "2",
                  "--lr", "0.003", "--num-workers", "0", "--quiet")
    assert result.exit_code == 0, result.stderr
    [row] = read_metrics(tmp_path / "run" / "metrics.csv")
    assert all(np.isfinite(float(row[n])) for n in ("rpn_cls_loss", "rcnn_cls_loss", "mask_loss", "segm/AP"))
    assert RunFolder.open(tmp_path / "run").load_network()[0].classes == ["circle", "square", "triangle"]


def test_init_from_the_coco_mask_detector_offline_names_the_file_to_place(masked_shapes, tmp_path, monkeypatch):
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxnet_home"))  # empty; MXNET_GLUON_REPO is loopback
    result = _cli("train", "--dataset", masked_shapes / "coco.yaml", "--model", "mask_rcnn_fpn_resnet50_v1b",
                  "--init-from", "mask_rcnn_fpn_resnet50_v1b_coco", "--out", tmp_path / "run", "--num-workers", "0")
    assert result.exit_code == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("gluondet: error")]
    assert len(errors) == 1, result.stderr
    place = re.escape(str(tmp_path / "mxnet_home" / "models" / "mask_rcnn_fpn_resnet50_v1b_coco"))
    assert re.search(rf"place the file {place}-[0-9a-f]{{8}}\.params", errors[0]), errors[0]
    assert "--init-from PATH.params" in errors[0] and "--pretrained-base" not in errors[0]
    assert not (tmp_path / "run").exists()


def test_init_from_a_mask_run_keeps_the_weights_of_shared_class_names(trained_mask_run, masked_shapes, tmp_path):
    """Another class list (square renamed hexagon, order changed): circle and triangle keep their
    class, box and mask predictors; a lr of 1e-9 over 2 iterations leaves the kept weights in place."""
    import mxnet as mx

    source = mx.nd.load(str(trained_mask_run / "best.params"))
    splits = ""
    for split in ("train", "val"):
        doc = json.loads((masked_shapes / "annotations" / f"instances_{split}.json").read_text())
        for category in doc["categories"]:
            category["name"] = {"square": "hexagon"}.get(category["name"], category["name"])
        (tmp_path / f"{split}.json").write_text(json.dumps(doc))
        splits += f"  {split}: {{annotations: {tmp_path / f'{split}.json'}, images: .}}\n"
    (tmp_path / "renamed.yaml").write_text(f"name: renamed\nformat: coco\nroot: {masked_shapes}\n"
                                           f"classes: [triangle, hexagon, circle]\nsplits:\n{splits}")
    result = _cli("train", "--dataset", tmp_path / "renamed.yaml", "--model", "mask_rcnn_tiny", "--init-from",
                  trained_mask_run, "--out", tmp_path / "run", "--epochs", "1", "--max-iters", "2", "--lr", "1e-9",
                  "--num-workers", "0", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert "reusing the weights of 2 shared class(es): triangle, circle" in result.output + result.stderr
    new = mx.nd.load(str(tmp_path / "run" / "last.params"))
    old_rows, new_rows = {"circle": 0, "triangle": 2}, {"triangle": 0, "hexagon": 1, "circle": 2}
    checked = 0
    for suffix, per_class, offset in (("class_predictor.weight", 1, 1), ("box_predictor.weight", 4, 0),
                                      ("mask.mask.weight", 1, 0)):
        [old_key] = [k for k in source if k.endswith(suffix)]
        [new_key] = [k for k in new if k.endswith(suffix)]
        old, got = source[old_key].asnumpy(), new[new_key].asnumpy()
        for name, row in old_rows.items():
            want = old[(offset + row) * per_class:(offset + row + 1) * per_class]
            have = got[(offset + new_rows[name]) * per_class:(offset + new_rows[name] + 1) * per_class]
            np.testing.assert_allclose(have, want, atol=1e-6, err_msg=f"{suffix} {name}")
            checked += 1
        hexagon = got[(offset + 1) * per_class:(offset + 2) * per_class]
        assert not any(np.allclose(hexagon, old[r * per_class:(r + 1) * per_class], atol=1e-3)
                       for r in range(len(old) // per_class))  # a new class starts afresh
    assert checked == 6


# measured on the 128 px demo run before issue 20: mask AP 0.368 float32, 0.371 bfloat16; box 0.316, 0.319
BF16_AP_WITHIN = 0.03


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no avx512_bf16/amx_bf16")
def test_eval_of_a_mask_model_in_bfloat16_runs_in_it_and_agrees(trained_mask_run, tmp_path):
    """--dtype bfloat16 converts the mask model as it does a box model (it once ran float32 and said
    bfloat16): its scores differ from float32's, its box and mask AP stay close."""
    got = {}
    for dtype in ("float32", "bfloat16"):
        result = _cli("eval", trained_mask_run, "--split", "val", "--dtype", dtype, "--no-analysis",
                      "--json", tmp_path / f"{dtype}.json", "--coco-results", tmp_path / f"{dtype}-res.json")
        assert result.exit_code == 0, result.stderr
        got[dtype] = json.loads((tmp_path / f"{dtype}.json").read_text())
        got[dtype]["scores"] = [r["score"] for r in json.loads((tmp_path / f"{dtype}-res.json").read_text())]
    assert got["bfloat16"]["dtype"] == "bfloat16"
    assert got["bfloat16"]["scores"] != got["float32"]["scores"]
    for part in ("mask", "box"):
        assert abs(got["bfloat16"][part]["map"] - got["float32"][part]["map"]) <= BF16_AP_WITHIN
