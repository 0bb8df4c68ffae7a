"""Dataset config resolution and YAML handling (gluondet/config.py)."""
import json

import pytest

from gluondet.config import (dataset_config_from_dict, expand_path, load_yaml, merge,
                             resolve_dataset, resolve_model_config)
from gluondet.errors import GluondetError


def test_shipped_dataset_configs_resolve():
    for name in ("helmet_voc", "voc07_12", "coco2017", "shapes_voc"):
        cfg = resolve_dataset(name)
        assert cfg.format in ("voc", "coco")
        assert cfg.source is not None and cfg.source.name == f"{name}.yaml"


def test_helmet_voc_classes():
    assert resolve_dataset("helmet_voc").classes == ["hat", "person"]


def test_user_config_dir_wins_over_shipped(tmp_path, monkeypatch):
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "helmet_voc.yaml").write_text(
        "format: voc\nroot: mine\nclasses: [安全帽, Person]\n", encoding="utf-8")
    monkeypatch.setenv("GLUONDET_CONFIG_DIR", str(tmp_path))
    cfg = resolve_dataset("helmet_voc")
    assert cfg.classes == ["安全帽", "Person"]
    assert cfg.root == tmp_path / "datasets" / "mine"  # relative roots are taken from the YAML's folder


def test_voc_root_and_coco_json_paths(tmp_path):
    voc = tmp_path / "myvoc"
    voc.mkdir()
    assert resolve_dataset(str(voc)).format == "voc"
    ann_dir = tmp_path / "coco" / "annotations"
    ann_dir.mkdir(parents=True)
    (tmp_path / "coco" / "val2017").mkdir()
    ann = ann_dir / "instances_val2017.json"
    ann.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    cfg = resolve_dataset(str(ann))
    assert cfg.format == "coco"
    assert cfg.split_spec("val")["images"] == str(tmp_path / "coco" / "val2017")


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(GluondetError, match="known configs: .*helmet_voc"):
        resolve_dataset("no_such_dataset")


@pytest.mark.parametrize("classes, message", [
    ("person", "must be a list"),            # ('person') is a string, not a tuple
    (["rats ", "cats"], "spaces"),
    (["cat", "cat"], "listed twice"),
])
def test_bad_class_lists_are_refused(classes, message):
    with pytest.raises(GluondetError, match=message):
        dataset_config_from_dict({"root": "x", "classes": classes}, name="t")


def test_bad_format_refused():
    with pytest.raises(GluondetError, match="format 'yolo'"):
        dataset_config_from_dict({"root": "x", "format": "yolo"}, name="t")


def test_expand_path_defaults_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv("GLUONDET_DATA", raising=False)
    assert str(expand_path("${GLUONDET_DATA}/shapes")).endswith(".gluondet/datasets/shapes")
    monkeypatch.setenv("GLUONDET_DATA", str(tmp_path))
    assert expand_path("${GLUONDET_DATA}/shapes") == tmp_path / "shapes"
    with pytest.raises(GluondetError, match="NOPE_NOT_SET"):
        expand_path("$NOPE_NOT_SET/x")


def test_load_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(GluondetError, match="bad.yaml: not valid YAML"):
        load_yaml(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(GluondetError, match="list.yaml: expected a YAML mapping"):
        load_yaml(listy)
    # safe_load: python object tags are refused rather than executed
    evil = tmp_path / "evil.yaml"
    evil.write_text("a: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(GluondetError, match="not valid YAML"):
        load_yaml(evil)


def test_merge_ignores_none_and_recurses():
    base = {"train": {"lr": 0.1, "epochs": 10}, "name": "a"}
    assert merge(base, {"train": {"lr": None, "epochs": 3}, "name": None}) == {
        "train": {"lr": 0.1, "epochs": 3}, "name": "a"}


def test_unknown_model_lists_known_ones():
    with pytest.raises(GluondetError, match="known models"):
        resolve_model_config("no_such_model")


def test_coco_root_folder_roles_and_the_coco2017_config_finds_either_folder(tmp_path, monkeypatch):
    root = tmp_path / "coco2017"
    for split in ("train2017", "val2017"):
        (root / split).mkdir(parents=True)
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text("{}")
    cfg = resolve_dataset(str(root))
    assert cfg.format == "coco"
    assert cfg.split_spec("train")["images"] == str(root / "train2017")
    assert cfg.split_spec("val") == cfg.split_spec("test") == cfg.split_spec("val2017")
    assert cfg.split_spec("val")["annotations"] == str(root / "annotations" / "instances_val2017.json")
    monkeypatch.setenv("GLUONDET_DATA", str(tmp_path))
    assert resolve_dataset("coco2017").root == root
    root.rename(tmp_path / "coco")
    assert resolve_dataset("coco2017").root == tmp_path / "coco"
    (tmp_path / "coco").rename(tmp_path / "elsewhere")
    assert resolve_dataset("coco2017").root == root  # neither: the first, for the error message


def test_single_coco_file_root_serves_every_role(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations" / "instances_default.json").write_text("{}")
    cfg = resolve_dataset(str(tmp_path))
    assert cfg.split_spec("train") == cfg.split_spec("val") == cfg.split_spec("test")
    assert cfg.split_spec("train")["images"] == str(tmp_path / "images")


def test_shared_names_are_the_ones_the_implementations_cover():
    import click

    from gluondet import constants
    from gluondet.cli import main
    from gluondet.eval import METRIC_CLASSES

    assert tuple(METRIC_CLASSES) == constants.BOX_METRICS
    assert tuple(constants.METRIC_LABELS) == constants.METRICS
    train = {p.name: p for p in main.commands["train"].params}
    assert tuple(train["metric"].type.choices) == constants.METRICS
    assert tuple(train["kvstore"].type.choices) == constants.KVSTORES
    assert tuple(train["augment"].type.choices) == constants.AUGMENTATIONS
    assert isinstance(train["augment"].type, click.Choice)


def test_dotted_model_name_keeps_its_dot():
    # Path("ssd_512_mobilenet1.0").stem is "ssd_512_mobilenet1": the run would carry the wrong name
    assert resolve_model_config("ssd_512_mobilenet1.0")["name"] == "ssd_512_mobilenet1.0"
    from gluondet.config import resolve_train_config

    config = resolve_train_config(resolve_model_config("ssd_512_mobilenet1.0"), {"model": "ssd_512_mobilenet1.0"})
    assert config.model == "ssd_512_mobilenet1.0"


def test_mistyped_dataset_name_gets_the_nearest_config():
    with pytest.raises(GluondetError, match=r"dataset 'helmet_vco' .*did you mean helmet_voc\?"):
        resolve_dataset("helmet_vco")


@pytest.mark.parametrize("value", ["/some/missing/path", "./data/mine", "~/nothere_voc", "mine.yaml", "x.json"])
def test_missing_path_is_no_such_folder_or_file(value):
    with pytest.raises(GluondetError) as e:
        resolve_dataset(value)
    assert str(e.value).startswith(f"{value}: no such folder or file") and "configs/datasets" not in str(e.value)


def test_unknown_key_in_a_dataset_yaml_is_refused_with_the_file_and_nearest_key(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("root: data\nclases: [hat, person]\n")
    with pytest.raises(GluondetError, match=rf"{path}: unknown key 'clases'; did you mean classes\?"):
        resolve_dataset(str(path))


def test_unknown_key_in_a_model_yaml_names_the_file(tmp_path):
    path = tmp_path / "models" / "mine.yaml"
    path.parent.mkdir()
    path.write_text("family: ssd\nbuilder: tiny_ssd\ndata_shape: 64\ntrain: {batch_sise: 4}\n")
    with pytest.raises(GluondetError, match=rf"{path}: train: unknown key 'batch_sise'; did you mean batch_size\?"):
        resolve_model_config("mine", config_dir=tmp_path)
    path.write_text("family: ssd\nbuilder: tiny_ssd\ndata_shap: 64\n")
    with pytest.raises(GluondetError, match=rf"{path}: unknown key 'data_shap'; did you mean data_shape\?"):
        resolve_model_config(str(path))


def test_voc_supercategories_in_a_dataset_yaml_reach_the_dataset(tmp_path):
    from data_helpers import write_voc

    from gluondet.data import load_dataset

    root = write_voc(tmp_path / "voc", {"a": {"objects": [("hat", 1, 1, 20, 20), ("helmet", 30, 5, 50, 40)]}})
    path = tmp_path / "mine.yaml"
    path.write_text(f"root: {root}\nsupercategories: {{hat: headwear, helmet: headwear}}\n")
    assert load_dataset(resolve_dataset(str(path)), "train").supercategories == {"hat": "headwear",
                                                                                 "helmet": "headwear"}
    # a class the data does not have is refused like an unknown key, naming the file and the nearest
    path.write_text(f"root: {root}\nsupercategories: {{hat: headwear, helmets: headwear}}\n")
    with pytest.raises(GluondetError, match=rf"{path}: supercategories: unknown key 'helmets'; did you mean helmet\?"):
        load_dataset(resolve_dataset(str(path)), "train")


@pytest.mark.parametrize("text, match", [
    ("classes: [hat, helmet]\nsupercategories: {hat: headwear, helmt: headwear}\n",
     r"supercategories: unknown key 'helmt'; did you mean helmet\?"),
    ("supercategories: [hat, helmet]\n", "'supercategories' must map class names to group names"),
    ("supercategoris: {hat: headwear}\n", r"unknown key 'supercategoris'; did you mean supercategories\?")])
def test_bad_supercategories_are_refused_with_the_file(tmp_path, text, match):
    path = tmp_path / "mine.yaml"
    path.write_text("root: data\n" + text)
    with pytest.raises(GluondetError, match=rf"{path}: {match}"):
        resolve_dataset(str(path))
