"""Real `gluondet train` processes stopped the hard ways: kill -9 at random moments, SIGTERM and
Ctrl-C, two runs on one --out, a disk that fills up. Nothing finished is lost, nothing is mixed."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from output_lines import OutputLines

pytestmark = pytest.mark.slow

GLUONDET = str(Path(sys.executable).parent / "gluondet")
TINY_YAML = """\
family: ssd
builder: tiny_ssd
data_shape: 64
train: {batch_size: 4, lr: 0.02, warmup_epochs: 0, augment: flip}
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from gluondet.data.synth import write_shapes_voc

    root = tmp_path_factory.mktemp("crash")
    data = write_shapes_voc(root / "voc", n_train=8, n_val=2, seed=5, size=64)
    model = root / "tiny.yaml"
    model.write_text(TINY_YAML, encoding="utf-8")
    return data, model


def _args(setup, out, epochs):
    data, model = setup
    return [GLUONDET, "train", "--dataset", str(data), "--model", str(model), "--num-workers", "0",
            "--epochs", str(epochs), "--max-iters", "2", "--save-interval", "1", "--out", str(out), "-q"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _epochs_in_metrics(run):
    lines = (run / "metrics.csv").read_text().splitlines()[1:]
    return [int(line.split(",")[0]) for line in lines]


# gluondet train's lines on stderr (not on a terminal), the events these tests wait on.
SET_UP = r"^training .*; run folder "  # the run folder is locked, its config written; steps start
STEPS_DONE = r"^epoch \d+/\d+: "        # an epoch's steps are done; validation starts (not with -q)
VALIDATED = r"^eval: "                  # validation is done; the score and best are next (not with -q)
SCORED = r"^epoch \d+: "                # the epoch's score; its commit is next

# Where a kill lands: a random moment of one phase of the first epoch a process runs, that is after
# the line starting it (or the start of the process) and no later than the line ending it, so a
# process commits at most one epoch before its kill and KILLS kills never reach the last epoch.
KILL_PHASES = [  # (what runs, the line it starts after, the line ending it, its usual length in s)
    ("set-up: imports, lock and repair, data, network", None, SET_UP, 6.0),
    ("the epoch's steps", SET_UP, STEPS_DONE, 0.3),
    ("validation", STEPS_DONE, VALIDATED, 0.3),
    ("the score and the best", VALIDATED, SCORED, 0.1),
    ("the commit and the next epoch's steps", SCORED, STEPS_DONE, 0.3),
]
KILLS, KILL_EPOCHS = 20, 30


def _start(cmd, **popen):
    """``cmd`` started with its stderr read as lines to wait on."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            **popen)
    return proc, OutputLines(proc.stderr, "gluondet " + " ".join(cmd[1:3]))


def _kill_at_a_random_moment(proc, lines, rng):
    """kill -9 ``proc`` at a random moment of a random phase of KILL_PHASES; the phase's name."""
    what, after, until, length = rng.choice(KILL_PHASES)
    if after:
        lines.wait_for(after, f"the line that starts {what}")
    try:
        if lines.next_match(until, timeout=rng.uniform(0.0, length)) is None:
            pytest.fail(f"training ended by itself before a kill during {what}:\n{lines.text()}")
    except TimeoutError:
        pass  # the random moment came before the phase's end
    proc.kill()
    proc.wait(timeout=60)  # a hang guard: SIGKILL cannot be refused
    return what


def test_kill_9_at_random_moments_loses_no_finished_epoch(setup, tmp_path):
    """KILLS kills at random moments of training (set-up, steps, validation, commits); each restart
    resumes; the run ends with epochs 1..N exactly once and evaluates."""
    run, rng = tmp_path / "run", random.Random(11)
    killed = []
    for _ in range(KILLS):
        resuming = (run / "last.json").is_file()
        if not resuming and run.exists():  # killed before the first commit: start again
            shutil.rmtree(run)
        args = _args(setup, run, KILL_EPOCHS)
        cmd = [GLUONDET, "train", "--resume", str(run)] if resuming else args[:args.index("-q")]
        proc, lines = _start(cmd)  # not -q: the lines of every phase are the kill points
        what = _kill_at_a_random_moment(proc, lines, rng)
        if proc.returncode == -signal.SIGKILL:
            killed.append(what)
        if (run / "last.json").is_file():  # whatever is committed is consistent right now
            state = json.loads((run / "last.json").read_text())
            assert [row["epoch"] for row in state["history"]] == list(range(1, state["epoch"] + 1))
    assert len(killed) == KILLS, killed  # every kill landed on a process still training
    done = subprocess.run([GLUONDET, "train", "--resume", str(run), "-q"], env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert _epochs_in_metrics(run) == list(range(1, KILL_EPOCHS + 1))
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name or p.name.startswith("pending-")]
    evaluated = subprocess.run([GLUONDET, "eval", str(run), "--split", "val", "--which", "last"],
                               env=_env(), capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_save_and_print_the_resume_command(setup, tmp_path, sig, code):
    run = tmp_path / "run"
    # Ctrl-C as a terminal delivers it: a suite run in the background (nohup, a script's `&`) hands
    # its children an ignored SIGINT, which gluondet train rightly keeps ignoring
    proc, lines = _start(_args(setup, run, 200), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines.wait_for(r"^epoch 2: ", "score of epoch 2 (epoch 1 is committed before epoch 2 starts)")
    proc.send_signal(sig)
    err = lines.rest()
    proc.wait(timeout=60)  # a hang guard: its output has ended
    assert proc.returncode == code, err
    assert f"gluondet train --resume {run}" in err and "Traceback" not in err
    state = json.loads((run / "last.json").read_text())
    finished = state["epoch"]
    assert _epochs_in_metrics(run) == list(range(1, finished + 1))
    resumed = subprocess.run([GLUONDET, "train", "--resume", str(run), "--epochs", str(finished + 2), "-q"],
                             env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert _epochs_in_metrics(run) == list(range(1, finished + 3))


def test_two_trains_on_one_out_one_is_refused(setup, tmp_path):
    run = tmp_path / "run"
    first, lines = _start(_args(setup, run, 200))
    lines.wait_for(SET_UP, "training line (the run folder locked and its config written)")
    second = subprocess.run(_args(setup, run, 2), env=_env(), capture_output=True, text=True, timeout=120)
    resumed = subprocess.run([GLUONDET, "train", "--resume", str(run)], env=_env(), capture_output=True,
                             text=True, timeout=120)
    first.send_signal(signal.SIGTERM)
    lines.rest()
    first.wait(timeout=60)  # a hang guard: its output has ended
    assert second.returncode != 0 and f"pid {first.pid}" in second.stderr, second.stderr
    assert resumed.returncode != 0 and f"pid {first.pid}" in resumed.stderr, resumed.stderr
    config = (run / "config.yaml").read_text()
    assert "epochs: 200" in config  # the first run's, untouched


@contextmanager
def _tmpfs(mount, options):
    """A tmpfs mounted at ``mount`` for the block (the test is skipped where mounting is not allowed)."""
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_full_disk_is_one_line_and_the_run_resumes(setup, tmp_path):
    """On a tiny tmpfs: training stops with one line naming the file; the committed epochs resume."""
    with _tmpfs(tmp_path / "small", "size=14m") as mount:
        run = mount / "run"
        done = subprocess.run(_args(setup, run, 20), env=_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode != 0
        message = done.stderr.strip().splitlines()[-1]
        assert "no space left on the device" in message and "Traceback" not in done.stderr, done.stderr
        state = json.loads((run / "last.json").read_text())
        assert _epochs_in_metrics(run) == list(range(1, state["epoch"] + 1))


def test_straight_and_resumed_runs_are_equal_to_the_last_bit(setup, tmp_path):
    """The tiny SSD with augmentation and two loader workers: 3 epochs straight, or 1 then resumed
    to 3, give byte-identical weights and the same metrics rows (but for the timing columns)."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    common = ["--num-workers", "2", "--augment", "ssd"]
    for out, epochs in ((straight, 3), (resumed, 1)):
        args = _args(setup, out, epochs)
        args[args.index("--num-workers"):args.index("--num-workers") + 2] = common
        done = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    done = subprocess.run([GLUONDET, "train", "--resume", str(resumed), "--epochs", "3", "-q"], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (straight / "last.params").read_bytes() == (resumed / "last.params").read_bytes()
    assert (straight / "epoch_0002.params").read_bytes() == (resumed / "epoch_0002.params").read_bytes()

    def rows(run):  # the losses and scores of every epoch, not its timing
        lines = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()]
        keep = [i for i, name in enumerate(lines[0]) if name not in ("seconds", "images_per_sec")]
        return [[line[i] for i in keep] for line in lines]

    assert rows(straight) == rows(resumed)
    assert json.loads((straight / "best.json").read_text()) == json.loads((resumed / "best.json").read_text())


def test_a_read_only_out_is_one_line(setup, tmp_path):
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as mount:
        done = subprocess.run(_args(setup, mount / "run", 1), env=_env(), capture_output=True, text=True,
                              timeout=300)
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        assert f"{mount / 'run'}: cannot write (read-only file system)" in done.stderr.strip().splitlines()[-1]
