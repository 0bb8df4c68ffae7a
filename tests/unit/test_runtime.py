"""Device parsing and thread sizing (gluondet/runtime.py)."""
import os
import subprocess
import sys

import pytest

from gluondet.errors import GluondetError
from gluondet.runtime import make_contexts, parse_ctx_spec, usable_cpus


@pytest.mark.parametrize("spec, expected", [
    ("cpu", [("cpu", 0)]),
    ("cpu0,cpu1", [("cpu", 0), ("cpu", 1)]),
    ("gpu0,gpu1", [("gpu", 0), ("gpu", 1)]),
    ("GPU:1", [("gpu", 1)]),
    (" gpu2 , cpu ", [("gpu", 2), ("cpu", 0)]),
])
def test_parse_ctx_spec(spec, expected):
    assert parse_ctx_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", "tpu0", "gpu-1", "cpu0,cpu0", "gpu0;gpu1"])
def test_parse_ctx_spec_rejects(spec):
    with pytest.raises(GluondetError, match="--ctx"):
        parse_ctx_spec(spec)


def test_missing_gpu_is_a_clear_error():
    import mxnet as mx

    if mx.context.num_gpus() > 0:
        pytest.skip("this machine has a GPU")
    with pytest.raises(GluondetError, match="gpu0 but this machine has no GPU"):
        make_contexts("gpu0")


def test_two_cpu_contexts_are_distinct():
    ctxs = make_contexts("cpu0,cpu1")
    assert len(ctxs) == 2 and ctxs[0] != ctxs[1]


def test_usable_cpus_respects_affinity():
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


def _omp_threads_seen_by_child(env):
    code = ("from gluondet.runtime import configure_threads; configure_threads(); "
            "import os; print(os.environ['OMP_NUM_THREADS'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_configure_threads_sizes_pool_to_usable_cpus():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS")}
    assert _omp_threads_seen_by_child(env) == str(usable_cpus())


def test_configure_threads_keeps_user_choice():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    assert _omp_threads_seen_by_child(env) == "1"


def test_configure_threads_leaves_cudnn_autotuning_on():
    # MXNET_CUDNN_AUTOTUNE_DEFAULT=0 slows every GPU convolution; gluondet must not set it
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MXNET_CUDNN_AUTOTUNE_DEFAULT")}
    code = ("from gluondet.runtime import configure_threads; configure_threads(); "
            "import os; print(os.environ.get('MXNET_CUDNN_AUTOTUNE_DEFAULT', 'unset'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "unset"
