"""Sharding, worker info and the process launcher of gluondet.engine.distributed (no MXNet processes)."""
import io
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from gluondet.cli import main
from gluondet.engine import distributed as dist
from gluondet.engine.distributed import Task
from gluondet.errors import GluondetError

PY = sys.executable


@pytest.mark.parametrize("num_samples,num_workers", [(0, 1), (1, 3), (10, 1), (10, 3), (37, 2), (64, 8)])
def test_shards_are_disjoint_balanced_and_cover_every_sample(num_samples, num_workers):
    shards = [dist.shard_indices(num_samples, r, num_workers) for r in range(num_workers)]
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(num_samples))
    assert len(set(flat)) == len(flat)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_shards_take_every_nth_sample():
    assert [dist.shard_indices(10, r, 3) for r in range(3)] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert dist.shard_indices(1, 2, 3) == []


@pytest.mark.parametrize("rank,num_workers", [(2, 2), (-1, 2), (0, 0)])
def test_shard_refuses_a_rank_outside_the_job(rank, num_workers):
    with pytest.raises(ValueError):
        dist.shard_indices(10, rank, num_workers)


def test_sync_steps_follow_the_smallest_shard():
    # 37 samples on 2 workers: shards of 19 and 18; batches of 4 -> 4 full steps on both.
    assert dist.sync_steps_per_epoch(37, 2, 4) == 4
    assert dist.sync_steps_per_epoch(40, 2, 4) == 5  # 20 each: 5 steps, no sample left over
    assert dist.sync_steps_per_epoch(39, 2, 4) == 4  # 19 and 20: the smaller shard decides
    with pytest.raises(GluondetError, match="fewer than one batch"):
        dist.sync_steps_per_epoch(7, 4, 2)


class FakeKV:
    def __init__(self, type_, rank, num_workers):
        self.type, self.rank, self.num_workers = type_, rank, num_workers


def test_worker_info():
    assert dist.worker_info(None) == (0, 1)
    assert dist.worker_info("device") == (0, 1)
    assert dist.worker_info(FakeKV("device", 0, 1)) == (0, 1)
    assert dist.worker_info(FakeKV("dist_sync", 1, 3)) == (1, 3)
    with pytest.raises(TypeError):
        dist.worker_info("dist_sync")


def test_dist_kvstore_outside_the_launcher_is_refused(monkeypatch):
    monkeypatch.delenv("DMLC_ROLE", raising=False)
    with pytest.raises(GluondetError, match="gluondet launch"):
        dist.require_launcher("dist_sync")
    dist.require_launcher("device")
    monkeypatch.setenv("DMLC_ROLE", "worker")
    dist.require_launcher("dist_sync")


def test_local_tasks_keep_every_process_on_loopback(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(dist, "usable_cpus", lambda: 8)
    tasks = dist.local_tasks([PY, "train.py"], num_workers=2, num_servers=1, port=9555)
    assert [t.role for t in tasks] == ["scheduler", "server", "worker", "worker"]
    for t in tasks:
        assert t.env["DMLC_PS_ROOT_URI"] == "127.0.0.1"
        assert t.env["DMLC_NODE_HOST"] == "127.0.0.1"
        assert t.env["DMLC_PS_ROOT_PORT"] == "9555"
        assert (t.env["DMLC_NUM_WORKER"], t.env["DMLC_NUM_SERVER"]) == ("2", "1")
        assert t.env["DMLC_ROLE"] == t.role
    assert tasks[-1].argv == [PY, "train.py"]
    # gluondet is found beside this Python (its venv) even when the venv is not on PATH
    monkeypatch.setenv("PATH", "/nonexistent")
    worker = dist.local_tasks(["gluondet", "train"], num_workers=1, num_servers=1)[-1]
    assert worker.argv == [str(Path(PY).parent / "gluondet"), "train"]
    assert tasks[0].argv[-1] == "import mxnet"  # servers run the server loop, not the training
    # 8 usable CPUs, 2 workers: 4 threads each; the scheduler and server only add gradients up
    assert [t.env["OMP_NUM_THREADS"] for t in tasks] == ["1", "1", "4", "4"]


def test_free_port_is_on_loopback_and_free():
    import socket

    port = dist.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_read_hostfile(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("# the two machines\nnode1\n\nnode2:2222 slots=4\n", encoding="utf-8")
    assert dist.read_hostfile(hosts) == [("node1", "22"), ("node2", "2222")]
    hosts.write_text("node1:ssh\n")
    with pytest.raises(GluondetError, match=r"hosts:1"):
        dist.read_hostfile(hosts)
    hosts.write_text("\n# nobody\n")
    with pytest.raises(GluondetError, match="no hosts"):
        dist.read_hostfile(hosts)
    with pytest.raises(GluondetError, match="cannot read"):
        dist.read_hostfile(tmp_path / "missing")


def test_ssh_tasks_run_round_robin_with_the_dmlc_environment(tmp_path, monkeypatch):
    # A stand-in for ssh that runs the remote command here, so the quoting is checked for real.
    fake_ssh = tmp_path / "fake_ssh"
    fake_ssh.write_text(textwrap.dedent(f"""\
        #!{PY}
        import os, subprocess, sys
        args = sys.argv[1:]
        assert args[:3] == ["-tt", "-o", "BatchMode=yes"] and args[3] == "-p", args
        print("host", args[5], "port", args[4], flush=True)
        # a remote login starts from a fresh environment, not the launcher's
        sys.exit(subprocess.call(["bash", "-c", args[6]], env={{"PATH": os.environ["PATH"]}}))
        """))
    fake_ssh.chmod(0o755)
    monkeypatch.setenv("GLUONDET_DATA", "/shared/data")
    monkeypatch.setenv("UNRELATED_SECRET", "x")
    show = ("import os; e = os.environ; print(e['DMLC_ROLE'], e['DMLC_NODE_HOST'], e['DMLC_PS_ROOT_URI'], "
            "e['DMLC_PS_ROOT_PORT'], e['GLUONDET_DATA'], e['EXTRA'], 'UNRELATED_SECRET' in e, os.getcwd())")
    tasks = dist.ssh_tasks([PY, "-c", show], num_workers=3, num_servers=1,
                           hosts=[("127.0.0.1", "22"), ("localhost", "2200")], scheduler_host="127.0.0.1",
                           port=9100, workdir=str(tmp_path), extra_env={"EXTRA": "a b"}, ssh=str(fake_ssh))
    assert [t.role for t in tasks] == ["scheduler", "server", "worker", "worker", "worker"]
    assert tasks[0].env["DMLC_PS_ROOT_URI"] == "127.0.0.1"
    workers = [t for t in tasks if t.role == "worker"]
    out = io.StringIO()
    assert dist.run_tasks(workers, out=out, timeout=30) == 0
    lines = out.getvalue().splitlines()
    # i = 1, 2, 3 over two hosts: localhost, 127.0.0.1, localhost
    expected_hosts = {"worker 0@localhost": ("localhost", "2200"), "worker 1@127.0.0.1": ("127.0.0.1", "22"),
                      "worker 2@localhost": ("localhost", "2200")}
    for name, (host, port) in expected_hosts.items():
        assert f"[{name}] host {host} port {port}" in lines
        # the node binds to an address: localhost is resolved here
        assert f"[{name}] worker 127.0.0.1 127.0.0.1 9100 /shared/data a b False {tmp_path}" in lines


def _task(name, code, role="worker"):
    return Task(name, role, [PY, "-c", code])


def test_output_is_prefixed_and_success_needs_every_worker():
    out = io.StringIO()
    tasks = [_task("worker 0", "print('hello'); print('two')"), _task("worker 1", "print('hi')"),
             _task("server 0", "import time; time.sleep(0.3)", role="server")]
    assert dist.run_tasks(tasks, out=out, timeout=20) == 0
    lines = out.getvalue().splitlines()
    assert {"[worker 0] hello", "[worker 0] two", "[worker 1] hi"} <= set(lines)


def test_a_failing_worker_stops_the_others_and_gives_its_status():
    out = io.StringIO()
    tasks = [_task("worker 0", "import time; time.sleep(60)"), _task("worker 1", "import sys; sys.exit(5)"),
             _task("server 0", "import time; time.sleep(60)", role="server")]
    # 5, not the timeout's 124: the job ended at the failure, stopping the sleepers
    assert dist.run_tasks(tasks, out=out, timeout=30) == 5
    assert "[launch] worker 1 exited with status 5: stopping the other processes" in out.getvalue()
    assert "still running after" not in out.getvalue()


def test_servers_left_after_the_workers_are_stopped_after_the_grace_period():
    tasks = [_task("worker 0", "pass"), _task("server 0", "import time; time.sleep(60)", role="server")]
    out = io.StringIO()
    # 0, not the timeout's 124: the server was stopped once the grace period was over
    assert dist.run_tasks(tasks, out=out, timeout=30, grace=0.5) == 0
    assert "workers done; servers still running after 0 s: stopping them" in out.getvalue()


def test_timeout_stops_the_job():
    out = io.StringIO()
    assert dist.run_tasks([_task("worker 0", "import time; time.sleep(60)")], out=out, timeout=1) == 124
    assert "still running after" in out.getvalue()


_SLEEPING_WORKERS = textwrap.dedent("""\
    import sys
    from gluondet.engine.distributed import Task, run_tasks
    code = "import os, time; print(os.getpid(), flush=True); time.sleep(60)"
    tasks = [Task(f"worker {i}", "worker", [sys.executable, "-c", code]) for i in range(2)]
    sys.exit(run_tasks(tasks, timeout=60))
    """)


def _start_launcher(sigint):
    """The launcher in a process of its own, SIGINT set to ``sigint`` there (as a terminal gives
    SIG_DFL and nohup or a background shell SIG_IGN, whatever this test process was given);
    returns it with the pids its two sleeping workers printed."""
    proc = subprocess.Popen([PY, "-c", _SLEEPING_WORKERS], stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))
    pids = []
    while len(pids) < 2:
        line = proc.stdout.readline()
        assert line, "launcher ended early"
        pids.append(int(line.split("] ")[1]))
    return proc, pids


def _stop(proc, sig, timeout):
    proc.send_signal(sig)
    try:
        return proc.communicate(timeout=timeout)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _all_gone(pids):
    """No process of ``pids`` runs (run_tasks waited for each before the launcher exited)."""
    return not [p for p in pids if Path(f"/proc/{p}").exists() and _state(p) != "Z"]


def _ignores(pid, sig):
    """Whether process ``pid`` ignores ``sig`` (the kernel's SigIgn mask: it drops such a signal when sent)."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return bool(int(status["SigIgn"], 16) >> (sig - 1) & 1)


def test_ctrl_c_stops_every_child(tmp_path):
    proc, pids = _start_launcher(signal.SIG_DFL)
    out = _stop(proc, signal.SIGINT, timeout=20)
    assert proc.returncode == 130
    assert "interrupted" in out
    assert _all_gone(pids)


def test_an_ignored_ctrl_c_stays_ignored_and_sigterm_still_stops_every_child(tmp_path):
    proc, pids = _start_launcher(signal.SIG_IGN)  # nohup gluondet launch ... &
    # Its workers are up, so run_tasks has set its handlers: SIGINT is still ignored (the kernel
    # drops it), SIGTERM is not.
    assert _ignores(proc.pid, signal.SIGINT) and not _ignores(proc.pid, signal.SIGTERM)
    proc.send_signal(signal.SIGINT)
    out = _stop(proc, signal.SIGTERM, timeout=20)
    assert proc.returncode == 130 and "interrupted" in out
    assert _all_gone(pids)


def _state(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_exit_on_failure_exits_at_once_with_a_status(tmp_path):
    script = textwrap.dedent("""\
        import sys
        from gluondet.engine.distributed import exit_on_failure
        from gluondet.errors import GluondetError
        kind = sys.argv[1]
        with exit_on_failure():
            if kind == "error":
                raise GluondetError("data/x.xml: no <size>")
            if kind == "bug":
                raise RuntimeError("boom")
            if kind == "exit":
                sys.exit(4)
        print("normal exit")
        """)
    results = {kind: subprocess.run([PY, "-c", script, kind], capture_output=True, text=True, timeout=30)
               for kind in ("error", "bug", "exit", "ok")}
    assert results["error"].returncode == 2
    assert results["error"].stderr.strip() == "gluondet: error: data/x.xml: no <size>"
    assert results["bug"].returncode == 1 and "RuntimeError: boom" in results["bug"].stderr
    assert results["exit"].returncode == 4
    assert results["ok"].returncode == 0 and results["ok"].stdout.strip() == "normal exit"


def test_cli_launch_checks_its_arguments(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["launch", "-n", "2", "--launcher", "ssh", "--", "true"])
    assert result.exit_code == 2 and "needs -H HOSTFILE" in result.output
    result = runner.invoke(main, ["launch", "-n", "2", "-H", str(tmp_path / "h"), "--", "true"])
    assert result.exit_code == 2 and "-H/--hostfile is for --launcher ssh" in result.output
    result = runner.invoke(main, ["launch", "-n", "1", "--env", "NOEQUALS", "--", "true"])
    assert result.exit_code == 2 and "not NAME=VALUE" in result.output
    result = runner.invoke(main, ["launch", "-n", "0", "--", "true"])
    assert result.exit_code == 2
    result = runner.invoke(main, ["launch", "-n", "1", "--", "no-such-program-xyz"])
    assert result.exit_code == 2 and "not on PATH" in result.output
