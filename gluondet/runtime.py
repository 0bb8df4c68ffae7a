"""Process-level set-up that must happen before MXNet is imported, and device (context) parsing.

MXNet sizes its OpenMP pool to half the cores on x86 unless told otherwise; sizing it to the CPUs
this process may really use (affinity mask, cgroup CPU quota) is most of the speed README's table
measures against a default environment (bench_train_throughput.py). ``configure_threads`` does that, once, and leaves any value
the user set alone. ``configure_engine`` then picks MXNet's engine for the devices (see there).
``make_contexts`` refuses a GPU the installed MXNet has no machine code for (``check_gpu_code``).
"""
import contextlib
import csv
import functools
import importlib.util
import math
import mmap
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import threading

from .errors import GluondetError
from .extras import install_line

SYNC_ENGINE = "NaiveEngine"  # MXNet's synchronous engine (MXNET_ENGINE_TYPE)
OMP_SPIN_COUNT = 3000  # rounds an idle OpenMP thread spins before it sleeps (configure_threads)
ENGINE_NOTICE = "MXNet start using engine:"  # what MXNet logs when MXNET_ENGINE_TYPE is set


def usable_cpus():
    """CPUs this process may run on: the affinity mask, capped by a cgroup (v2 or v1) CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def _cgroup_cpu_quota():
    try:  # cgroup v2: "max 100000" or "200000 100000"
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", encoding="ascii") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us", encoding="ascii") as f:
            period = int(f.read())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


# Processes a launcher started on this machine, as horovodrun (Gloo), Open MPI and MPICH say it.
LOCAL_SIZE_ENV = ("HOROVOD_LOCAL_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS")


def launcher_local_processes(env=os.environ):
    """How many processes a Horovod/MPI launcher started on this machine (None: not under one)."""
    for name in LOCAL_SIZE_ENV:
        if env.get(name, "").isdigit() and int(env[name]) > 0:
            return int(env[name])
    return None


def configure_threads():
    """Size MXNet's OpenMP pool to the usable CPUs, unless the user chose; returns the count in use.
    The N processes a Horovod launcher starts on one machine share its CPUs: 1/N each, as
    ``gluondet launch`` gives its workers.

    OpenMP's threads also spin for a shorter while before they sleep (``GOMP_SPINCOUNT``, unless
    the user set it or ``OMP_WAIT_POLICY``): at the end of each parallel region (each operator) a
    finished thread spins, by default for ~300,000 rounds, and whenever anything else runs on the
    machine (another job, a test's second process) that spinning keeps its core from the member the
    region waits for: mask_rcnn_tiny trained 10x slower beside one busy process. Sleeping at once
    (``OMP_WAIT_POLICY=PASSIVE``) pays a wake-up per operator and halves it on an idle machine;
    ``OMP_SPIN_COUNT`` rounds keep the idle speed and most of the gain (scripts/bench/bench_omp_wait.py,
    README's speed table).

    Has an effect only before ``import mxnet``; the CLI calls it first thing.
    """
    if "mxnet" not in sys.modules and not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ):
        os.environ["GOMP_SPINCOUNT"] = str(OMP_SPIN_COUNT)
    chosen = os.environ.get("OMP_NUM_THREADS") or os.environ.get("MXNET_OMP_MAX_THREADS")
    if chosen:
        return int(chosen) if chosen.isdigit() else chosen
    if "mxnet" in sys.modules:
        return None
    n = max(1, usable_cpus() // (launcher_local_processes() or 1))
    os.environ["OMP_NUM_THREADS"] = str(n)
    # Nothing else: MXNET_CUDNN_AUTOTUNE_DEFAULT=0 would hide cuDNN's one-line autotune notice, but
    # it also turns the autotuning off and slows every GPU convolution (and CPU runs never print it).
    return n


def configure_engine(ctx_spec, kvstore="local", num_workers=None):
    """Start MXNet on its synchronous engine when the work runs on CPUs only, in one process,
    with its data read in that process (train, eval, detect call this first), unless the user
    chose an engine; returns the engine chosen here (SYNC_ENGINE) or None.

    Why: MXNet's default engine runs operators on a worker thread of its own while Python goes on
    dispatching; with the OpenMP pool sized to every CPU, that worker's OpenMP team then shares the
    cores with the Python thread, and each parallel region waits for a preempted team member. On the
    synchronous engine (Python runs each operator itself: no third thread), with the data read in
    the main process, the small networks train and detect much faster and SSD512, bound by its
    convolutions, is unchanged: README's speed table has the figures (scripts/bench/bench_engine.py,
    bench_mask_rcnn.py). Kept asynchronous: GPUs (the engine
    overlaps Python with the device), dist kvstores (their pushes complete on other threads, which
    the synchronous engine refuses), Horovod ranks (its MXNet operations complete on Horovod's own
    thread: the synchronous engine runs them, but drops their errors, so after a peer died an
    allreduce returned zeros and training went on; the default engine raises "Horovod has been shut
    down"), and loader worker processes the user asked for
    (``num_workers`` > 0): a worker forked from the thread that ran OpenMP regions can wait
    forever for that pool's threads, which the fork did not copy (seen in an SSD512 benchmark run).
    ``data.loader.default_num_workers`` is 0 on this engine. No effect once MXNet is imported.
    """
    if "MXNET_ENGINE_TYPE" in os.environ or "mxnet" in sys.modules or num_workers:
        return None
    if str(kvstore).startswith("dist") or kvstore == "horovod" \
            or any(kind == "gpu" for kind, _ in parse_ctx_spec(ctx_spec)):
        return None
    os.environ["MXNET_ENGINE_TYPE"] = SYNC_ENGINE
    with _stderr_without(ENGINE_NOTICE):
        import mxnet as mx

        mx.nd.zeros((1,)).wait_to_read()  # the engine starts at the first operator, with its notice
    return SYNC_ENGINE


def synchronous_engine():
    """Whether MXNet runs (or will run) on its synchronous engine in this process."""
    return os.environ.get("MXNET_ENGINE_TYPE") == SYNC_ENGINE


@contextlib.contextmanager
def _stderr_without(notice):
    """Whatever the block writes to file descriptor 2 (native libraries included), less the lines
    containing ``notice``, reaches stderr when it ends."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if notice not in line))


@contextlib.contextmanager
def handling_signals(signals, handler):
    """``handler`` for each of ``signals`` inside the block, the previous handlers back after it.

    A signal ignored when the block starts stays ignored: nohup's choice, or a script's background
    job's (``gluondet train ... &`` ignores Ctrl-C). Outside the main thread, where Python cannot
    set handlers, nothing changes.
    """
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in signals:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


_CTX_RE = re.compile(r"^(cpu|gpu)(\d*)$")


def parse_ctx_spec(spec):
    """Parse ``cpu``, ``cpu0,cpu1``, ``gpu0,gpu1`` (also ``gpu:0``) into [("cpu"|"gpu", index)]."""
    if not spec or not str(spec).strip():
        raise GluondetError("--ctx is empty: use cpu, cpuN, gpuN or a comma list such as gpu0,gpu1")
    devices = []
    for part in str(spec).replace(" ", "").split(","):
        m = _CTX_RE.match(part.replace(":", "").lower())
        if not m:
            raise GluondetError(f"--ctx: '{part}' is not a device; use cpu, cpuN, gpuN or a comma list")
        kind, index = m.group(1), int(m.group(2) or 0)
        if (kind, index) in devices:
            raise GluondetError(f"--ctx: '{part}' is listed twice")
        devices.append((kind, index))
    return devices


def make_contexts(spec):
    """MXNet contexts for a --ctx spec; a GPU that is not there is a GluondetError, not a crash."""
    import mxnet as mx

    devices = parse_ctx_spec(spec)
    gpus = [i for kind, i in devices if kind == "gpu"]
    if gpus:
        try:
            available = mx.context.num_gpus()
        except mx.base.MXNetError:
            available = 0
        missing = [i for i in gpus if i >= available]
        if missing:
            have = f"{available} GPU(s)" if available else "no GPU (or an MXNet build without CUDA)"
            raise GluondetError(
                f"--ctx asks for gpu{missing[0]} but this machine has {have}; "
                f"use --ctx cpu, or on a CUDA machine replace mxnet by mxnet-cu112 ({install_line('cu112')})"
            )
        check_gpu_code(gpus)
    return [mx.gpu(i) if kind == "gpu" else mx.cpu(i) for kind, i in devices]


# ------------------------------------------------------------ the GPUs the installed MXNet runs on
# A CUDA library carries, per kernel, machine code (SASS) for some GPU architectures and perhaps PTX.
# Machine code for sm_XY runs on compute capability X.Y up to X.9 (same major only); PTX for
# compute_XY is compiled by the driver for any X.Y or newer. mxnet-cu112 1.9.1 carries sm_50, 60,
# 70, 80 and 86 and no PTX, so a Hopper GPU (9.0) fails in its first kernel ("no kernel image is
# available"). What the library carries is read from the library itself, never from a table.
FATBIN_MAGIC = 0xBA55ED50  # an NVIDIA fatbinary container (section .nv_fatbin of a CUDA library)
FATBIN_PTX, FATBIN_SASS = 1, 2  # entry kinds


@functools.lru_cache(maxsize=4)
def gpu_code(library):
    """({(major, minor)} with machine code, {(major, minor)} with PTX) in an ELF CUDA library's
    fatbinaries; two empty sets for a library without any (a CPU build)."""
    sass, ptx = set(), set()
    with open(library, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:6] != b"\x7fELF\x02\x01":  # 64-bit little-endian ELF
            return sass, ptx
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        # Elf64_Shdr: sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, ...
        sections = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
        names_at = sections[shstrndx][4]
        for name_at, _, _, _, offset, size in sections:
            name = data[names_at + name_at:data.find(b"\0", names_at + name_at)]
            if name == b".nv_fatbin":
                _read_fatbin(data, offset, offset + size, sass, ptx)
    return sass, ptx


def _read_fatbin(data, start, end, sass, ptx):
    """Add each entry's architecture of the fatbinary containers in data[start:end] to sass or ptx."""
    magic = struct.pack("<I", FATBIN_MAGIC)
    at = data.find(magic, start, end)
    while at >= 0:
        _, _, header_size, fat_size = struct.unpack_from("<IHHQ", data, at)
        entry, container_end = at + header_size, at + header_size + fat_size
        while entry < container_end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            arch, = struct.unpack_from("<I", data, entry + 28)
            {FATBIN_SASS: sass, FATBIN_PTX: ptx}.get(kind, set()).add(divmod(arch, 10))
            entry += entry_header + payload
        at = data.find(magic, container_end, end)


def runs_on(capability, sass, ptx):
    """Whether code with these architectures runs on a GPU of ``capability`` (major, minor)."""
    major, minor = capability
    return any(m == major and n <= minor for m, n in sass) or any(arch <= capability for arch in ptx)


def mxnet_library():
    """The libmxnet.so that MXNet loads, found by MXNet's own mxnet/libinfo.py (MXNET_LIBRARY_PATH,
    LD_LIBRARY_PATH, the package), run without importing mxnet (mxnet-cu112 needs the driver)."""
    spec = importlib.util.find_spec("mxnet")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "libinfo.py")
    libinfo_spec = importlib.util.spec_from_file_location("_gluondet_mxnet_libinfo", path)
    libinfo = importlib.util.module_from_spec(libinfo_spec)
    try:
        libinfo_spec.loader.exec_module(libinfo)
        return libinfo.find_lib_path()[0]
    except (OSError, RuntimeError):
        return None


def visible_gpus(smi="nvidia-smi"):
    """[(name, (major, minor))] of the GPUs CUDA numbers 0, 1, ... (CUDA_VISIBLE_DEVICES applied,
    by index or UUID), from nvidia-smi; None when unknown (no nvidia-smi, or a driver too old to
    report compute capabilities). nvidia-smi lists GPUs in PCI order, as CUDA does with
    CUDA_DEVICE_ORDER=PCI_BUS_ID; its default, fastest first, can differ on a machine mixing models."""
    try:
        out = subprocess.run([smi, "--query-gpu=index,uuid,name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = []
    for row in csv.reader(out.splitlines(), skipinitialspace=True):
        cc = re.fullmatch(r"(\d+)\.(\d+)", row[-1].strip()) if len(row) == 4 else None
        if not cc:
            return None
        gpus.append((row[0].strip(), row[1].strip(), row[2].strip(), (int(cc[1]), int(cc[2]))))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        chosen = []
        for token in (t.strip() for t in visible.split(",")):
            match = [g for g in gpus if token == g[0] or (token.startswith("GPU-") and g[1].startswith(token))]
            if len(match) != 1:
                break  # CUDA stops at the first entry it cannot match
            chosen.append(match[0])
        gpus = chosen
    return [(name, cc) for _, _, name, cc in gpus]


def check_gpu_code(gpus, library=None):
    """A GluondetError, in one line, for the first of ``gpus`` (CUDA indices) that the installed
    MXNet has no code for: the GPU, its compute capability, the ones the library carries. Says
    nothing when it cannot know (no nvidia-smi, a library without GPU code)."""
    library = library or mxnet_library()
    try:
        sass, ptx = gpu_code(library) if library else (set(), set())
    except (OSError, ValueError, struct.error):  # unreadable or not an ELF library: cannot tell
        sass, ptx = set(), set()
    listed = visible_gpus() if sass or ptx else None
    for index in gpus:
        if listed and index < len(listed) and not runs_on(listed[index][1], sass, ptx):
            name, (major, minor) = listed[index]
            carried = ", ".join(f"{m}.{n}" for m, n in sorted(sass)) or "none"
            also = f" and PTX for {', '.join(f'{m}.{n}' for m, n in sorted(ptx))}" if ptx else " and no PTX"
            raise GluondetError(
                f"gpu{index} is {name}, compute capability {major}.{minor}, and the installed MXNet "
                f"has no code for it: {library} carries machine code for compute capability "
                f"{carried}{also}; use a GPU of those generations, or an MXNet built for "
                f"sm_{major}{minor} (README: \"Which GPUs\")")


def spread(array, ctx_list):
    """Slices of ``array`` along its first axis, one per device (fewer when there are fewer rows
    than devices), sizes differing by at most one, each copied to its device.

    Unlike ``gluon.utils.split_and_load(even_split=False)``, which gives the last device the whole
    remainder (7 images on 4 devices: 1, 1, 1, 4), the work stays balanced: 2, 2, 2, 1.
    """
    n = min(len(ctx_list), array.shape[0])
    base, extra = divmod(array.shape[0], n)
    parts, start = [], 0
    for i, ctx in enumerate(ctx_list[:n]):
        size = base + (1 if i < extra else 0)
        parts.append(array[start:start + size].as_in_context(ctx))
        start += size
    return parts
