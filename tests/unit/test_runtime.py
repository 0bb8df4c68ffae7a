"""Device parsing, thread sizing and the engine choice (gluondet/runtime.py)."""
import json
import os
import subprocess
import sys

import pytest

from gluondet.errors import GluondetError
from gluondet.runtime import OMP_SPIN_COUNT, _stderr_without, make_contexts, parse_ctx_spec, usable_cpus


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


def _seen_by_child(env, name="OMP_NUM_THREADS"):
    """The variable ``name`` after configure_threads() in a fresh process started with ``env``."""
    code = ("from gluondet.runtime import configure_threads; configure_threads(); "
            f"import os; print(os.environ.get({name!r}, 'unset'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_configure_threads_sizes_pool_to_usable_cpus():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS")}
    assert _seen_by_child(env) == str(usable_cpus())


def test_configure_threads_keeps_user_choice():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    assert _seen_by_child(env) == "1"


def test_configure_threads_shortens_openmps_spinning_unless_the_user_chose():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    spin = str(OMP_SPIN_COUNT)
    assert _seen_by_child(env, "GOMP_SPINCOUNT") == spin
    assert _seen_by_child(dict(env, OMP_NUM_THREADS="1"), "GOMP_SPINCOUNT") == spin  # threads chosen, spin not
    assert _seen_by_child(dict(env, GOMP_SPINCOUNT="7"), "GOMP_SPINCOUNT") == "7"
    # a wait policy the user chose is left to OpenMP: no spin count beside it
    assert _seen_by_child(dict(env, OMP_WAIT_POLICY="ACTIVE"), "GOMP_SPINCOUNT") == "unset"


def test_configure_threads_leaves_cudnn_autotuning_on():
    # MXNET_CUDNN_AUTOTUNE_DEFAULT=0 slows every GPU convolution; gluondet must not set it
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MXNET_CUDNN_AUTOTUNE_DEFAULT")}
    assert _seen_by_child(env, "MXNET_CUDNN_AUTOTUNE_DEFAULT") == "unset"


ENGINE_PROBE = """
import json, os, sys
from gluondet.runtime import configure_engine
chosen = configure_engine(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
import mxnet as mx
mx.nd.ones((2, 2)).sum().wait_to_read()  # MXNet names a chosen engine once its engine starts
from gluondet.data.loader import default_num_workers
print(chosen, os.environ.get("MXNET_ENGINE_TYPE", "default"), default_num_workers())
"""


def _engine_in_child(ctx, kvstore="local", num_workers=None, **env):
    """(what configure_engine returned, the engine MXNet runs on, default loader workers), stderr."""
    environ = {k: v for k, v in os.environ.items() if k != "MXNET_ENGINE_TYPE"}
    out = subprocess.run([sys.executable, "-c", ENGINE_PROBE, ctx, kvstore, json.dumps(num_workers)],
                         env={**environ, **env}, capture_output=True, text=True, check=True, timeout=120)
    chosen, engine, workers = out.stdout.split()
    return (chosen, engine, int(workers)), out.stderr


def test_cpu_work_runs_on_the_synchronous_engine_loading_in_process_without_its_notice():
    (chosen, engine, workers), stderr = _engine_in_child("cpu0,cpu1")
    assert (chosen, engine, workers) == ("NaiveEngine", "NaiveEngine", 0)
    assert "start using engine" not in stderr, stderr


@pytest.mark.parametrize("ctx, kvstore, num_workers", [
    ("gpu0", "local", None), ("cpu,gpu1", "device", None), ("cpu", "dist_sync", None),
    ("cpu", "local", 1),  # worker processes asked for: forked, which the synchronous engine's pool is not safe to
])
def test_gpus_dist_kvstores_and_loader_workers_keep_the_asynchronous_engine(ctx, kvstore, num_workers):
    (chosen, engine, workers), _ = _engine_in_child(ctx, kvstore, num_workers)
    assert (chosen, engine) == ("None", "default")
    assert workers == max(1, min(4, usable_cpus() // 2))


def test_an_engine_the_user_chose_is_kept():
    (chosen, engine, _), stderr = _engine_in_child("cpu", MXNET_ENGINE_TYPE="ThreadedEngine")
    assert (chosen, engine) == ("None", "ThreadedEngine")
    assert "start using engine: ThreadedEngine" in stderr  # MXNet's own notice, not hidden then


def test_stderr_filter_drops_only_the_notice_even_when_the_block_fails(capfd):
    with pytest.raises(RuntimeError), _stderr_without("NOTICE"):
        os.write(2, b"kept from C\nthe NOTICE line\n")
        os.write(2, "kept too: 安全帽\n".encode())
        raise RuntimeError
    assert capfd.readouterr().err == "kept from C\nkept too: 安全帽\n"
