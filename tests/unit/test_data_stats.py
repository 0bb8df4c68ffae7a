"""gluondet data stats: counts and distributions from the annotations, and the plot."""
from data_helpers import voc_config, write_voc
from gluondet.data import READERS
from gluondet.data.stats import dataset_stats, format_stats, plot_stats


def entries(tmp_path):
    write_voc(tmp_path, {"a": {"objects": [("cat", 1, 1, 10, 10), ("dog", 1, 1, 20, 10), ("cat", 5, 5, 14, 24)]},
                         "b": {"objects": [("安全帽", 11, 11, 18, 12)]}, "c": {"objects": []}},
              {"train": ["a", "b", "c"]})
    return READERS["voc"](voc_config(tmp_path), "train").entries


def test_counts_and_distributions(tmp_path):
    s = dataset_stats(entries(tmp_path))
    assert (s["images"], s["boxes"], s["negatives"]) == (3, 4, 1)
    assert s["per_class"] == {"cat": 2, "dog": 1, "安全帽": 1}
    assert s["boxes_per_image"]["histogram"] == {"0": 1, "1": 1, "3": 1}
    # VOC boxes are inclusive: xmin 1 .. xmax 10 is 10 pixels wide
    assert s["box_width"]["min"] == 8 and s["box_width"]["max"] == 20
    assert s["aspect_ratio"]["max"] == 4.0 and s["aspect_ratio"]["min"] == 0.5
    assert s["relative_size"]["max"] == (20 * 10 / (64 * 48)) ** 0.5
    assert s["image_sizes"] == {"64x48": 3}
    assert "安全帽  1" in format_stats(s)


def test_plot_writes_a_png(tmp_path):
    out = tmp_path / "stats.png"
    plot_stats(entries(tmp_path / "d"), out, title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stats_names_unreadable_files_and_exits_non_zero(tmp_path):
    from click.testing import CliRunner

    from gluondet.cli import main

    root = write_voc(tmp_path, {"a": {"objects": [("cat", 5, 5, 20, 20)]}, "b": {"xml": "<annotation><object>"},
                                "c": {"objects": []}, "d": {"objects": [("cat", 1, 1, 9, 9)], "ext": None}})
    runner = CliRunner(mix_stderr=False)
    result = runner.invoke(main, ["data", "stats", str(root)])
    assert result.exit_code == 1
    assert "images: 2 (1 with no objects)" in result.stdout  # a and c; not the broken b, nor d
    assert "b.xml: error: unparseable-xml" in result.stderr and "d.xml: error: missing-image" in result.stderr
    result = runner.invoke(main, ["data", "stats", str(root), "--json"])
    import json

    assert result.exit_code == 1 and len(json.loads(result.stdout)["unreadable"]) == 2
