"""Number types for inference and training: which dtype a device list runs fast, and a network
converted to it for prediction.

A leaf module (MXNet is imported inside the functions): ``gluondet eval``, ``detect`` and ``export``
convert networks with it without importing the training engine; ``engine/amp.py`` builds mixed
precision training on the same choice.
"""
from .errors import GluondetError

FLOAT32, BFLOAT16, FLOAT16 = "float32", "bfloat16", "float16"
DTYPES = (FLOAT32, BFLOAT16, FLOAT16)
# /proc/cpuinfo flags that mean oneDNN runs bf16 convolutions natively (AVX512-BF16, AMX).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = "/proc/cpuinfo"


def cpu_flags(cpuinfo_text=None):
    """The CPU feature flags of the first processor in /proc/cpuinfo (empty where there is none)."""
    if cpuinfo_text is None:
        try:
            with open(CPUINFO, encoding="utf-8", errors="replace") as f:
                cpuinfo_text = f.read()
        except OSError:
            return set()
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_has_bf16(flags=None):
    """True when the CPU runs bf16 convolutions natively (see BF16_CPU_FLAGS)."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def choose_dtype(requested, device_kinds, flags=None):
    """(dtype to use, note for the user or None) for a requested dtype on devices ("cpu"/"gpu").

    ``requested`` is float32, bfloat16, float16 or "auto" (what ``--amp`` asks for: the fast type
    of the devices). A type the devices cannot run fast is refused (GluondetError) when asked for
    by name and becomes float32 with a note when asked for by ``--amp``.
    """
    if requested not in DTYPES + ("auto",):
        raise GluondetError(f"dtype '{requested}': use one of {', '.join(DTYPES)}")
    if requested == FLOAT32:
        return FLOAT32, None
    kinds = set(device_kinds)
    if kinds == {"cpu", "gpu"}:
        raise GluondetError("mixed precision needs devices of one kind: all CPUs or all GPUs")
    if kinds == {"gpu"}:
        if requested == BFLOAT16:
            raise GluondetError("bfloat16 runs on CPUs here (oneDNN); on GPUs use float16 (--amp)")
        return FLOAT16, None
    if requested == FLOAT16:
        raise GluondetError("float16 runs on GPUs; on CPUs use bfloat16")
    if cpu_has_bf16(flags):
        return BFLOAT16, None
    note = (f"this CPU has no native bfloat16 ({' or '.join(BF16_CPU_FLAGS)} not in {CPUINFO}), "
            "where it would be slower than float32: staying in float32")
    if requested == BFLOAT16:
        raise GluondetError(note.replace(": staying in float32", ""))
    return FLOAT32, note


def low_precision_block(net, dtype, ctx, sample):
    """A SymbolBlock that runs the hybridized ``net`` in ``dtype`` (inference only).

    MXNet's ``convert_hybrid_block`` rewrites the graph ``net`` traced on ``sample`` with casts
    around the operators safe in ``dtype``; the weights stay float32 and are shared, not copied
    by hand. Unlike ``init_amp`` this changes nothing else in the process.
    """
    import warnings

    from mxnet.contrib import amp

    net(sample)  # the cached graph that convert_hybrid_block rewrites
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Cannot decide type for the following arguments"
        return amp.convert_hybrid_block(net, target_dtype=dtype, ctx=ctx)


def inference_block(net, dtype, ctx_list, sample_shape, static_shape):
    """``net`` (hybridized, predict mode) computing in ``dtype`` on every context of ``ctx_list``:
    itself for float32, else its low-precision conversion, traced on zeros of ``sample_shape`` and
    hybridized as the family wants (``static_shape``: inputs of one fixed shape)."""
    import mxnet as mx

    if dtype == FLOAT32:
        return net
    sample = mx.nd.zeros(sample_shape, ctx=ctx_list[0])
    converted = low_precision_block(net, dtype, ctx_list[0], sample)
    converted.collect_params().reset_ctx(list(ctx_list))
    converted.hybridize(static_alloc=True, static_shape=static_shape)
    return converted
