"""--amp and --dtype end to end: a tiny --amp training run with the NaN guard (in a child process:
AMP is process-wide), and detect / export / eval of a trained run in bfloat16 against float32."""
import json
import subprocess
import sys
import textwrap

import mxnet as mx
import numpy as np
import pytest
import yaml

from gluondet.precision import cpu_has_bf16

from cli_helpers import invoke_cli

NEEDS_BF16 = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no avx512_bf16/amx_bf16")

TINY_YAML = """\
family: ssd
builder: tiny_ssd
data_shape: 64
train: {batch_size: 2, lr: 0.02, warmup_epochs: 0, augment: flip}
"""

# Trains with --amp; in epoch 2, iteration 1 every weight turns NaN (a divergence; the first layer
# alone would not do: ReLU turns NaN into 0): the divergence guard leaves that step out, and
# (--on-diverge stop) stops at the end of the epoch, whose weights are not finite, before its
# commit: epoch 1 stays the last committed one.
CHILD = r"""
import json, sys
import mxnet as mx
from gluondet.config import resolve_model_config, resolve_train_config
from gluondet.engine.train import LossNotFinite, train
from gluondet.engine.trainer import HookBase

class Diverge(HookBase):
    def before_step(self):
        state = self.trainer.state
        if (state.epoch, state.iteration) == (1, 1):
            for param in self.trainer.net.collect_params().values():
                param.set_data(mx.nd.full(param.shape, float("nan")))

model, dataset, out = sys.argv[1:4]
config = resolve_train_config(resolve_model_config(model), {
    "dataset": dataset, "model": model, "out": out, "epochs": 3, "max_iters": 2, "num_workers": 0,
    "amp": True, "quiet": True, "on_diverge": "stop"})
try:
    train(config, extra_hooks=[Diverge()])
    print(json.dumps({"stopped": None}))
except LossNotFinite as e:
    print(json.dumps({"stopped": str(e)}))
"""


@pytest.mark.slow
def test_amp_training_checkpoints_float32_and_the_nan_guard_still_stops_it(tmp_path):
    from gluondet.data.synth import write_shapes_voc

    data = write_shapes_voc(tmp_path / "micro", n_train=6, n_val=2, seed=3, size=96)
    model = tmp_path / "tiny.yaml"
    model.write_text(TINY_YAML, encoding="utf-8")
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD), str(model), str(data),
                          str(tmp_path / "run")], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    stopped = json.loads(out.stdout.strip().splitlines()[-1])["stopped"]
    assert stopped and "loss is nan at epoch 2" in stopped and "weights are no longer finite" in stopped
    run = tmp_path / "run"
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert saved["train"]["amp"] is True
    if cpu_has_bf16():
        assert saved["precision"] == "bfloat16"
    else:  # said in one line, and trained in float32
        assert saved["precision"] == "float32" and "no native bfloat16" in out.stderr
    assert json.loads((run / "last.json").read_text())["epoch"] == 1
    weights = mx.nd.load(str(run / "last.params"))
    assert {w.dtype for w in weights.values()} == {np.float32}
    assert all(np.isfinite(w.asnumpy()).all() for w in weights.values())


def _cli(args):
    result = invoke_cli(args)
    assert result.exit_code == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def held_back_folder(tmp_path_factory, held_back_shapes):
    import cv2

    folder = tmp_path_factory.mktemp("held_back_bf16")
    for k in range(12):
        sample = held_back_shapes(seed=2000 + k)
        cv2.imwrite(str(folder / f"{k:02d}.png"), sample.image[:, :, ::-1])
    return folder


def _top_boxes(json_path):
    return [(img["boxes"][0]["class"], img["boxes"][0]["bbox"]) if img["boxes"] else None
            for img in json.loads(json_path.read_text())["images"]]


@NEEDS_BF16
def test_detect_export_and_eval_in_bfloat16_agree_with_float32(trained_tiny_run, held_back_folder, tmp_path,
                                                               box_iou):
    runs = {}
    for dtype in ("float32", "bfloat16"):
        _cli(["detect", held_back_folder, "--run", trained_tiny_run, "--no-draw", "-q", "--dtype", dtype,
              "--thresh", 0, "--json", tmp_path / f"{dtype}.json"])  # thresh 0: every image has a top box
        runs[dtype] = _top_boxes(tmp_path / f"{dtype}.json")
    same = [a is not None and b is not None and a[0] == b[0] and box_iou(a[1], b[1]) >= 0.9
            for a, b in zip(runs["float32"], runs["bfloat16"])]
    assert sum(same) >= 0.9 * len(same), runs

    _cli(["export", trained_tiny_run, "--out", tmp_path / "export", "--dtype", "bfloat16"])
    assert json.loads((tmp_path / "export" / "export.json").read_text())["dtype"] == "bfloat16"
    assert '"amp_cast"' in (tmp_path / "export" / "model-symbol.json").read_text()
    _cli(["detect", held_back_folder, "--run", tmp_path / "export", "--no-draw", "-q", "--thresh", 0,
          "--json", tmp_path / "export.json"])
    assert _top_boxes(tmp_path / "export.json") == runs["bfloat16"]

    scores = {}
    for dtype in ("float32", "bfloat16"):
        _cli(["eval", trained_tiny_run, "--split", "val", "--dtype", dtype, "--json", tmp_path / f"eval-{dtype}.json"])
        scores[dtype] = json.loads((tmp_path / f"eval-{dtype}.json").read_text())
    assert scores["bfloat16"]["dtype"] == "bfloat16"
    assert abs(scores["bfloat16"]["map"] - scores["float32"]["map"]) <= 0.02


def test_export_refuses_a_dtype_with_int8(trained_tiny_run, tmp_path):
    result = invoke_cli(["export", trained_tiny_run, "--out", tmp_path / "x", "--int8", "--dtype", "bfloat16"])
    assert result.exit_code != 0 and "does not combine with --int8" in result.stderr
