"""Every command answers a bad number with the same one line: eval, detect and export are checked
against what train says for the same value (and the values train has no flag for, against the
range their help states). Nothing is loaded: the checks come before any run is read."""
import mxnet  # noqa: F401  first: eval's configure_engine would switch this process to the synchronous engine
import pytest
from click.testing import CliRunner

from gluondet.cli import main

TRAIN = ["train", "--dataset", "shapes_voc", "--model", "tiny_ssd"]


def gluondet(args):
    result = CliRunner(mix_stderr=False).invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback: the bug this file is about
    return result


def error_line(result):
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gluondet: error: "), result.stderr
    return lines[0]


def commands(tmp_path):
    """Each command with whatever it needs besides the flag (a run that need not hold anything)."""
    return {"eval": ["eval", tmp_path / "run"], "detect": ["detect", tmp_path / "a.jpg", "--run", tmp_path],
            "export": ["export", tmp_path], "serve": ["serve", tmp_path], "synth": ["data", "synth", tmp_path / "d"],
            "split": ["data", "split", tmp_path], "show": ["data", "show", tmp_path], "launch": ["launch", "-n", "1"]}


def command_line(tmp_path, command, flag, value):
    tail = ["--", "true"] if command == "launch" else []  # what launch runs comes after its options
    return commands(tmp_path)[command] + [flag, value] + tail


SHARED = [("eval", "--batch-size", v) for v in ("0", "-3")] + [("eval", "--num-workers", "-1")] + [
    ("detect", "--batch-size", v) for v in ("0", "-3")]


@pytest.mark.parametrize("command, flag, value", SHARED)
def test_the_same_bad_value_gets_trains_line(tmp_path, command, flag, value):
    expected = error_line(gluondet(TRAIN + [flag, value]))
    assert flag in expected and value in expected
    assert error_line(gluondet(commands(tmp_path)[command] + [flag, value])) == expected


# flags train does not have: the range their help (or the metric's definition) gives
OWN = [("eval", "--iou", "0.99", "[0.05, 0.95]"), ("eval", "--iou", "nan", "finite"),
       ("eval", "--score", "1.5", "[0, 1]"), ("eval", "--mosaics", "-1", "0 or more"),
       ("detect", "--max-boxes", "0", "at least 1"), ("detect", "--thresh", "-0.1", "[0, 1]"),
       ("export", "--calib-images", "0", "at least 1"), ("serve", "--port", "70000", "[0, 65535]"),
       ("serve", "--max-batch", "0", "at least 1"), ("synth", "--size", "16", "at least 32"),
       ("synth", "--train", "-1", "0 or more"), ("split", "--val", "1", "[0, 1)"),
       ("split", "--test", "-0.1", "[0, 1)"),
       ("show", "--pages", "101", "[1, 100]"), ("launch", "-n", "0", "at least 1"),
       ("launch", "--timeout", "0.5", "at least 1")]


@pytest.mark.parametrize("command, flag, value, allowed", OWN)
def test_other_numeric_flags_are_refused_in_one_line(tmp_path, command, flag, value, allowed):
    line = error_line(gluondet(command_line(tmp_path, command, flag, value)))
    shown = "--workers" if flag == "-n" else flag
    assert line.startswith(f"gluondet: error: {shown} must be") and allowed in line and value in line


@pytest.mark.parametrize("command, flag, value", [("eval", "--batch-size", "1"), ("eval", "--num-workers", "0"),
                                                  ("eval", "--iou", "0.05"), ("eval", "--score", "1"),
                                                  ("detect", "--thresh", "0"), ("export", "--calib-images", "1"),
                                                  ("show", "--pages", "100"), ("split", "--val", "0")])
def test_the_edge_of_each_range_passes_the_check(tmp_path, command, flag, value):
    result = gluondet(command_line(tmp_path, command, flag, value))
    assert "must be" not in result.stderr  # refused later, for the missing run, not for the number
