"""Process-level set-up that must happen before MXNet is imported, and device (context) parsing.

MXNet sizes its OpenMP pool to half the cores on x86 unless told otherwise; sizing it to the CPUs
this process may really use (affinity mask, cgroup CPU quota) made SSD training 1.9x and Faster
R-CNN 1.7x faster on a 2-core machine. ``configure_threads`` does that, once, and leaves any value
the user set alone. ``configure_engine`` then picks MXNet's engine for the devices (see there).
"""
import contextlib
import math
import os
import re
import signal
import sys
import tempfile
import threading

from .errors import GluondetError

SYNC_ENGINE = "NaiveEngine"  # MXNet's synchronous engine (MXNET_ENGINE_TYPE)
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


def configure_threads():
    """Size MXNet's OpenMP pool to the usable CPUs, unless the user chose; returns the count in use.

    Has an effect only before ``import mxnet``; the CLI calls it first thing.
    """
    chosen = os.environ.get("OMP_NUM_THREADS") or os.environ.get("MXNET_OMP_MAX_THREADS")
    if chosen:
        return int(chosen) if chosen.isdigit() else chosen
    if "mxnet" in sys.modules:
        return None
    n = usable_cpus()
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
    cores with the Python thread, and each parallel region waits for a preempted team member. On 2
    cores that made mask_rcnn_tiny train at 0.68x GluonCV's one-thread loop and detect at 0.55x;
    on the synchronous engine (Python runs each operator itself: no third thread), with the data
    read in the main process, both are faster than that loop, mask_rcnn_tiny and tiny_ssd train
    ~1.8x faster than before, and SSD512, bound by its convolutions, is unchanged
    (scripts/bench/bench_engine.py, bench_mask_rcnn.py). Kept asynchronous: GPUs (the engine
    overlaps Python with the device), dist kvstores (their pushes complete on other threads, which
    the synchronous engine refuses), and loader worker processes the user asked for
    (``num_workers`` > 0): a worker forked from the thread that ran OpenMP regions can wait
    forever for that pool's threads, which the fork did not copy (seen in an SSD512 benchmark run).
    ``data.loader.default_num_workers`` is 0 on this engine. No effect once MXNet is imported.
    """
    if "MXNET_ENGINE_TYPE" in os.environ or "mxnet" in sys.modules or num_workers:
        return None
    if str(kvstore).startswith("dist") or any(kind == "gpu" for kind, _ in parse_ctx_spec(ctx_spec)):
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
                "use --ctx cpu, or install mxnet-cu112 (pip install gluondet[cu112]) on a CUDA machine"
            )
    return [mx.gpu(i) if kind == "gpu" else mx.cpu(i) for kind, i in devices]


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
