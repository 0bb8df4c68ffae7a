"""scripts/gpu_check.sh fails at once, saying why, where there is no GPU to check."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"


def _bin_with(tmp_path, tools):
    """A PATH folder holding only ``tools`` (links to the real ones), so no nvidia-smi leaks in."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in tools:
        (folder / tool).symlink_to(shutil.which(tool))
    return folder


def _run(path, tmp_path):
    env = {"PATH": str(path), "PYTHON": sys.executable, "TMPDIR": str(tmp_path), "HOME": str(tmp_path)}
    return subprocess.run([shutil.which("bash"), str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_without_a_driver_it_stops_at_once(tmp_path):
    result = _run(_bin_with(tmp_path, ["dirname", "mktemp", "rm"]), tmp_path)
    assert result.returncode == 1
    assert "no nvidia-smi on PATH" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.glob("gpu_check.*")) == []  # its work folder is removed


def test_with_a_gpu_but_a_cpu_only_mxnet_it_names_the_wheel(tmp_path):
    folder = _bin_with(tmp_path, ["dirname", "mktemp", "rm", "timeout", "head", "cat", "tail"])
    fake = folder / "nvidia-smi"
    fake.write_text('#!/bin/sh\ncase "$*" in *compute_cap*) echo 9.0 ;; '
                    '*) echo "0, NVIDIA H100 80GB HBM3, 550.54.15, 81559 MiB" ;; esac\n')
    fake.chmod(0o755)
    import mxnet as mx

    if mx.runtime.Features().is_enabled("CUDA"):
        pytest.skip("this MXNet has CUDA: the script would go on to train")
    result = _run(folder, tmp_path)
    assert result.returncode == 1, result.stdout
    out = result.stdout + result.stderr
    assert "NVIDIA H100 80GB HBM3, 550.54.15" in out and "compute capability of GPU 0: 9.0" in out
    assert "CPU build: install mxnet-cu112" in out and "MXNet cannot compute on GPU 0" in out
