"""gluondet launch on loopback: 2 workers and 1 server train a one-layer net with dist_sync.

The workers run a small script (below), not gluondet train, so this checks the launcher and the
sharding on their own. Checked against an independent reference: plain numpy replaying the same
SGD steps on the union of the workers' batches.
"""
import json
import os
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from output_lines import OutputLines

pytestmark = pytest.mark.slow

GLUONDET = str(Path(sys.executable).parent / "gluondet")
NUM_SAMPLES, BATCH, STEPS, LR, FEATURES = 37, 4, 4, 0.1, 3

WORKER_SCRIPT = r'''
import json, os, socket, sys
from pathlib import Path
import numpy as np
import mxnet as mx
from mxnet import autograd, gluon
from gluondet.engine.distributed import exit_on_failure, join_watchdog, shard_indices, worker_info

out = Path(sys.argv[1])
num_samples, batch, steps, lr, features = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])


def wait_for_release(message):
    """Print ``message`` and block until the test closes the Unix socket (or 600 s, a hang guard)."""
    with socket.socket(socket.AF_UNIX) as release:
        release.settimeout(600)
        release.connect(str(out / "release.sock"))
        print(message, flush=True)
        try:
            release.recv(1)
        except ConnectionResetError:  # closed before it accepted us: released too
            pass


rng = np.random.RandomState(0)  # the same data on every worker
x = rng.uniform(-1, 1, (num_samples, features)).astype("float32")
y = (x @ np.array([[1.5], [-2.0], [0.5]], "float32") + 0.3).astype("float32")

kv = mx.kv.create("dist_sync")
rank, num_workers = worker_info(kv)
position = join_watchdog(rank)  # heartbeats to the launcher's watchdog, as gluondet train's
if os.environ.get("STOP_RANK") == str(rank):
    print(f"rank {rank} stops itself", flush=True)
    os.kill(os.getpid(), __import__("signal").SIGSTOP)  # alive, silent: the watchdog's case
if os.environ.get("FAIL_RANK") == str(rank):
    wait_for_release(f"rank {rank} joined, failing when released")  # the test sees every process first
    with exit_on_failure():  # a plain raise would hang at exit, in the kvstore's barrier
        raise RuntimeError("this worker fails on purpose")
shard = shard_indices(num_samples, rank, num_workers)
net = gluon.nn.Dense(1, in_units=features)
net.initialize(mx.init.Constant(0.0))
trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": lr}, kvstore=kv)
loss_fn = gluon.loss.L2Loss()
for step in range(steps):
    idx = shard[step * batch:(step + 1) * batch]
    with autograd.record():
        loss = loss_fn(net(mx.nd.array(x[idx])), mx.nd.array(y[idx]))
    loss.backward()
    trainer.step(batch * num_workers)  # the same value every step: see gluondet.engine.distributed
params = {k.split("_", 1)[1]: v.data().asnumpy().tolist() for k, v in net.collect_params().items()}
(out / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "num_workers": num_workers, "shard": shard, "params": params}))
# Stay up (servers and scheduler too, as this worker has not finalised) until the test has
# looked at every process's sockets.
position.heartbeat.bye()
wait_for_release(f"rank {rank} of {num_workers} done")
'''


def _reference_params(shards):
    """SGD with the L2 loss, replayed in numpy on each step's union of worker batches."""
    rng = np.random.RandomState(0)
    x = rng.uniform(-1, 1, (NUM_SAMPLES, FEATURES)).astype("float32").astype(np.float64)
    y = x @ np.array([[1.5], [-2.0], [0.5]]) + 0.3
    w, b = np.zeros((1, FEATURES)), np.zeros(1)
    for step in range(STEPS):
        idx = np.concatenate([s[step * BATCH:(step + 1) * BATCH] for s in shards]).astype(int)
        err = x[idx] @ w.T + b - y[idx]  # d(0.5 * err^2) / d(pred)
        w -= LR * (err.T @ x[idx]) / len(idx)
        b -= LR * err.sum(axis=0) / len(idx)
    return w, b


def _descendants(root_pid):
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _tcp_sockets(pids):
    """(state, local address, remote address) of every TCP socket the processes hold, v4 and v6."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    sockets = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[9] in inodes:
                sockets.append((f[3], _address(f[1]), _address(f[2])))
    return sockets


def _address(hex_addr):
    ip, port = hex_addr.split(":")
    if len(ip) == 8:
        return ".".join(str(int(ip[i:i + 2], 16)) for i in (6, 4, 2, 0)) + f":{int(port, 16)}"
    return f"[v6 {ip}]:{int(port, 16)}"


@contextmanager
def _launched(tmp_path, extra_env=None, launch_args=()):
    """``gluondet launch`` of 2 workers and 1 server running WORKER_SCRIPT: yields the launcher, its
    output lines and ``release`` (lets the workers that wait in ``wait_for_release`` go on). On the
    way out a launcher still running (a failed test) is stopped with its children."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(extra_env or {})}
    cmd = [GLUONDET, "launch", "-n", "2", "-s", "1", "--timeout", "600", *launch_args, "--",
           sys.executable, str(script), str(tmp_path), str(NUM_SAMPLES), str(BATCH), str(STEPS),
           str(LR), str(FEATURES)]
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tmp_path / "release.sock"))
        listener.listen(8)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            yield proc, OutputLines(proc.stdout, "gluondet launch"), lambda: _release(listener)
        finally:
            _release(listener)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)  # the launcher stops its children on Ctrl-C
                proc.wait(timeout=60)


def _release(listener):
    """Close every connection waiting on ``listener``: their ``recv`` returns, the workers go on."""
    listener.setblocking(False)
    while True:
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            return
        connection.close()


def _finish(proc, lines):
    """The launcher's exit status and output, once its output has ended (hang guards, not limits)."""
    output = lines.rest()
    return proc.wait(timeout=60), output


def test_two_workers_one_server_train_in_sync_on_loopback(tmp_path):
    with _launched(tmp_path) as (proc, lines, release):
        for _ in range(2):  # each waits, with every other process of the job, until released
            lines.wait_for(r"^\[worker \d\] rank \d of 2 done$", "worker's line saying it is done")
        pids = _descendants(proc.pid)
        sockets = _tcp_sockets(pids)
        release()
        status, output = _finish(proc, lines)
    assert status == 0, output

    # 1 scheduler + 1 server + 2 workers besides the launcher, all on 127.0.0.1 and nowhere else.
    assert len(pids) >= 5, pids
    listening = [s for s in sockets if s[0] == "0A"]
    assert len(listening) >= 4, sockets
    for state, local, remote in sockets:
        assert local.startswith("127.0.0.1:"), sockets
        if state != "0A":
            assert remote.startswith("127.0.0.1:"), sockets

    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["num_workers"] for r in results] == [2, 2]
    shards = [r["shard"] for r in results]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(NUM_SAMPLES))
    w0, w1 = (np.array(r["params"]["weight"]) for r in results)
    assert np.array_equal(w0, w1)
    assert results[0]["params"]["bias"] == results[1]["params"]["bias"]
    w_ref, b_ref = _reference_params(shards)
    assert np.abs(w_ref).min() > 0.01  # the steps really moved the weights
    np.testing.assert_allclose(w0, w_ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(results[0]["params"]["bias"], b_ref, rtol=1e-4, atol=1e-6)
    assert "[worker 0]" in output and "[worker 1]" in output


def test_a_failing_worker_stops_the_job_with_its_status(tmp_path):
    # Rank 1 fails after joining; rank 0 would wait for it forever in dist_sync.
    with _launched(tmp_path, {"FAIL_RANK": "1"}) as (proc, lines, release):
        lines.wait_for(r"^\[worker \d\] rank 1 joined, failing when released$", "line of the failing rank")
        pids = _descendants(proc.pid)[1:]  # the whole job is up: it cannot end before the release
        release()
        status, output = _finish(proc, lines)
    assert status == 1, output
    assert "exited with status 1" in output
    assert "RuntimeError: this worker fails on purpose" in output
    assert len(pids) >= 4, pids  # scheduler, server, 2 workers
    assert not [p for p in pids if Path(f"/proc/{p}").exists()], "children left running"


def test_a_worker_that_stops_answering_stops_the_job_with_one_line_naming_its_rank(tmp_path):
    # rank 1 joins the watchdog, then stops (SIGSTOP): alive, silent, and rank 0 would wait for its
    # push for ever. The launcher's watchdog names it after --watchdog-timeout and stops the job.
    with _launched(tmp_path, {"STOP_RANK": "1"}, ["--watchdog-timeout", "3"]) as (proc, lines, release):
        lines.wait_for(r"^\[worker \d\] rank 1 stops itself$", "line of the stopping rank")
        pids = _descendants(proc.pid)[1:]
        line = lines.wait_for(r"^\[launch\] rank 1 stopped answering: no heartbeat for \d+ s", "the watchdog's line")
        status, output = _finish(proc, lines)
    assert status == 2, output
    assert "stopping all processes" in line
    assert not [p for p in pids if Path(f"/proc/{p}").exists()], "children left running"
