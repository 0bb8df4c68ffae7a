"""Mixed precision (gluondet.engine.amp): which dtype runs where, and bfloat16 really computing.

``amp.init`` changes MXNet for the whole process, so the bfloat16 training checks run in a child
process and compare with float32 computed here on the same weights and data.
"""
import json
import subprocess
import sys
import textwrap

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from gluondet.engine.amp import Precision
from gluondet.precision import BFLOAT16, FLOAT16, FLOAT32, choose_dtype, cpu_flags, cpu_has_bf16
from gluondet.errors import GluondetError

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse avx2 avx512f avx512_vnni {extra}
bogomips\t: 4000.00

processor\t: 1
flags\t\t: fpu vme
"""
NEEDS_BF16 = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no avx512_bf16/amx_bf16")


def test_cpu_flags_are_read_from_the_first_processor():
    assert {"avx512f", "avx512_bf16"} <= cpu_flags(CPUINFO.format(extra="avx512_bf16"))
    assert cpu_flags("no flags here") == set()
    assert cpu_has_bf16(cpu_flags(CPUINFO.format(extra="amx_bf16 amx_tile")))
    assert not cpu_has_bf16(cpu_flags(CPUINFO.format(extra="")))


@pytest.mark.parametrize("requested, kinds, extra, expected", [
    ("auto", ["cpu"], "avx512_bf16", BFLOAT16),
    ("auto", ["cpu", "cpu"], "amx_bf16", BFLOAT16),
    ("auto", ["gpu", "gpu"], "", FLOAT16),
    ("bfloat16", ["cpu"], "avx512_bf16", BFLOAT16),
    ("float16", ["gpu"], "", FLOAT16),
    ("float32", ["cpu"], "", FLOAT32),
    ("float32", ["gpu"], "", FLOAT32),
])
def test_the_fast_type_of_the_devices(requested, kinds, extra, expected):
    assert choose_dtype(requested, kinds, cpu_flags(CPUINFO.format(extra=extra))) == (expected, None)


def test_amp_on_a_cpu_without_bf16_says_so_and_stays_float32():
    dtype, note = choose_dtype("auto", ["cpu"], cpu_flags(CPUINFO.format(extra="")))
    assert dtype == FLOAT32 and "avx512_bf16" in note and "float32" in note and "\n" not in note


@pytest.mark.parametrize("requested, kinds, extra, message", [
    ("bfloat16", ["cpu"], "", "no native bfloat16"),
    ("float16", ["cpu"], "avx512_bf16", "float16 runs on GPUs"),
    ("bfloat16", ["gpu"], "", "use float16"),
    ("auto", ["cpu", "gpu"], "avx512_bf16", "one kind"),
    ("int8", ["cpu"], "", "use one of"),
])
def test_a_type_asked_for_by_name_that_would_be_slow_is_refused(requested, kinds, extra, message):
    with pytest.raises(GluondetError, match=message):
        choose_dtype(requested, kinds, cpu_flags(CPUINFO.format(extra=extra)))


def test_float32_precision_is_plain_autograd():
    net = gluon.nn.Dense(1, in_units=2)
    net.initialize(mx.init.Constant(0.5))
    precision = Precision.for_training(False, [mx.cpu()])
    assert precision.dtype == FLOAT32 and precision.trainer_options() == {}
    x = mx.nd.array([[1.0, 2.0]])
    with autograd.record():
        loss = (net(x) ** 2).sum()
        precision.backward(loss)
    # d/dw (w.x + b)^2 = 2 (w.x + b) x, with w = (0.5, 0.5) and b = 0 (Dense's bias starts at zero)
    np.testing.assert_allclose(net.weight.grad().asnumpy(), [[3.0, 6.0]])


def test_float16_scales_the_loss_and_updates_on_the_worker():
    precision = Precision(FLOAT16)
    assert precision.loss_scaling and precision.trainer_options() == {"update_on_kvstore": False}
    with pytest.raises(RuntimeError, match="attach"):
        precision.backward(mx.nd.ones(1))


CHILD = r"""
import json, sys
import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from gluondet.engine.amp import Precision

precision = Precision.for_training(True, [mx.cpu()])
net = gluon.nn.HybridSequential()
net.add(gluon.nn.Conv2D(8, 3, in_channels=3), gluon.nn.Activation("relu"), gluon.nn.Dense(2))
net.load_parameters(sys.argv[1])
net.hybridize()
x = mx.nd.array(np.load(sys.argv[2]))
with autograd.record():
    loss = (net(x) ** 2).mean()
    precision.backward(loss)
# the SSD's prediction graph calls F.arange, which MXNet's own bf16 lists break on
from gluondet.models.tiny_ssd import tiny_ssd
ssd = tiny_ssd(["a", "b"], data_shape=64)
ssd.initialize()
ssd.hybridize()
ids, scores, boxes = ssd(mx.nd.zeros((1, 3, 64, 64)))
print(json.dumps({"dtype": precision.dtype, "loss": float(loss.asscalar()),
                  "grad": net[0].weight.grad().asnumpy().ravel().tolist(),
                  "param_dtypes": sorted({str(p.data().dtype) for p in net.collect_params().values()}),
                  "ssd_boxes": list(boxes.shape)}))
"""


@NEEDS_BF16
def test_bfloat16_training_step_is_close_to_float32_and_keeps_float32_weights(tmp_path):
    mx.random.seed(1)
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Conv2D(8, 3, in_channels=3), gluon.nn.Activation("relu"), gluon.nn.Dense(2))
    net.initialize(mx.init.Xavier())
    x = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
    net(mx.nd.array(x))
    net.save_parameters(str(tmp_path / "w.params"))
    np.save(tmp_path / "x.npy", x)
    with autograd.record():
        loss = (net(mx.nd.array(x)) ** 2).mean()
    loss.backward()
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD), str(tmp_path / "w.params"),
                          str(tmp_path / "x.npy")], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    child = json.loads(out.stdout.strip().splitlines()[-1])
    assert child["dtype"] == "bfloat16" and child["param_dtypes"] == ["<class 'numpy.float32'>"]
    reference = float(loss.asscalar())
    # bf16 keeps 8 bits of mantissa: close, and not identical (it did compute in bf16)
    assert child["loss"] != reference and abs(child["loss"] - reference) <= 0.02 * abs(reference)
    grad = net[0].weight.grad().asnumpy().ravel()
    np.testing.assert_allclose(child["grad"], grad, rtol=0.05, atol=0.08 * np.abs(grad).max())
    assert child["ssd_boxes"][0] == 1 and child["ssd_boxes"][2] == 4


def _tiny_detector():
    from gluondet.models.tiny_ssd import tiny_ssd
    from gluondet.predict import Detector, ModelInfo

    mx.random.seed(0)
    net = tiny_ssd(["circle", "square"], data_shape=64)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 64, 64)))
    return Detector(net, ModelInfo(classes=["circle", "square"], family="ssd", data_shape=64))


def test_detector_refuses_float16_on_a_cpu():
    with pytest.raises(GluondetError, match="float16 runs on GPUs"):
        _tiny_detector().set_dtype("float16")


@NEEDS_BF16
def test_detector_in_bfloat16_runs_a_converted_graph_close_to_float32():
    detector = _tiny_detector()
    batch = np.random.default_rng(0).normal(size=(4, 3, 64, 64)).astype(np.float32)
    _, scores32, _ = detector.forward(batch)
    detector.set_dtype("bfloat16")
    graph = detector.inference_net._cached_graph[1].tojson(remove_amp_cast=False)
    assert detector.dtype == "bfloat16" and '"amp_cast"' in graph
    assert {p.data().dtype for p in detector.inference_net.collect_params().values()} == {np.float32}
    _, scores16, _ = detector.forward(batch)
    assert not np.array_equal(scores16, scores32)
    np.testing.assert_allclose(scores16[:, 0], scores32[:, 0], atol=0.05)  # each image's top score
    detector.set_dtype("float32")  # back to the network itself
    np.testing.assert_array_equal(detector.forward(batch)[1], scores32)
