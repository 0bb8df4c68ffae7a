"""`gluondet report RUN`: report.html opened in a real headless Chromium with no network.

The run folder is made without training: generated shapes images, detections made from their
labels with known noise, ``write_eval_folder`` (what ``gluondet eval`` calls), training curves and
metrics.csv as the engine writes them. Chromium and chromedriver come from Debian
(scripts/test.sh installs them with apt-get when run as root).
"""
import csv
import json
import re
import shutil

import numpy as np
import pytest

from browser import headless_chromium
from cli_helpers import invoke_cli

CLASSES = ["circle", "安全帽", "triangle"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from gluondet.config import dump_yaml
    from gluondet.data.base import DetectionDataset
    from gluondet.data.synth import write_shapes_voc
    from gluondet.eval.folder import eval_dir, write_eval_folder
    from gluondet.eval.voc_metric import VOCMApMetric
    from gluondet.families import get_family

    base = tmp_path_factory.mktemp("report")
    root = write_shapes_voc(base / "data", n_train=1, n_val=10, seed=3, size=96)
    from gluondet.config import resolve_dataset
    from gluondet.data import load_dataset

    shapes = load_dataset(resolve_dataset(str(root)), "val")
    # the same images, with the second class renamed to a CJK name
    ds = DetectionDataset(CLASSES, [shapes.image_path(i) for i in range(len(shapes))],
                          [shapes.image_id(i) for i in range(len(shapes))],
                          [shapes.image_size(i) for i in range(len(shapes))],
                          [shapes.label(i) for i in range(len(shapes))], name="shapes")
    metric = VOCMApMetric(0.5, CLASSES)
    rng = np.random.default_rng(0)
    for i in range(len(ds)):
        gt = ds.label(i)
        keep = rng.random(len(gt)) < 0.8
        boxes = np.concatenate([gt[keep, :4] + rng.normal(0, 2, (keep.sum(), 4)), [[5, 5, 30, 30]]])
        ids = np.concatenate([gt[keep, 4], [i % 3]])
        scores = rng.uniform(0.2, 1, len(ids))
        metric.update(boxes[None], ids[None], scores[None], gt[None, :, :4], gt[None, :, 4], gt[None, :, 5])
    run = base / "run"
    run.mkdir()
    dump_yaml({"model": {"name": "tiny_ssd", "data_shape": 96}, "dataset": {"name": "shapes"}},
              run / "config.yaml")
    (run / "classes.txt").write_text("".join(c + "\n" for c in CLASSES), encoding="utf-8")
    (run / "best.json").write_text(json.dumps({"epoch": 3, "map": 0.5, "metric": "voc"}))
    _write_training_files(run)
    result = {"map": metric.get()[1][-1], "metric": "voc", "dataset": "shapes", "split": "val",
              "images": len(ds), "params": str(run / "best.params")}
    write_eval_folder(eval_dir(run, "val"), metric, ds, result, get_family("faster_rcnn"), grid=(3, 2), pages=2)
    return run


def _write_training_files(run):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(run / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "loss", "lr", "val_map"])
        for epoch in range(4):
            writer.writerow([epoch, 2.0 / (epoch + 1), 0.01, 0.1 * epoch])
    fig, ax = plt.subplots()
    ax.plot([2, 1, 0.6, 0.5])
    fig.savefig(run / "curves.png")
    plt.close(fig)


@pytest.fixture(scope="module")
def report(run_dir):
    result = invoke_cli(["report", str(run_dir)])
    assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    return run_dir / "report.html"


def expected_pictures(run_dir):
    names = ["curves.png"]
    for folder in sorted(run_dir.glob("eval-*")):
        doc = json.loads((folder / "analysis.json").read_text(encoding="utf-8"))
        names += [f"{folder.name}/{n}" for n in list(doc["pictures"].values()) + doc["mosaics"]]
    return names


def test_page_is_self_contained_and_names_every_picture(report, run_dir, tmp_path):
    page = report.read_text(encoding="utf-8")
    pictures = re.findall(r'data-picture="([^"]+)"', page)
    assert sorted(pictures) == sorted(expected_pictures(run_dir))
    assert len(expected_pictures(run_dir)) == 1 + 4 + 2
    assert not re.search(r'(src|href)="(?!data:)', page)  # every resource inline
    assert "安全帽" in page and "per_class" not in page
    # it works from the run folder alone: copied elsewhere, with nothing else, it is the same page
    alone = tmp_path / "copy.html"
    shutil.copy(report, alone)
    assert alone.read_text(encoding="utf-8") == page


@pytest.fixture(scope="module")
def browser():
    driver = headless_chromium(loopback=False)
    yield driver
    driver.quit()


def test_page_in_headless_chromium(report, run_dir, browser, tmp_path):
    _check_page_in_browser(browser, report, run_dir, tmp_path)


def _check_page_in_browser(browser, report, run_dir, tmp_path):
    """Loaded with no console error, every picture the run folder names decoded, no request but
    file: and data:, a non-blank screenshot, the CJK label font embedded and loaded."""
    from PIL import Image

    browser.set_window_size(1280, 1000)
    browser.get(report.as_uri())
    browser.execute_async_script("document.fonts.ready.then(() => arguments[0](true))")
    state = browser.execute_script(
        "return {ready: document.readyState, images: Array.from(document.images).map(i => "
        "({name: i.dataset.picture, ok: i.complete && i.naturalWidth > 0}))}")
    assert state["ready"] == "complete"
    assert sorted(i["name"] for i in state["images"]) == sorted(expected_pictures(run_dir))
    assert all(i["ok"] for i in state["images"]), [i for i in state["images"] if not i["ok"]]
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    requests = [json.loads(e["message"])["message"] for e in browser.get_log("performance")]
    urls = [r["params"]["request"]["url"] for r in requests if r["method"] == "Network.requestWillBeSent"]
    assert urls and all(u.startswith(("file:", "data:")) for u in urls), urls

    shot = tmp_path / "desktop.png"  # (kept by pytest's tmp_path: look at it)
    assert browser.save_screenshot(str(shot))
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10  # text, tables and pictures, not a blank page
    assert (pixels < 128).mean() > 0.005
    # CJK class names in the page's text draw with the embedded label font, on any machine
    assert browser.execute_script("return document.fonts.check('16px gluondet-labels', '安全帽')")
    loaded = browser.execute_script(
        "return Array.from(document.fonts).filter(f => f.family.includes('gluondet-labels'))"
        ".map(f => f.status)")
    assert loaded == ["loaded"]


def test_page_fits_a_phone_screen(report, browser):
    browser.set_window_size(390, 844)
    browser.get(report.as_uri())
    widths = browser.execute_script(
        "return {page: document.documentElement.scrollWidth, view: window.innerWidth, "
        "widest: Math.max(...Array.from(document.images).map(i => i.getBoundingClientRect().width))}")
    assert widths["page"] <= widths["view"] + 1, widths  # no sideways scrolling
    assert widths["widest"] <= widths["view"]


# ----------------------------------------------------------------------------- a mask model's run
@pytest.fixture(scope="module")
def mask_run(tmp_path_factory):
    """A few iterations of mask_rcnn_tiny on generated masked shapes (class 安全帽 among them);
    training ends by writing eval-val/ and report.html (the EvalReport hook)."""
    from gluondet.data.synth import write_shapes_voc

    base = tmp_path_factory.mktemp("mask_report")
    root = write_shapes_voc(base / "shapes", n_train=3, n_val=3, seed=4, size=96, masks=True)
    for name in ("instances_train.json", "instances_val.json"):  # a CJK class name, in one supercategory
        path = root / "annotations" / name
        path.write_text(path.read_text(encoding="utf-8").replace('"square"', '"安全帽"'), encoding="utf-8")
    (root / "coco.yaml").write_text((root / "coco.yaml").read_text(encoding="utf-8").replace(
        "classes: [circle, square, triangle]", "classes: [circle, 安全帽, triangle]"), encoding="utf-8")
    run = base / "run"
    result = invoke_cli([
        "train", "--dataset", str(root / "coco.yaml"), "--model", "mask_rcnn_tiny", "--out", str(run),
        "--data-shape", "96", "--epochs", "1", "--max-iters", "2", "--lr", "0.003", "--lr-steps", "5",
        "--num-workers", "0", "--quiet"])
    assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    return run


@pytest.mark.slow
def test_a_mask_runs_page_has_the_box_analysis_mask_ap_and_masks(mask_run, browser, tmp_path):
    from gluondet.engine.metrics_log import read_metrics

    doc = json.loads((mask_run / "eval-val" / "analysis.json").read_text(encoding="utf-8"))
    [row] = read_metrics(mask_run / "metrics.csv")
    rows = doc["analysis"]["per_class"]
    assert [r["class"] for r in rows] == ["circle", "安全帽", "triangle"]
    for r in rows:  # COCO box and mask AP per class: validation's own numbers, beside the box analysis
        for key, column in (("segm_ap", "segm_ap/"), ("bbox_ap", "bbox_ap/")):
            want = row[column + r["class"]]
            assert (r[key] is None and want in ("", "nan")) or r[key] == pytest.approx(float(want))
    assert doc["mosaics"] and doc["analysis"]["errors"]["curves"][3] == "Sim"  # one supercategory: "shape"
    page = (mask_run / "report.html").read_text(encoding="utf-8")
    assert "mask AP (COCO)" in page and "box AP (COCO)" in page and "(masks filled)" in page
    assert sorted(re.findall(r'data-picture="([^"]+)"', page)) == sorted(expected_pictures(mask_run))
    _check_page_in_browser(browser, mask_run / "report.html", mask_run, tmp_path)


@pytest.mark.slow
def test_eval_of_a_mask_run_writes_the_analysis_with_its_printed_mask_ap(mask_run, tmp_path):
    shutil.rmtree(mask_run / "eval-val")
    result = invoke_cli(["eval", mask_run, "--split", "val", "--num-workers", "0", "--quiet", "--json",
                         tmp_path / "r.json"])
    assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    assert "mask AP:" in result.output and "(F1-best), IoU 0.5" in result.output
    printed = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    doc = json.loads((mask_run / "eval-val" / "analysis.json").read_text(encoding="utf-8"))
    assert doc["analysis"] == printed["analysis"]
    assert {r["class"]: r["segm_ap"] for r in doc["analysis"]["per_class"]} == printed["mask"]["per_class"]
    assert {r["class"]: r["bbox_ap"] for r in doc["analysis"]["per_class"]} == printed["box"]["per_class"]
    assert doc["mosaics"] == ["worst_01.jpg"]  # 3 images fill one page
    # detect --thresh best takes the mask run's F1-best threshold from that folder
    image = next((mask_run.parent / "shapes" / "JPEGImages").glob("*.jpg"))
    scores = {}
    for thresh in ("0", "best"):
        result = invoke_cli(["detect", image, "--run", mask_run, "--thresh", thresh, "--out", tmp_path,
                             "--json", tmp_path / "d.json"])
        assert result.exit_code == 0, (result.output, result.stderr, result.exception)
        [record] = json.loads((tmp_path / "d.json").read_text(encoding="utf-8"))["images"]
        scores[thresh] = sorted(b["score"] for b in record["boxes"])
    best = doc["analysis"]["f1"]["best"]["threshold"]
    assert min(scores["0"]) < best
    assert scores["best"] == [s for s in scores["0"] if s >= best]
