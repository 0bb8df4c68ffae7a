"""check: one test per problem it reports, hostile XML, and load_dataset's refusal / --skip-bad."""
from pathlib import Path

import pytest

from data_helpers import copy_fixture, voc_config, voc_xml, write_image, write_voc
from gluondet.data import load_dataset
from gluondet.data.check import check_dataset, format_report
from gluondet.errors import GluondetError

GOOD = {"objects": [("cat", 5, 5, 20, 20)]}


def found(root, classes=None, split=None):
    """(file name, severity, problem) for every problem check finds."""
    result = check_dataset(voc_config(root, classes), split)
    return sorted((Path(p.file).name, p.severity, p.problem) for p in result.problems)


def test_clean_dataset_has_no_problems(tmp_path):
    write_voc(tmp_path, {"a": GOOD, "b": GOOD})
    assert found(tmp_path) == []
    assert check_dataset(voc_config(tmp_path)).ok


def test_unparseable_xml(tmp_path):
    write_voc(tmp_path, {"a": GOOD, "bad": {"xml": "<annotation><object><name>cat</name></annotation>"}})
    assert found(tmp_path) == [("bad.xml", "error", "unparseable-xml")]


def test_not_a_voc_annotation(tmp_path):
    write_voc(tmp_path, {"a": GOOD, "bad": {"xml": "<html><body/></html>"}})
    assert found(tmp_path) == [("bad.xml", "error", "unparseable-xml")]


@pytest.mark.parametrize("fixture", ["billion_laughs.xml", "external_entity.xml"])
def test_hostile_xml_is_refused_fast(tmp_path, fixture):
    write_voc(tmp_path, {"a": GOOD})
    copy_fixture(fixture, tmp_path / "Annotations" / "evil.xml")
    write_image(tmp_path / "JPEGImages" / "evil.jpg", 10, 10)
    # refused before any expansion (how fast: scripts/bench/bench_hostile_xml.py)
    result = check_dataset(voc_config(tmp_path))
    [problem] = result.problems
    assert Path(problem.file).name == "evil.xml" and problem.problem == "xml-entities"
    assert "refused" in problem.detail


def test_empty_annotation_file(tmp_path):
    write_voc(tmp_path, {"a": GOOD, "empty": {"xml": ""}})
    assert found(tmp_path) == [("empty.xml", "error", "empty-annotation")]


def test_missing_image(tmp_path):
    write_voc(tmp_path, {"a": GOOD, "noimg": {**GOOD, "ext": None}})
    assert found(tmp_path) == [("noimg.xml", "error", "missing-image")]


def test_unreadable_image(tmp_path):
    write_voc(tmp_path, {"a": GOOD, "b": GOOD})
    (tmp_path / "JPEGImages" / "b.jpg").write_bytes(b"\xff\xd8 truncated nonsense")
    assert found(tmp_path) == [("b.jpg", "error", "unreadable-image")]


def test_size_in_xml_disagrees_with_image(tmp_path):
    write_voc(tmp_path, {"a": GOOD, "b": {"xml": voc_xml([("cat", 5, 5, 20, 20)], size=(48, 64))}})
    assert found(tmp_path) == [("b.xml", "error", "size-mismatch")]
    detail = check_dataset(voc_config(tmp_path)).problems[0].detail
    assert "48x64" in detail and "64x48" in detail


def test_box_outside_image(tmp_path):
    # the image is 64x48: xmax 64 is the last pixel (1-based), 66 is outside, as is a negative xmin
    write_voc(tmp_path, {"edge": {"objects": [("cat", 1, 1, 64, 48)]},
                         "out": {"objects": [("cat", 10, 10, 66, 20)]}, "neg": {"objects": [("cat", -5, 1, 9, 9)]}})
    assert found(tmp_path) == [("neg.xml", "error", "box-outside-image"), ("out.xml", "error", "box-outside-image")]


def test_zero_area_and_inverted_boxes(tmp_path):
    write_voc(tmp_path, {"zero": {"objects": [("cat", 10, 10, 10, 30)]},
                         "inv": {"objects": [("cat", 30, 10, 20, 30)]}, "ok": GOOD})
    assert found(tmp_path) == [("inv.xml", "error", "inverted-box"), ("zero.xml", "error", "zero-area-box")]


def test_non_numeric_coordinate_and_bad_difficult(tmp_path):
    write_voc(tmp_path, {"nan": {"xml": voc_xml([("cat", "abc", 1, 9, 9)])},
                         "diff": {"xml": voc_xml([("cat", 1, 1, 9, 9)], difficult="maybe")}, "ok": GOOD})
    assert found(tmp_path) == [("diff.xml", "error", "bad-value"), ("nan.xml", "error", "bad-box")]


def test_unknown_class_with_case_hint(tmp_path):
    write_voc(tmp_path, {"a": GOOD, "b": {"objects": [("Cat", 5, 5, 20, 20)]}, "c": {"objects": [("dog", 1, 1, 5, 5)]}})
    result = check_dataset(voc_config(tmp_path, classes=["cat"]))
    assert sorted((Path(p.file).name, p.problem) for p in result.problems) == [
        ("b.xml", "unknown-class"), ("c.xml", "unknown-class")]
    hint = next(p.detail for p in result.problems if p.file.endswith("b.xml"))
    assert "did you mean 'cat'" in hint


def test_class_names_differing_only_by_case_are_reported(tmp_path):
    write_voc(tmp_path, {"a": GOOD, "b": GOOD, "c": {"objects": [("CAT", 5, 5, 20, 20)]}})
    result = check_dataset(voc_config(tmp_path))
    assert result.classes == ["cat"]  # the majority spelling; CAT's file is the error
    assert [(Path(p.file).name, p.problem) for p in result.problems] == [("c.xml", "class-case-clash")]
    assert "'CAT'" in result.problems[0].detail and "'cat'" in result.problems[0].detail


def test_config_classes_differing_only_by_case_block_even_skip_bad(tmp_path):
    write_voc(tmp_path, {"a": GOOD})
    cfg = voc_config(tmp_path, classes=["cat", "Cat"])
    assert [p.problem for p in check_dataset(cfg).problems] == ["class-case-clash"]
    with pytest.raises(GluondetError, match="differ only by case"):
        load_dataset(cfg, "train", skip_bad=True)


def test_split_ids_without_annotation_and_duplicates(tmp_path):
    write_voc(tmp_path, {"a": GOOD, "b": GOOD}, {"train": ["a", "ghost", "b", "a"]})
    assert found(tmp_path, split="train") == [("train.txt", "error", "duplicate-id"),
                                              ("train.txt", "error", "missing-annotation")]
    # without --split every annotation is checked, and the config's split files too
    assert found(tmp_path) == found(tmp_path, split="train")


def test_check_without_split_covers_every_split_file_of_every_folder(tmp_path):
    from click.testing import CliRunner

    from gluondet.cli import main

    write_voc(tmp_path / "VOC2007", {"a": GOOD}, {"train": ["a"], "trainval": ["a", "ghost7"]})
    write_voc(tmp_path / "VOC2012", {"b": GOOD}, {"train": ["b", "ghost12"], "cat_train": ["b 1"]})
    assert found(tmp_path) == [("train.txt", "error", "missing-annotation"),
                               ("trainval.txt", "error", "missing-annotation")]
    result = CliRunner(mix_stderr=False).invoke(main, ["data", "check", str(tmp_path)])
    assert result.exit_code == 1
    assert "VOC2007/ImageSets/Main/trainval.txt: error: missing-annotation: id 'ghost7'" in result.output
    assert "VOC2012/ImageSets/Main/train.txt: error: missing-annotation: id 'ghost12'" in result.output


def test_image_without_objects_is_only_a_warning(tmp_path):
    write_voc(tmp_path, {"a": GOOD, "neg": {"objects": []}})
    result = check_dataset(voc_config(tmp_path))
    problems = [(Path(p.file).name, p.severity, p.problem) for p in result.problems]
    assert problems == [("neg.xml", "warning", "no-objects")]
    assert result.ok


def test_two_images_for_one_id_is_a_warning(tmp_path):
    write_voc(tmp_path, {"a": GOOD})
    write_image(tmp_path / "JPEGImages" / "a.png", 64, 48)
    assert found(tmp_path) == [("a.xml", "warning", "ambiguous-image")]


def test_load_dataset_refuses_errors_with_the_report(tmp_path):
    write_voc(tmp_path, {"a": GOOD, "b": {"objects": [("cat", 10, 10, 99, 20)]}})
    with pytest.raises(GluondetError) as info:
        load_dataset(voc_config(tmp_path), "train")
    message = str(info.value)
    assert "b.xml: error: box-outside-image" in message and "--skip-bad" in message


def test_skip_bad_leaves_bad_files_out_and_says_so(tmp_path, capsys):
    write_voc(tmp_path, {"a": GOOD, "b": {"objects": [("cat", 10, 10, 99, 20)]}, "c": GOOD},
              {"train": ["a", "b", "c", "ghost"]})
    ds = load_dataset(voc_config(tmp_path), "train", skip_bad=True)
    assert [ds.image_id(i) for i in range(len(ds))] == ["a", "c"] and ds.skipped == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "left out 1 of 3 images" in err


def test_report_is_limited_and_summarised(tmp_path):
    write_voc(tmp_path, {f"i{k}": {"objects": [("cat", 10, 10, 99, 20)]} for k in range(5)})
    report = format_report(check_dataset(voc_config(tmp_path)).problems, limit=2)
    lines = report.splitlines()
    assert len(lines) == 4 and "and 3 more" in lines[2] and lines[3].startswith("5 error(s) in 5 file(s)")


def test_a_repeated_warning_is_counted_unless_verbose_and_errors_are_all_listed():
    from gluondet.data.base import error, warning
    from gluondet.data.check import WARNINGS_SHOWN, format_report

    problems = ([warning(f"a{i}.xml", "no-objects", "negative") for i in range(10)]
                + [warning("b.xml", "tiny-box", "2 px"), error("c.xml", "box-outside-image", "x")]
                + [error(f"d{i}.xml", "unreadable", "cut") for i in range(6)])
    grouped = format_report(problems, verbose=False).splitlines()
    assert sum("no-objects" in line and ": warning:" in line for line in grouped) == WARNINGS_SHOWN
    assert f"... and {10 - WARNINGS_SHOWN} more 'no-objects' warnings (--verbose lists them all)" in grouped
    assert sum("unreadable" in line for line in grouped) == 6 and any("tiny-box" in line for line in grouped)
    assert grouped[-1] == "7 error(s) in 7 file(s), 11 warning(s)"  # the summary counts everything
    full = format_report(problems, verbose=True).splitlines()
    assert len(full) == len(problems) + 1 and full[:-1] == [str(p) for p in problems]
