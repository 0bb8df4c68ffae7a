"""gluondet.progress: bars only on a terminal, one plain line in logs, nothing with --quiet."""
import io

import pytest
from click.testing import CliRunner

from gluondet import progress
from gluondet.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def not_quiet():
    progress.configure(quiet=False)
    yield
    progress.configure(quiet=False)


def test_in_a_log_one_plain_line_and_no_carriage_returns():
    log = io.StringIO()
    with Progress(range(50), desc="eval", unit="batch", stream=log) as bar:
        for _ in bar:
            bar.set_postfix(loss=0.123456)
    text = log.getvalue()
    assert "\r" not in text
    [line] = text.splitlines()
    assert line.startswith("eval: 50 batch in ") and line.endswith(" s, loss=0.1235")


def test_on_a_terminal_a_bar_and_no_summary_line():
    tty = Terminal()
    bar = Progress(total=3, desc="detect", unit="img", stream=tty)
    for _ in range(3):
        bar.update(1)
    bar.close()
    assert "\r" in tty.getvalue() and "detect: 3 img in" not in tty.getvalue()


@pytest.mark.parametrize("stream", [io.StringIO, Terminal])
def test_quiet_and_disabled_show_nothing(stream):
    out = stream()
    list(Progress(range(5), desc="x", stream=out, enabled=False))
    progress.configure(quiet=True)
    list(Progress(range(5), desc="x", stream=out))
    assert out.getvalue() == ""


def test_commands_write_no_bar_updates_into_logs(tmp_path):
    from gluondet.cli import main

    result = CliRunner(mix_stderr=False).invoke(main, ["data", "synth", str(tmp_path / "s"), "--train", "3",
                                                       "--val", "1", "--size", "32"])
    assert result.exit_code == 0, result.stderr
    assert "\r" not in result.stderr and "shapes_voc: 4 img in" in result.stderr


@pytest.mark.parametrize("command", ["train", "eval", "detect"])
def test_quiet_is_spelled_the_same_on_every_long_command(command):
    from gluondet.cli import main

    options = {opt for p in main.commands[command].params for opt in p.opts}
    assert {"-q", "--quiet"} <= options


def test_quiet_does_not_outlive_its_command(tmp_path):
    from gluondet.cli import main

    runner = CliRunner(mix_stderr=False)
    runner.invoke(main, ["eval", str(tmp_path / "no_run"), "-q"])  # fails, but -q was taken
    assert progress.is_quiet()
    result = runner.invoke(main, ["data", "synth", str(tmp_path / "s"), "--train", "2", "--val", "1",
                                  "--size", "32"])
    assert result.exit_code == 0 and "shapes_voc: 3 img in" in result.stderr


def test_tables_are_aligned_by_terminal_columns_with_cjk_names():
    from gluondet.eval.results import format_ap_table
    from gluondet.progress import clip, ljust, text_width

    assert text_width("安全帽") == 6 and text_width("helmet") == 6 and text_width("e\u0301") == 1
    assert ljust("安全帽", 8) == "安全帽  " and clip("安全帽安全帽", 7) == "安全帽~" and clip("ab", 7) == "ab"
    table = format_ap_table({"metric": "voc", "map": 0.5, "per_class": {"安全帽": 0.25, "head": 0.75}})
    rows = [line for line in table.splitlines() if "0.2500" in line or "0.7500" in line or "0.5000" in line]
    assert len({text_width(line[:line.index("0.")]) for line in rows}) == 1  # the numbers start in one column
