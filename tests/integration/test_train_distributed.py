"""gluondet train --kvstore dist_sync under gluondet launch, on loopback: 2 workers, 1 server.

Both workers finish, end with identical weights, read disjoint shards that together cover the
training set, and only worker 0 writes the run folder.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

GLUONDET = str(Path(sys.executable).parent / "gluondet")
WORKER = Path(__file__).with_name("dist_worker.py")  # gluondet train plus a hook that dumps each worker


def test_two_workers_train_the_tiny_ssd_in_sync(tmp_path):
    import mxnet as mx

    from gluondet.data.synth import write_shapes_voc

    data = write_shapes_voc(tmp_path / "shapes", n_train=24, n_val=6, seed=3, size=128)
    run_dir, dump = tmp_path / "run", tmp_path / "dump"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [GLUONDET, "launch", "-n", "2", "-s", "1", "--timeout", "240", "--",
           sys.executable, str(WORKER), str(dump), "train", "--dataset", str(data), "--model", "tiny_ssd", "--data-shape", "128",
           "--kvstore", "dist_sync", "--epochs", "2", "--batch-size", "4", "--max-iters", "2",
           "--num-workers", "0", "--out", str(run_dir)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    shards = [json.loads((dump / f"worker{r}.json").read_text())["image_ids"] for r in (0, 1)]
    assert not set(shards[0]) & set(shards[1])
    train_ids = (data / "ImageSets" / "Main" / "train.txt").read_text().split()
    assert sorted(shards[0] + shards[1]) == sorted(train_ids)

    weights = [mx.nd.load(str(dump / f"worker{r}.params")) for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    # The kvstore syncs what the optimizer updates. BatchNorm's running statistics are not
    # gradients: each worker keeps its own (as each GPU does under --ctx gpu0,gpu1), and the
    # run folder holds worker 0's.
    trained = [n for n in weights[0] if not n.endswith(("running_mean", "running_var"))]
    assert len(trained) > 10
    for name in trained:
        np.testing.assert_array_equal(weights[0][name].asnumpy(), weights[1][name].asnumpy(), err_msg=name)
    assert (run_dir / "best.params").is_file() and (run_dir / "last.json").is_file()
    assert json.loads((run_dir / "last.json").read_text())["epoch"] == 2

    output = done.stdout + done.stderr
    assert output.count("run folder:") == 1  # only worker 0 writes and reports the run folder
    assert "effective batch size 8" in output
    assert not (tmp_path / "runs").exists()
