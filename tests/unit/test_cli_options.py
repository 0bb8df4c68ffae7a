"""One meaning per option name across commands, and old spellings that still work with a note."""
import json

import pytest
from click.testing import CliRunner

from data_helpers import write_voc
from gluondet.cli import main


def _commands(group=main, prefix=()):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,), cmd


def _options(name):
    return [(path, p) for path, cmd in _commands() for p in cmd.params
            if name in p.opts and not getattr(p, "hidden", False)]


def test_json_is_an_optional_file_everywhere():
    found = _options("--json")
    assert {path for path, _ in found} == {("eval",), ("detect",), ("data", "check"), ("data", "stats")}
    for path, option in found:
        assert option.metavar == "FILE" and option.flag_value == "-" and not option.is_flag, path


def test_num_workers_means_dataloader_processes_and_launch_says_workers():
    found = _options("--num-workers")
    assert {path for path, _ in found} == {("train",), ("eval",)}
    assert all("DataLoader processes" in option.help for _, option in found)
    launch = {opt for p in main.commands["launch"].params if not getattr(p, "hidden", False) for opt in p.opts}
    assert {"-n", "--workers", "-s", "--servers"} <= launch


def test_out_is_the_folder_a_command_writes_into():
    found = _options("--out")
    assert {path for path, _ in found} == {("train",), ("detect",), ("export",), ("data", "show")}
    for path, option in found:
        assert option.metavar == "DIR" and option.help.startswith("Folder to write into"), path


def _voc(tmp_path):
    return write_voc(tmp_path / "voc", {"a": {"objects": [("cat", 5, 5, 20, 20)]}})


def test_data_check_json_to_stdout_or_to_a_file(tmp_path):
    root = _voc(tmp_path)
    runner = CliRunner(mix_stderr=False)
    result = runner.invoke(main, ["data", "check", str(root), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    result = runner.invoke(main, ["data", "stats", str(root), "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 0 and "boxes: 1" in result.stdout
    assert json.loads((tmp_path / "s.json").read_text())["boxes"] == 1


def test_old_json_flag_before_root_still_works_with_a_note(tmp_path):
    root = _voc(tmp_path)
    result = CliRunner(mix_stderr=False).invoke(main, ["data", "check", "--json", str(root)])
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    assert result.stderr.count("\n") == 1 and "deprecated" in result.stderr
    assert not (tmp_path / "voc.json").exists()


@pytest.mark.parametrize("old", [["--num-workers", "1"], ["-n", "1", "--num-servers", "1"]])
def test_old_launch_spellings_still_work_with_a_note(old):
    result = CliRunner(mix_stderr=False).invoke(main, ["launch", *old, "--", "no-such-program-xyz"])
    assert result.exit_code == 2 and "not on PATH" in result.stderr
    assert "note: launch --num-" in result.stderr and "is deprecated" in result.stderr
