"""The family seam: every family answers what the rest of gluondet asks, and nothing outside
gluondet/families switches on family names."""
import ast
from pathlib import Path

import pytest

import gluondet
from gluondet.errors import GluondetError
from gluondet.families import FAMILY_NAMES, family_name, family_of, get_family
from gluondet.families.base import Family

PACKAGE = Path(gluondet.__file__).parent


def _name_switches(tree):
    """(line, text) of every comparison of a family with a family name (``family == "ssd"``,
    ``info.family != "mask_rcnn"``), a test against several family names (``x in ("faster_rcnn",
    "mask_rcnn")``) and a builder-name prefix test (``name.startswith("yolo3")``). (``augment ==
    "ssd"``, an augmentation that shares a family's name, is not one.)"""
    found = []

    def is_name(node):
        return isinstance(node, ast.Constant) and node.value in FAMILY_NAMES

    def names_in(node):
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(is_name(e) for e in node.elts)

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
            about_family = any("famil" in ast.unparse(p) for p in parts if not is_name(p))
            several = sum(is_name(e) for p in parts if names_in(p) for e in p.elts) > 1
            if several or (about_family and any(is_name(p) or names_in(p) for p in parts)):
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("startswith", "endswith") and any(is_name(a) for a in node.args):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_nothing_outside_the_families_switches_on_a_family_name():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if PACKAGE / "families" in path.parents:
            continue
        for line, text in _name_switches(ast.parse(path.read_text(encoding="utf-8"))):
            offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {text}")
    assert not offenders, "ask the family instead:\n" + "\n".join(offenders)


def test_the_switch_finder_finds_switches():
    # the finder itself, on code that does switch (so the test above can fail)
    code = ('a = family == "ssd"\nb = f in ("faster_rcnn", "mask_rcnn")\nc = name.startswith("mask_rcnn")\n'
            'd = x == "cat"\ne = augment == "ssd"\nf = info.family != "mask_rcnn"\n')
    assert [line for line, _ in _name_switches(ast.parse(code))] == [1, 2, 3, 6]


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_every_family_is_a_family_with_its_own_name_and_losses(name):
    family = get_family(name)
    assert isinstance(family, Family) and family.name == name
    assert family.loss_names and all(isinstance(n, str) for n in family.loss_names)
    shape = family.example_shape(256, 256, 400)
    assert len(shape) == 4 and shape[:2] == (1, 3)


def test_family_names_come_from_the_yaml_or_the_builder():
    assert family_name({"family": "mask_rcnn", "builder": "whatever"}) == "mask_rcnn"
    assert family_name({"builder": "faster_rcnn_resnet50_v1b_custom"}) == "faster_rcnn"
    assert family_name({"builder": "ssd_512_vgg16_atrous_custom"}) == "ssd"
    with pytest.raises(GluondetError, match="family 'retina' is not one of"):
        family_name({"name": "x", "family": "retina"})


def test_an_unknown_model_option_is_one_line_naming_the_family_s_options():
    with pytest.raises(GluondetError, match="model option 'mixup' is not one of the ssd family's"):
        family_of({"family": "ssd", "options": {"mixup": True}})


def test_model_options_come_from_key_value_flags_read_as_yaml():
    from gluondet.config import parse_model_options

    assert parse_model_options(["mixup=false", "no_mixup_epochs=20", "name=a b"], "flags") == \
        {"mixup": False, "no_mixup_epochs": 20, "name": "a b"}
    assert parse_model_options({"mixup": True}, "yaml") == {"mixup": True}
    with pytest.raises(GluondetError, match="--model-option mixup: not KEY=VALUE"):
        parse_model_options(["mixup"], "flags")


def test_a_model_option_flag_reaches_the_family_and_an_unknown_one_is_refused(tmp_path):
    from click.testing import CliRunner

    from gluondet.cli import main
    from gluondet.data.synth import write_shapes_voc

    root = write_shapes_voc(tmp_path / "d", n_train=2, n_val=1, seed=1, size=64)
    result = CliRunner().invoke(main, ["train", "--dataset", str(root), "--model", "tiny_ssd", "--out",
                                       str(tmp_path / "run"), "--model-option", "mixup=false"])
    assert result.exit_code != 0 and "model option 'mixup' is not one of the ssd family's" in result.output
    assert not (tmp_path / "run").exists()
