"""gluondet detect's pieces that need no trained network: COCO results against a dataset config."""
import json

from gluondet.cli.detect import _write_coco_results


def test_coco_results_read_relative_annotations_from_the_dataset_root_via_config_dir(tmp_path, monkeypatch):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val").mkdir()
    doc = {"images": [{"id": 42, "file_name": "a.jpg", "width": 64, "height": 48}],
           "annotations": [], "categories": [{"id": 7, "name": "hat"}]}
    (root / "annotations" / "instances_val.json").write_text(json.dumps(doc))
    (tmp_path / "cfg" / "datasets").mkdir(parents=True)
    (tmp_path / "cfg" / "datasets" / "mine.yaml").write_text(
        f"format: coco\nroot: {root}\nsplits:\n  val: {{annotations: annotations/instances_val.json, images: val}}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the relative path must not be read from here
    records = [{"file": "/photos/a.jpg", "boxes": [{"class": "hat", "score": 0.9, "bbox": [1.0, 2.0, 11.0, 22.0]}]}]
    _write_coco_results(tmp_path / "out.json", "mine", ["hat"], records, config_dir=tmp_path / "cfg")
    assert json.loads((tmp_path / "out.json").read_text()) == [
        {"image_id": 42, "category_id": 7, "bbox": [1.0, 2.0, 10.0, 20.0], "score": 0.9}]
