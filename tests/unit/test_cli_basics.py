"""The CLI answers --help and --version for every command, fast, without importing MXNet."""
import subprocess
import sys

import pytest
from click.testing import CliRunner

from gluondet import __version__
from gluondet.cli import main


def _all_commands(group, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,)
        if hasattr(cmd, "commands"):
            yield from _all_commands(cmd, prefix + (name,))


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize("path", sorted(_all_commands(main)))
def test_every_command_has_help(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    first_help_line = result.output.split("\n\n")[1].strip()
    assert len(first_help_line) > 10


def test_expected_commands_are_registered():
    assert {"data", "train", "eval", "detect", "export", "launch"} <= set(main.commands)


def test_help_does_not_import_mxnet():
    code = ("import sys; from click.testing import CliRunner; from gluondet.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0; "
            "print('mxnet' in sys.modules, 'gluoncv' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_python_dash_m_gluondet_is_the_command():
    out = subprocess.run([sys.executable, "-m", "gluondet", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and f"gluondet, version {__version__}" in out.stdout


def test_onnx_export_without_onnx_writes_nothing(tmp_path, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnx" else real_find_spec(name, *a))
    run = tmp_path / "run"
    run.mkdir()
    result = CliRunner(mix_stderr=False).invoke(main, ["export", str(run), "--format", "onnx",
                                                       "--out", str(tmp_path / "exp")])
    assert result.exit_code == 2 and "needs the onnx package" in result.stderr
    assert not (tmp_path / "exp").exists()
