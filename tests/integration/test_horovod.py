"""gluondet train --kvstore horovod under horovodrun on loopback (Gloo): 2 processes, the tiny SSD.

Checked against an independent replay: one process on two devices (cpu0 holds rank 0's images,
cpu1 rank 1's) trains on each step's union of the ranks' recorded batches with a plain
gluon.Trainer from rank 0's starting weights; both ranks must end with exactly the same weights,
and equal to the replay's to float tolerance. Also: the shards are disjoint and cover the training
set, one run folder, and a rank that dies or stops mid-epoch stops the job with the watchdog's line.

Skipped, saying why, where Horovod is not installed (scripts/install_horovod.sh; CI installs it).
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from output_lines import OutputLines

pytestmark = pytest.mark.slow

HOROVODRUN = Path(sys.executable).parent / "horovodrun"
WORKER = Path(__file__).with_name("horovod_worker.py")
BATCH, EPOCHS, ITERS = 4, 2, 2


def _horovod_missing():
    try:
        import horovod.mxnet  # noqa: F401
    except ImportError as e:
        return f"Horovod with MXNet is not installed here ({e}); scripts/install_horovod.sh builds it"
    if not HOROVODRUN.exists():
        return f"no horovodrun beside {sys.executable}"
    return None


if _horovod_missing():
    pytestmark = [pytestmark, pytest.mark.skip(reason=_horovod_missing())]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from gluondet.data.synth import write_shapes_voc

    return write_shapes_voc(tmp_path_factory.mktemp("horovod") / "shapes", n_train=24, n_val=6, seed=3, size=128)


def _command(data, dump, run_dir, *extra):
    return [str(HOROVODRUN), "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, str(WORKER), str(dump),
            "train", "--dataset", str(data), "--model", "tiny_ssd", "--data-shape", "128", "--kvstore", "horovod",
            "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--max-iters", str(ITERS), "--num-workers", "0",
            "--out", str(run_dir), *extra]


def _env(**extra):
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def _replay(run_dir, dump, ranks=2):
    """One process, one device per rank: every recorded step's union of batches through the family's
    step and a plain gluon.Trainer; BatchNorm statistics averaged over the devices after each epoch,
    as the ranks average theirs. Returns {parameter name: numpy array}."""
    import mxnet as mx
    from mxnet import gluon

    from gluondet.families import family_of
    from gluondet.models import build_model
    from gluondet.run_folder import RunFolder

    run = RunFolder.open(run_dir)
    model_cfg, train = run.config["model"], run.config["train"]
    family = family_of(model_cfg)
    ctx = [mx.cpu(i) for i in range(ranks)]
    steps = [np.load(dump / f"rank{r}_steps.npz") for r in range(ranks)]
    net = build_model(model_cfg, run.classes, pretrained_base=False)
    step = family.make_step()
    step.prepare(net, ctx)
    family.hybridize_for_training(net)
    first = [mx.nd.array(np.concatenate([s[f"step0_part{j}"] for s in steps])) for j in range(3)]
    step(net, first, ctx)  # creates the deferred parameters (values replaced below)
    net.load_parameters(str(dump / "rank0_start.params"), ctx=ctx)  # rank 0's, broadcast to every rank
    # the parameters with a gradient: a Trainer copies device 0's values of all it holds to every
    # device at its first step, which would give cpu1 cpu0's BatchNorm statistics
    trained = {name: p for name, p in net.collect_params().items() if p.grad_req != "null"}
    trainer = gluon.Trainer(trained, "sgd", {"learning_rate": train["lr"], "wd": train["wd"],
                                             "momentum": train["momentum"]}, update_on_kvstore=False)
    for i, lr in enumerate(steps[0]["lr"]):
        batch = [mx.nd.array(np.concatenate([s[f"step{i}_part{j}"] for s in steps])) for j in range(3)]
        step(net, batch, ctx)  # rank r's images land on cpu r: spread() slices in order
        trainer.set_learning_rate(float(lr))
        trainer.step(step.step_batch_size(batch))
        if (i + 1) % ITERS == 0:
            for name, param in net.collect_params().items():
                if name.endswith(("running_mean", "running_var")):
                    param.set_data(mx.nd.add_n(*param.list_data()) / ranks)
    out = run_dir.parent / "replay.params"
    net.save_parameters(str(out))
    return {k: v.asnumpy() for k, v in mx.nd.load(str(out)).items()}


def test_two_ranks_train_the_tiny_ssd_as_one_process_on_the_union_of_their_batches(shapes, tmp_path):
    import mxnet as mx

    run_dir, dump = tmp_path / "run", tmp_path / "dump"
    done = subprocess.run(_command(shapes, dump, run_dir), env=_env(), capture_output=True, text=True,
                          timeout=900, cwd=tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]

    results = [json.loads((dump / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["num_workers"] for r in results] == [2, 2]
    assert [r["steps"] for r in results] == [EPOCHS * ITERS] * 2  # the same number of steps
    shards = [r["image_ids"] for r in results]
    assert not set(shards[0]) & set(shards[1])
    train_ids = (shapes / "ImageSets" / "Main" / "train.txt").read_text().split()
    assert sorted(shards[0] + shards[1]) == sorted(train_ids)

    weights = [{k: v.asnumpy() for k, v in mx.nd.load(str(dump / f"rank{r}.params")).items()} for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys() and len(weights[0]) > 10
    for name in weights[0]:  # every parameter, BatchNorm statistics too
        np.testing.assert_array_equal(weights[0][name], weights[1][name], err_msg=name)
    starts = [mx.nd.load(str(dump / f"rank{r}_start.params")) for r in (0, 1)]
    for name in weights[0]:  # each rank drew its own initial weights: rank 0's were broadcast
        np.testing.assert_array_equal(starts[0][name].asnumpy(), starts[1][name].asnumpy(), err_msg=name)
    start = starts[0]
    moved = [n for n in weights[0] if not np.allclose(weights[0][n], start[n].asnumpy())]
    assert len(moved) > 10  # the steps really trained

    replay = _replay(run_dir, dump)
    assert replay.keys() == weights[0].keys()
    for name in weights[0]:
        # float tolerance, measured against how far training moved the parameter: after one step
        # the two agree to 1e-5 of it, after these 4 (momentum, batch statistics) to about 1e-3; a
        # gradient weighted or averaged wrongly is off by tens of percent
        update = np.abs(weights[0][name] - start[name].asnumpy()).max()
        np.testing.assert_allclose(weights[0][name], replay[name], rtol=0, atol=1e-2 * update + 1e-7,
                                   err_msg=name)

    assert (run_dir / "best.params").is_file() and json.loads((run_dir / "last.json").read_text())["epoch"] == EPOCHS
    assert output.count("run folder:") == 1  # rank 0 alone writes and reports the run folder
    assert "effective batch size 8" in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump", "replay.params", "run"]  # no other folder


@pytest.mark.parametrize("how", ["killed", "stopped"])
def test_a_rank_that_dies_or_stops_mid_epoch_stops_the_job_with_one_line_naming_it(shapes, tmp_path, how):
    # Rank 1 stops itself (SIGSTOP) before its second step; "killed" then kills it. Rank 0 waits for
    # it in the step's allreduce: the watchdog names it (a closed connection at once; a silent
    # process after --watchdog-timeout) and the job ends.
    run_dir, dump = tmp_path / "run", tmp_path / "dump"
    proc = subprocess.Popen(_command(shapes, dump, run_dir, "--watchdog-timeout", "10", "--epochs", "20"),
                            env=_env(STOP_RANK="1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, cwd=tmp_path)
    lines = OutputLines(proc.stdout, "horovodrun")
    try:
        stopped = lines.wait_for(r"rank 1 pid \d+ stops itself at epoch 1, iteration 1", "rank 1's stop line")
        pid = int(stopped.split(" pid ")[1].split()[0])
        if how == "killed":
            os.kill(pid, signal.SIGKILL)
            expected = r"gluondet: error: rank 1 is gone: its connection closed without a word"
        else:
            expected = r"gluondet: error: rank 1 stopped answering: no heartbeat for \d+ s"
        line = lines.wait_for(expected, "the watchdog's line")
        output = lines.rest()
        status = proc.wait(timeout=120)  # a hang guard: the output has ended
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert status != 0
    assert line.startswith("[0]<stderr>:"), line  # said by rank 0, which hosts the watchdog
    assert output.count("gluondet: error:") == 1, output  # one line, not one per rank
    assert "Traceback" not in "\n".join(ln for ln in output.splitlines() if ln.startswith("[0]")), output


def test_ranks_that_read_other_images_stop_the_job_with_one_line(shapes, tmp_path):
    from gluondet.data.synth import write_shapes_voc

    other = write_shapes_voc(tmp_path / "other", n_train=24, n_val=6, seed=4, size=128)  # same classes
    run_dir = tmp_path / "run"
    done = subprocess.run(_command(shapes, tmp_path / "dump", run_dir), env=_env(RANK1_DATASET=str(other)),
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    errors = [ln for ln in output.splitlines() if "gluondet: error:" in ln]
    assert len(errors) == 1, output  # said once, by rank 0
    assert errors[0].startswith("[0]<stderr>:gluondet: error: ranks disagree on the training images: rank 1 "
                                "has as many training images (24) as rank 0, but not the same images or boxes"), errors
    assert not run_dir.exists()


def test_outside_a_horovod_launcher_it_is_one_line(shapes, tmp_path):
    env = {k: v for k, v in _env().items() if not k.startswith(("HOROVOD_", "OMPI_", "PMI"))}
    done = subprocess.run([sys.executable, "-m", "gluondet", "train", "--dataset", str(shapes), "--model", "tiny_ssd",
                           "--kvstore", "horovod", "--out", str(tmp_path / "run")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "gluondet: error: --kvstore horovod needs the processes started by horovodrun (or mpirun / srun with an "
        "MPI build of Horovod), e.g. horovodrun -np 2 -H localhost:2 gluondet train ... --kvstore horovod"]
    assert not (tmp_path / "run").exists()
