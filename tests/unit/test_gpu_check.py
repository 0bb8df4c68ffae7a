"""Which GPUs the installed MXNet can run on (gluondet/runtime.py: gpu_code, check_gpu_code), and
scripts/gpu_check.sh, which fails at once, saying why, where there is no GPU it can check.

No GPU here: the GPUs are a stand-in nvidia-smi, the libraries a real nvcc-built fixture (its
listing from NVIDIA's cuobjdump) and ELF files written to the fatbinary layout that fixture shows.
"""
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from gluondet.errors import GluondetError
from gluondet.runtime import check_gpu_code, gpu_code, make_contexts, runs_on, visible_gpus

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"
# nvcc 13.0 -shared -cudart none -gencode arch=compute_75,code=sm_75 -gencode arch=compute_86,code=sm_86
#   -gencode arch=compute_90,code=compute_90 (two .cu files of one kernel each), stripped. cuobjdump
# 13.4 --list-elf --list-ptx: sm_75.cubin, sm_86.cubin, sm_90.ptx for each of the two kernels.
NVCC_LIBRARY = Path(__file__).parent / "fixtures" / "cuda_sm75_sm86_ptx90.so"
# what cuobjdump lists in libmxnet.so of the mxnet-cu112 1.9.1 wheel (990 cubins, no PTX)
MXNET_CU112 = [50, 60, 70, 80, 86]
H100 = {"index": "0", "uuid": "GPU-9d1c", "name": "NVIDIA H100 80GB HBM3", "compute_cap": "9.0",
        "driver_version": "550.54.15", "memory.total": "81559 MiB"}


def fake_cuda_library(path, sass=(), ptx=(), units=2):
    """A 64-bit ELF file whose .nv_fatbin section holds ``units`` fatbinary containers (one per
    compilation unit), each with a machine-code entry per ``sass`` and a PTX entry per ``ptx``
    architecture (86 for sm_86), laid out as in the nvcc fixture."""
    entries = b""
    for kind, archs in ((2, sass), (1, ptx)):
        for arch in archs:
            payload = bytes(range(48))
            entries += struct.pack("<HHIQIIHHI", kind, 0x0101, 64, len(payload), 0, 0, 0, 0, arch)
            entries = entries.ljust(len(entries) + 32, b"\0") + payload
    fatbin = (struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(entries)) + entries) * units
    names = b"\0.shstrtab\0.nv_fatbin\0"
    names_at, fatbin_at = 64, 64 + len(names)
    sections_at = fatbin_at + len(fatbin)
    header = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01", 3, 62, 1, 0, 0, sections_at,
                         0, 64, 0, 0, 64, 3, 1)
    section = struct.Struct("<IIQQQQIIQQ")
    table = (section.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
             + section.pack(1, 3, 0, 0, names_at, len(names), 0, 0, 1, 0)
             + section.pack(11, 1, 2, 0, fatbin_at, len(fatbin), 0, 0, 8, 0))
    path.write_bytes(header + names + fatbin + table)
    return path


def fake_nvidia_smi(folder, gpus):
    """An nvidia-smi answering --query-gpu=FIELDS --format=csv,noheader for ``gpus`` (dicts)."""
    folder.mkdir(exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f"#!{sys.executable}\nimport sys\ngpus = {json.dumps(gpus)}\n"
                      "fields = next(a for a in sys.argv if a.startswith('--query-gpu='))[12:].split(',')\n"
                      "for gpu in gpus:\n    print(', '.join(gpu[f] for f in fields))\n")
    script.chmod(0o755)
    return folder


def gpu(index, name, cc, uuid=None):
    return {**H100, "index": str(index), "name": name, "compute_cap": cc, "uuid": uuid or f"GPU-{index}aaa"}


def test_the_parser_reads_what_cuobjdump_lists_in_a_real_nvcc_library():
    assert gpu_code(str(NVCC_LIBRARY)) == ({(7, 5), (8, 6)}, {(9, 0)})


def test_the_parser_reads_a_library_laid_out_like_the_fixture(tmp_path):
    library = fake_cuda_library(tmp_path / "libmxnet.so", sass=MXNET_CU112)
    assert gpu_code(str(library)) == ({(5, 0), (6, 0), (7, 0), (8, 0), (8, 6)}, set())
    both = fake_cuda_library(tmp_path / "both.so", sass=[61], ptx=[52, 90], units=3)
    assert gpu_code(str(both)) == ({(6, 1)}, {(5, 2), (9, 0)})


def test_a_cpu_library_has_no_gpu_code():
    import mxnet as mx

    if mx.runtime.Features().is_enabled("CUDA"):
        pytest.skip("this MXNet is a CUDA build")
    assert gpu_code(mx.libinfo.find_lib_path()[0]) == (set(), set())


@pytest.mark.parametrize("cc, runs", [
    ((9, 0), False), ((10, 0), False), ((3, 7), False),  # Hopper, Blackwell, Kepler (K80)
    ((8, 6), True), ((8, 9), True), ((8, 0), True), ((8, 7), True),  # Ampere, Ada (sm_86 or sm_80)
    ((7, 5), True), ((7, 0), True), ((6, 1), True), ((5, 2), True),  # Turing, Volta, Pascal, Maxwell
])
def test_machine_code_runs_on_its_own_generation_from_its_minor_on(cc, runs):
    sass = {divmod(arch, 10) for arch in MXNET_CU112}
    assert runs_on(cc, sass, set()) is runs


def test_ptx_runs_on_its_capability_and_newer():
    assert runs_on((9, 0), {(8, 6)}, {(9, 0)}) and runs_on((12, 0), set(), {(9, 0)})
    assert not runs_on((8, 9), set(), {(9, 0)}) and not runs_on((8, 0), {(8, 6)}, set())


def test_a_hopper_gpu_with_the_cu112_library_is_refused_in_one_line(tmp_path, monkeypatch):
    library = fake_cuda_library(tmp_path / "libmxnet.so", sass=MXNET_CU112)
    monkeypatch.setenv("PATH", f"{fake_nvidia_smi(tmp_path / 'bin', [H100])}:/usr/bin:/bin")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(GluondetError) as refused:
        check_gpu_code([0], str(library))
    line = str(refused.value)
    assert "\n" not in line
    assert "gpu0 is NVIDIA H100 80GB HBM3, compute capability 9.0" in line
    assert "machine code for compute capability 5.0, 6.0, 7.0, 8.0, 8.6 and no PTX" in line
    assert str(library) in line and "sm_90" in line


@pytest.mark.parametrize("name, cc", [("NVIDIA A10", "8.6"), ("NVIDIA L4", "8.9"), ("Tesla T4", "7.5")])
def test_ampere_ada_and_turing_gpus_are_accepted(tmp_path, monkeypatch, name, cc):
    library = fake_cuda_library(tmp_path / "libmxnet.so", sass=MXNET_CU112)
    monkeypatch.setenv("PATH", f"{fake_nvidia_smi(tmp_path / 'bin', [gpu(0, name, cc)])}:/usr/bin:/bin")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    check_gpu_code([0], str(library))


def test_cuda_visible_devices_picks_the_gpu_by_index_or_uuid(tmp_path, monkeypatch):
    library = fake_cuda_library(tmp_path / "libmxnet.so", sass=MXNET_CU112)
    gpus = [gpu(0, "NVIDIA A100-SXM4-40GB", "8.0", "GPU-a100"), gpu(1, "NVIDIA H100 PCIe", "9.0", "GPU-h100")]
    monkeypatch.setenv("PATH", f"{fake_nvidia_smi(tmp_path / 'bin', gpus)}:/usr/bin:/bin")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    check_gpu_code([0], str(library))
    with pytest.raises(GluondetError, match="gpu1 is NVIDIA H100 PCIe, compute capability 9.0"):
        check_gpu_code([0, 1], str(library))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with pytest.raises(GluondetError, match="gpu0 is NVIDIA H100 PCIe"):
        check_gpu_code([0], str(library))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-a1")  # a UUID prefix, as CUDA takes it
    assert visible_gpus() == [("NVIDIA A100-SXM4-40GB", (8, 0))]
    check_gpu_code([0], str(library))


def test_without_an_answer_from_nvidia_smi_it_says_nothing(tmp_path, monkeypatch):
    library = fake_cuda_library(tmp_path / "libmxnet.so", sass=MXNET_CU112)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi at all
    assert visible_gpus() is None
    check_gpu_code([0], str(library))
    old = tmp_path / "old"  # a driver too old for the compute_cap field answers [N/A] or fails
    fake_nvidia_smi(old, [{**H100, "compute_cap": "[N/A]"}])
    monkeypatch.setenv("PATH", f"{old}:/usr/bin:/bin")
    assert visible_gpus() is None
    check_gpu_code([0], str(library))


def test_make_contexts_refuses_before_any_work(tmp_path, monkeypatch):
    # The library MXNet would load, found as MXNet finds it: MXNET_LIBRARY_PATH first.
    import mxnet as mx

    library = fake_cuda_library(tmp_path / "libmxnet.so", sass=MXNET_CU112)
    monkeypatch.setenv("MXNET_LIBRARY_PATH", str(library))
    monkeypatch.setenv("PATH", f"{fake_nvidia_smi(tmp_path / 'bin', [H100])}:/usr/bin:/bin")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(mx.context, "num_gpus", lambda: 1)
    with pytest.raises(GluondetError, match=r"gpu0 is NVIDIA H100 80GB HBM3, compute capability 9\.0"):
        make_contexts("cpu0,gpu0")


# ----------------------------------------------------------------------------- scripts/gpu_check.sh
def _bin_with(tmp_path, tools):
    """A PATH folder holding only ``tools`` (links to the real ones), so no nvidia-smi leaks in."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in tools:
        (folder / tool).symlink_to(shutil.which(tool))
    return folder


def _run(path, tmp_path, **env):
    env = {"PATH": str(path), "PYTHON": sys.executable, "TMPDIR": str(tmp_path), "HOME": str(tmp_path), **env}
    return subprocess.run([shutil.which("bash"), str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


SCRIPT_TOOLS = ["dirname", "mktemp", "rm", "timeout", "head", "cat", "tail"]


def test_without_a_driver_it_stops_at_once(tmp_path):
    result = _run(_bin_with(tmp_path, ["dirname", "mktemp", "rm"]), tmp_path)
    assert result.returncode == 1
    assert "no nvidia-smi on PATH" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.glob("gpu_check.*")) == []  # its work folder is removed


def test_its_first_step_refuses_a_gpu_the_library_has_no_code_for(tmp_path, monkeypatch):
    folder = fake_nvidia_smi(_bin_with(tmp_path, SCRIPT_TOOLS), [H100])
    library = fake_cuda_library(tmp_path / "libmxnet.so", sass=MXNET_CU112)
    result = _run(folder, tmp_path, MXNET_LIBRARY_PATH=str(library))
    assert result.returncode == 1, result.stdout
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(GluondetError) as same:
        check_gpu_code([0], str(library))  # what gluondet train --ctx gpu0 would say
    assert f"gpu_check: FAILED: {same.value}" in result.stderr.splitlines()
    assert "machine code for compute capability 5.0, 6.0, 7.0, 8.0, 8.6 and no PTX" in result.stdout


def test_its_first_step_accepts_an_ada_gpu(tmp_path):
    folder = fake_nvidia_smi(_bin_with(tmp_path, SCRIPT_TOOLS), [gpu(0, "NVIDIA L4", "8.9")])
    library = fake_cuda_library(tmp_path / "libmxnet.so", sass=MXNET_CU112)
    result = _run(folder, tmp_path, MXNET_LIBRARY_PATH=str(library))
    assert "gpu0 NVIDIA L4 (compute capability 8.9): the installed MXNet has code for it" in result.stdout
    assert "has no code for it" not in result.stdout + result.stderr
    # it goes on to load that "library" in MXNet, which a file of headers only cannot be
    assert result.returncode == 1 and "MXNet cannot compute on GPU 0" in result.stderr


def test_with_a_gpu_but_a_cpu_only_mxnet_it_names_the_wheel(tmp_path):
    folder = fake_nvidia_smi(_bin_with(tmp_path, SCRIPT_TOOLS), [H100])
    import mxnet as mx

    if mx.runtime.Features().is_enabled("CUDA"):
        pytest.skip("this MXNet has CUDA: the script would go on to train")
    result = _run(folder, tmp_path)
    assert result.returncode == 1, result.stdout
    out = result.stdout + result.stderr
    assert "NVIDIA H100 80GB HBM3, 550.54.15" in out and "compute capability of GPU 0: 9.0" in out
    assert "no GPU code at all (a CPU build)" in out
    assert "CPU build: install mxnet-cu112" in out and "MXNet cannot compute on GPU 0" in out
