"""The trainer's rules with a toy network (a Dense layer): best only on improvement, the NaN guard,
early stopping, Ctrl-C / SIGTERM at any moment, crash-consistent commits, bit-exact resume."""
import json
import os
import signal

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from gluondet.engine import hooks as H
from gluondet.engine.divergence import DivergenceGuard
from gluondet.engine.trainer import Trainer, TrainingStopped
from gluondet.errors import GluondetError
from gluondet.run_folder import RunFolder, RunFolderBusy

from toy_training import ITERS, ToyLoader, toy_run_folder



class ToyStep:
    """Squared error of a Dense(1) on fixed batches; ``loss_at`` overrides a reported loss."""

    loss_names = ("loss",)

    def __init__(self, loss_at=None, on_step=None):
        self.loss_at, self.on_step, self.calls = loss_at or {}, on_step, []

    def num_images(self, batch):
        return batch[0].shape[0]

    def step_batch_size(self, batch):
        return batch[0].shape[0]

    def __call__(self, net, batch, ctx_list):
        x, y = batch
        with autograd.record():
            loss = ((net(x) - y) ** 2).mean()
        loss.backward()
        self.calls.append(len(self.calls))
        if self.on_step:
            self.on_step(len(self.calls))
        return {"loss": self.loss_at.get(len(self.calls), float(loss.asscalar()))}



@pytest.fixture
def run(tmp_path):
    yield from toy_run_folder(tmp_path)


def toy_net():
    net = gluon.nn.Dense(1, in_units=3)
    net.initialize(mx.init.Constant(0.1))
    return net


def make_trainer(run, epochs=4, maps=None, step=None, patience=0, extra=(), state=None, net=None,
                 views=False):
    """A Trainer over the toy with the production hooks; ``maps`` scripts validation results."""
    net = net or toy_net()
    step = step or ToyStep()
    optimizer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1, "momentum": 0.9})
    scripted = iter(maps or [])

    def validate(guard):
        for _ in guard(range(2)):
            pass
        return {"map": next(scripted), "per_class": {}}

    hooks = [H.EpochSeed(1), DivergenceGuard(), H.Validation(validate, 1), H.BestScore(),
             H.EarlyStopping(patience), *extra, H.PeriodicCheckpoint(run, 0), H.Checkpointer(run, 0.1, "voc")]
    if views:  # metrics.csv, curves.png, TensorBoard (matplotlib: the slow part of these tests)
        hooks.append(H.MetricsWriter(run, step.loss_names))
    return Trainer(net, ToyLoader(), step, optimizer, [mx.cpu()], hooks, lambda e, i: 0.1, epochs,
                   ITERS, state=state)


def hook_of(trainer, kind):
    """The trainer's one hook of type ``kind``, wherever it sits in the list."""
    found = [hook for hook in trainer.hooks if isinstance(hook, kind)]
    assert len(found) == 1, f"{len(found)} {kind.__name__} hooks in {trainer.hooks}"
    return found[0]


def weights(path):
    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}


def resume(run, epochs=4, maps=None, **kw):
    """A Trainer continuing ``run`` as gluondet.engine.train does (state, weights, optimizer)."""
    from gluondet.engine.train import restore_state

    run.lock()
    run.repair()
    net = toy_net()
    net.load_parameters(str(run / "last.params"))
    trainer = make_trainer(run, epochs, maps, net=net, **kw)

    class S:  # the part of train.Setup restore_state reads
        resumed, chief = run.last_state(), True
        config = type("C", (), {"resume": str(run.path)})

    trainer.state = restore_state(S, trainer.optimizer)
    return trainer


class Snapshot(H.HookBase):
    """Weights after every epoch (to compare checkpoints against)."""

    def __init__(self):
        self.by_epoch = {}

    def after_epoch(self):
        self.by_epoch[self.trainer.state.epoch + 1] = {
            k: v.data().asnumpy().copy() for k, v in self.trainer.net._collect_params_with_prefix().items()}


def test_best_params_only_on_strict_improvement(run):
    snap = Snapshot()
    make_trainer(run, maps=[0.3, 0.2, 0.5, 0.5], extra=[snap], views=True).train()
    assert json.loads((run / "best.json").read_text()) == {"epoch": 3, "map": 0.5, "metric": "voc"}
    best = weights(run / "best.params")
    for name, value in snap.by_epoch[3].items():
        np.testing.assert_array_equal(best[name], value)
    assert not np.array_equal(best["weight"], snap.by_epoch[4]["weight"])
    rows = [r for r in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert [r.split(",")[0] for r in rows] == ["1", "2", "3", "4"]


def test_a_nan_loss_is_not_applied_and_training_goes_on(run):
    step = ToyStep(loss_at={5: float("nan")})  # epoch 2, iteration 1
    trainer = make_trainer(run, maps=[0.1, 0.2, 0.3, 0.4], step=step)
    weights_at = {}
    trainer.register([type("Keep", (H.HookBase,), {"after_step": lambda self: weights_at.update(
        {len(step.calls): trainer.net.weight.data().asnumpy().copy()})})()])
    trainer.train()
    np.testing.assert_array_equal(weights_at[5], weights_at[4])  # the NaN step changed nothing
    assert not np.array_equal(weights_at[6], weights_at[5])      # the next one did
    state = run.last_state()
    assert state["epoch"] == 4 and state["history"][1]["skipped_steps"] == 1
    assert all(np.isfinite(row["loss"]) for row in state["history"])


def test_patience_stops_after_n_validations_without_improvement(run):
    trainer = make_trainer(run, epochs=10, maps=[0.5, 0.4, 0.5, 0.6], patience=2)
    trainer.train()
    state = run.last_state()
    assert state["epoch"] == 3 and state["stopped_early"] and state["best_epoch"] == 1
    assert run.best()["epoch"] == 1
    with pytest.raises(GluondetError, match="stopped early"):
        from gluondet.engine.train import _check_schedule
        _check_schedule(type("C", (), {"epochs": 10, "resume": str(run.path), "patience": 2}), state, 2)


def _straight(tmp_path, epochs=3):
    straight = RunFolder.create(tmp_path / "straight")
    straight.write_info({"model": {"name": "toy"}}, ["a"])
    make_trainer(straight, epochs, maps=[0.1, 0.3, 0.2]).train()
    straight.unlock()
    return straight


@pytest.mark.parametrize("stop_at_call", [2, 3, 5, 6])  # mid-epoch, end of epoch 1 training, ...
def test_stop_signal_saves_and_resume_is_bit_exact(run, tmp_path, stop_at_call):
    straight = _straight(tmp_path)

    def send(n):
        if n == stop_at_call:
            os.kill(os.getpid(), signal.SIGTERM)  # the real signal, through the handler

    trainer = make_trainer(run, 3, maps=[0.1, 0.3, 0.2], step=ToyStep(on_step=send))
    with pytest.raises(TrainingStopped) as stopped:
        trainer.train()
    assert stopped.value.reason == "SIGTERM"
    state = run.last_state()
    done = (stop_at_call - 1) % ITERS + 1  # iterations of the stopped epoch that ran
    assert state["partial"]["iteration"] == done
    run.unlock()
    resume(run, 3, maps=[0.1, 0.3, 0.2][state["epoch"]:], views=True).train()
    for name, value in weights(straight / "last.params").items():
        np.testing.assert_array_equal(weights(run / "last.params")[name], value)
    assert run.best()["epoch"] == 2
    assert [r.split(",")[0] for r in (run / "metrics.csv").read_text().splitlines()[1:]] == ["1", "2", "3"]


def test_an_ignored_ctrl_c_stays_ignored_and_sigterm_still_stops(run):
    """As a background job of a script starts it: SIGINT ignored. Ctrl-C then changes nothing
    (the epochs all run); SIGTERM still stops at the next safe point."""
    calls = []

    def send(n):
        calls.append(n)
        os.kill(os.getpid(), signal.SIGINT if n < 4 else signal.SIGTERM)

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        trainer = make_trainer(run, 3, maps=[0.1, 0.3, 0.2], step=ToyStep(on_step=send))
        with pytest.raises(TrainingStopped) as stopped:
            trainer.train()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stopped.value.reason == "SIGTERM" and calls == [1, 2, 3, 4]


def test_stop_during_validation_keeps_the_trained_epoch(run, tmp_path):
    straight = _straight(tmp_path)
    maps = iter([0.1, 0.3, 0.2])

    def validate_then_stop(guard):
        trainer.signals.requested = "Ctrl-C"
        for _ in guard(range(2)):
            pass
        return {"map": next(maps), "per_class": {}}

    trainer = make_trainer(run, 3)
    hook_of(trainer, H.Validation).validate = validate_then_stop
    with pytest.raises(TrainingStopped):
        trainer.train()
    state = run.last_state()
    assert state["epoch"] == 0 and state["partial"]["iteration"] == ITERS  # trained, not validated
    run.unlock()
    resume(run, 3, maps=[0.1, 0.3, 0.2]).train()
    for name, value in weights(straight / "last.params").items():
        np.testing.assert_array_equal(weights(run / "last.params")[name], value)


def test_a_kill_before_the_commit_loses_only_that_epoch(run, monkeypatch):
    import gluondet.run_commit as rf

    trainer = make_trainer(run, 3, maps=[0.1, 0.3, 0.2])
    real = rf.write_json
    commits = []

    def die_on_second_commit(path, data):
        if path.name == "last.json":
            commits.append(1)
            if len(commits) == 2:
                raise SystemExit("killed")  # as if -9 after pending-0002.* were written
        return real(path, data)

    monkeypatch.setattr(rf, "write_json", die_on_second_commit)
    with pytest.raises(SystemExit):
        trainer.train()
    monkeypatch.setattr(rf, "write_json", real)
    (run / ".last.abc.tmp.params").write_bytes(b"half")  # a killed atomic write
    run.unlock()
    run.lock()
    done = run.repair()
    assert any("pending-0002.params" in line for line in done) and any(".tmp" in line for line in done)
    assert sorted(p.name for p in run.path.iterdir() if p.name.startswith(("pending", "."))) == [".lock"]
    assert run.last_state()["epoch"] == 1


def test_a_kill_between_commit_and_roll_forward_is_finished_by_repair(run, monkeypatch):
    snap = Snapshot()
    trainer = make_trainer(run, 3, maps=[0.1, 0.3, 0.2], extra=[snap])
    from gluondet.run_commit import EpochCommitter

    real = EpochCommitter.roll_forward
    calls = []

    def die_on_second(self, state):
        calls.append(1)
        if len(calls) == 2:
            raise SystemExit("killed")
        return real(self, state)

    monkeypatch.setattr(EpochCommitter, "roll_forward", die_on_second)
    with pytest.raises(SystemExit):
        trainer.train()
    monkeypatch.setattr(EpochCommitter, "roll_forward", real)
    assert run.best()["epoch"] == 1 and (run / "pending-0002.params").exists()
    run.repair()
    assert run.best()["epoch"] == 2 and not (run / "pending-0002.params").exists()
    np.testing.assert_array_equal(weights(run / "best.params")["weight"], snap.by_epoch[2]["weight"])
    np.testing.assert_array_equal(weights(run / "last.params")["weight"], snap.by_epoch[2]["weight"])


def test_a_full_disk_is_one_line_and_keeps_the_committed_epoch(run, monkeypatch):
    import errno

    import gluondet.run_commit as rf

    trainer = make_trainer(run, 3, maps=[0.1, 0.3, 0.2])
    real = rf.atomic_path
    calls = []

    def full_on_fourth(path):
        calls.append(path)
        if len(calls) == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path)

    monkeypatch.setattr(rf, "atomic_path", full_on_fourth)
    with pytest.raises(GluondetError, match=r"cannot write \(no space left on the device\); the last committed epoch is intact"):
        trainer.train()
    assert run.last_state()["epoch"] == 1


def test_one_process_per_run_folder(tmp_path):
    first = RunFolder.create(tmp_path / "run")
    with pytest.raises(RunFolderBusy, match=f"pid {os.getpid()}"):
        RunFolder.create(tmp_path / "run")
    with pytest.raises(RunFolderBusy):
        RunFolder(tmp_path / "run").lock()
    first.unlock()
    RunFolder(tmp_path / "run").lock().unlock()  # released: free again


def test_default_run_folders_are_numbered_and_never_shared(tmp_path):
    a = RunFolder.create(None, "helmet", "ssd", runs_root=tmp_path)
    b = RunFolder.create(None, "helmet", "ssd", runs_root=tmp_path)
    assert (a.path.name, b.path.name) == ("helmet-ssd", "helmet-ssd-2")
