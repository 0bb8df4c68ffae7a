"""Horovod ranks (gluondet.engine.horovod) without Horovod: the launcher checks, the device of a rank,
the input check's line, and the hooks through the real Trainer with a toy network and a stand-in
job whose collectives add what a scripted second rank sends. Horovod itself is exercised by
tests/integration/test_horovod.py."""
import os
import signal

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from gluondet.engine import horovod as hv
from gluondet.engine.divergence import DivergenceGuard
from gluondet.engine.trainer import Trainer, TrainingStopped
from gluondet.engine.watchdog import Position
from gluondet.errors import GluondetError
from gluondet.runtime import launcher_local_processes

from toy_training import ITERS, ToyLoader



# ---- launcher, device, inputs ---------------------------------------------------------------------

def test_only_a_horovod_launcher_may_start_a_rank():
    assert not hv.launched({})
    for name in ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"):
        assert hv.launched({name: "0"})
    with pytest.raises(GluondetError, match=r"started by horovodrun .* e\.g\. horovodrun -np 2 -H localhost:2"):
        hv.require_launcher({})


def test_without_horovod_the_error_says_how_to_build_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_horovod(name, *args, **kwargs):
        if name.startswith("horovod"):
            raise ImportError("No module named 'horovod'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_horovod)
    with pytest.raises(GluondetError, match=r"needs Horovod built with MXNet support \(No module named "
                                            r"'horovod'\); scripts/install_horovod.sh builds it"):
        hv.import_horovod()


def test_threads_are_shared_by_the_processes_a_launcher_started_on_a_machine():
    assert launcher_local_processes({}) is None
    assert launcher_local_processes({"HOROVOD_LOCAL_SIZE": "4"}) == 4
    assert launcher_local_processes({"OMPI_COMM_WORLD_LOCAL_SIZE": "2"}) == 2
    assert launcher_local_processes({"MPI_LOCALNRANKS": "x"}) is None


@pytest.mark.parametrize("spec, local_rank, gpus, device", [
    ("cpu", 3, 0, "cpu"), ("cpu", 1, 8, "cpu"), ("gpu", 0, 4, "gpu0"), ("gpu", 3, 4, "gpu3"),
    ("gpu", 2, 1, "gpu0"),  # a scheduler showed each process its own GPU
])
def test_a_rank_takes_the_gpu_of_its_local_rank(spec, local_rank, gpus, device):
    assert hv.rank_device(spec, local_rank, gpus) == device


def test_one_device_per_rank():
    with pytest.raises(GluondetError, match="one process per device: --ctx gpu0,gpu1 names 2"):
        hv.rank_device("gpu0,gpu1", 0, 2)
    with pytest.raises(GluondetError, match="local rank 4 has no GPU of its own .*shows 4"):
        hv.rank_device("gpu", 4, 4)


def summaries(*ranks):
    return [hv.input_summary(*r) for r in ranks]


def test_ranks_that_read_other_inputs_are_named():
    same = (["cat", "dog"], ["a", "b", "c"], ["v"], {"lr": 0.1})
    assert hv.disagreement(summaries(same, same, same)) is None
    line = hv.disagreement(summaries(same, same, (["cat"], ["a", "b", "c"], ["v"], {"lr": 0.1})))
    assert line.startswith("ranks disagree on the classes: rank 2 has 1 classes (cat), rank 0 has 2 (cat, dog)")
    line = hv.disagreement(summaries(same, (["cat", "dog"], ["a", "b"], ["v"], {"lr": 0.1})))
    assert "on the training images: rank 1 has 2 training images, rank 0 has 3" in line
    line = hv.disagreement(summaries(same, (["cat", "dog"], ["a", "b", "x"], ["v"], {"lr": 0.1})))
    assert "rank 1 has as many training images (3) as rank 0, but not the same images or boxes" in line
    line = hv.disagreement(summaries(same, (["cat", "dog"], ["a", "b", "c"], ["v"], {"lr": 0.2})))
    assert "on the settings" in line and "same command line" in line


class FakeJob:
    """Rank ``rank`` of 2; the other rank's contributions to each allreduce come from ``other``."""

    def __init__(self, other=None, rank=1, broadcast=None):
        self.rank, self.num_workers, self.local_rank, self.local_size = rank, 2, rank, 2
        self.other = other or (lambda values, name: values)
        self.broadcast = broadcast or (lambda obj, name: obj)
        self.position = Position()

    def allreduce_sum(self, values, name):
        return np.asarray(values, dtype="float64") + np.asarray(self.other(values, name), dtype="float64")

    def broadcast_object(self, obj, name):
        return self.broadcast(obj, name)

    def broadcast_parameters(self, net, prefix):
        pass

    def barrier(self, name):
        pass


def test_an_error_of_every_rank_is_said_by_rank_0_alone(capsys):
    for rank in (0, 1):
        error = hv.said_once(FakeJob(rank=rank), GluondetError("training diverged"), "x")
        assert error.quiet
        assert capsys.readouterr().err == ("gluondet: error: training diverged\n" if rank == 0 else "")


# ---- the hooks through the trainer -----------------------------------------------------------------

class CountedToyStep:
    """Squared error of a Dense(1), divided by a count of the batch (as SSD's loss by its positives)."""

    loss_names = ("loss",)

    def __init__(self, count=4.0, loss_at=None, on_step=None):
        self.count, self.loss_at, self.on_step, self.calls = count, loss_at or {}, on_step, 0

    def num_images(self, batch):
        return batch[0].shape[0]

    def step_batch_size(self, batch):
        return 1

    def loss_normalizer(self, batch):
        return self.count

    def prepare(self, net, ctx_list):
        return net

    def __call__(self, net, batch, ctx_list):
        x, y = batch
        with autograd.record():
            loss = ((net(x) - y) ** 2).sum() / self.count
        loss.backward()
        self.calls += 1
        if self.on_step:
            self.on_step(self.calls)
        return {"loss": self.loss_at.get(self.calls, float(loss.asscalar()))}



def toy_trainer(job, step, epochs=2, extra=(), guard=False):
    net = gluon.nn.Dense(1, in_units=3)
    net.initialize(mx.init.Constant(0.1))
    optimizer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1}, update_on_kvstore=False)
    first, after_guard, last = hv.hooks(job)
    hooks = [*first, *([DivergenceGuard("stop")] if guard else []), *after_guard, *extra, *last]
    return Trainer(net, ToyLoader(), hv.CountingStep(step), optimizer, [mx.cpu()], hooks,
                   lambda epoch, it: 0.1, epochs, ITERS, signals=hv.CollectiveSignals())


def test_every_rank_sees_the_jobs_losses_weighted_by_their_counts():
    seen = []

    class Record(hv.HookBase):
        def after_backward(self):
            seen.append(dict(self.trainer.state.losses))

    # the other rank counted 12 (this one 4) and its loss (already divided by 12) was 2.0
    trainer = toy_trainer(FakeJob(lambda v, n: [12.0, 0, 0, 2.0 * 12.0] if n == "gluondet.step" else v),
                          CountedToyStep(count=4.0, loss_at={1: 1.0}), epochs=1, extra=[Record()])
    trainer.train()
    assert seen[0] == {"loss": pytest.approx((1.0 * 4 + 2.0 * 12) / 16)}  # the whole batch's loss


def test_a_ranks_gradient_is_weighted_by_its_share_of_the_count():
    grads = {}

    class Grab(hv.HookBase):
        def after_backward(self):
            grads.setdefault("weighted", self.trainer.net.weight.grad().asnumpy().copy())

    def record_raw(calls):
        if calls == 1:
            grads["raw"] = net_of[0].weight.grad().asnumpy().copy()

    step = CountedToyStep(count=4.0, on_step=record_raw)
    trainer = toy_trainer(FakeJob(lambda v, n: [12.0, 0, 0, 1.0] if n == "gluondet.step" else v), step,
                          epochs=1, extra=[Grab()])
    net_of = [trainer.net]
    trainer.train()
    # 2 ranks x 4 of the job's 16: Horovod's average of the weighted gradients is then the sum of
    # the unnormalized ones over the job's count, as one process on the whole batch
    np.testing.assert_allclose(grads["weighted"], grads["raw"] * 2 * 4 / 16, rtol=1e-6)


def test_a_stop_asked_on_another_rank_stops_this_one_after_the_same_step():
    # the other rank got SIGTERM during step 2: its flag comes with step 2's allreduce
    def other(values, name):
        if name != "gluondet.step":
            return values
        calls[0] += 1
        return [4.0, 0.0, 1.0 if calls[0] == 2 else 0.0, values[3]]

    calls = [0]
    trainer = toy_trainer(FakeJob(other), CountedToyStep())
    with pytest.raises(TrainingStopped) as stopped:
        trainer.train()
    assert stopped.value.reason == "SIGTERM" and (stopped.value.epoch, stopped.value.iteration) == (1, 2)


def test_a_local_signal_waits_for_the_next_allreduce():
    # SIGTERM arrives here after step 1's allreduce: one process would stop after step 1, a rank
    # shares it in step 2's allreduce, and every rank stops after step 2
    class SignalAfterStep1(hv.HookBase):
        def after_step(self):
            if self.trainer.state.iteration == 1:
                os.kill(os.getpid(), signal.SIGTERM)

    sent = []

    def other(values, name):
        if name == "gluondet.step":
            sent.append(list(values[1:3]))
        return values if name != "gluondet.step" else [4.0, 0.0, 0.0, values[3]]

    trainer = toy_trainer(FakeJob(other), CountedToyStep(), extra=[SignalAfterStep1()])
    with pytest.raises(TrainingStopped) as stopped:
        trainer.train()
    assert stopped.value.reason == "SIGTERM" and stopped.value.iteration == 2
    assert sent == [[0.0, 0.0], [0.0, 1.0]]  # [Ctrl-C, SIGTERM] as this rank sent them


def test_a_non_finite_loss_on_another_rank_is_judged_by_every_rank():
    from gluondet.engine.trainer import LossDiverged

    trainer = toy_trainer(FakeJob(lambda v, n: [4.0, 0, 0, float("nan")] if n == "gluondet.step" else v),
                          CountedToyStep(), guard=True)
    with pytest.raises(LossDiverged, match="loss is nan"):
        trainer.train()


def test_rank_0s_early_stop_reaches_every_rank():
    trainer = toy_trainer(FakeJob(broadcast=lambda obj, name: "early-stop" if name == "gluondet.epoch_end" else obj),
                          CountedToyStep(), epochs=5)
    trainer.train()
    assert trainer.state.stop_reason == "early-stop" and trainer.state.epoch == 0  # one epoch, not five


def test_after_a_rollback_every_rank_takes_rank_0s_state(tmp_path):
    rank0 = {"epoch": 3, "iteration": 0, "lr_scale": 0.25, "history": [{"epoch": 1}], "best_map": 0.5}

    def broadcast(obj, name):
        if name != "gluondet.rollback":
            return obj
        states, _ = obj
        trainer.optimizer.save_states(str(tmp_path / "s"))
        return (tmp_path / "s").read_bytes(), {**vars(trainer.state), **rank0}

    trainer = toy_trainer(FakeJob(broadcast=broadcast), CountedToyStep())
    hook = next(h for h in trainer.hooks if isinstance(h, hv.AfterRollback))
    hook.on_rollback()
    assert (trainer.state.epoch, trainer.state.lr_scale, trainer.state.best_map) == (3, 0.25, 0.5)


def test_settings_of_distributed_jobs_are_checked_before_anything_starts():
    from gluondet.config import resolve_train_config

    model = {"name": "tiny_ssd", "data_shape": 128}
    assert resolve_train_config(model, {"kvstore": "horovod", "patience": 3}).watchdog_timeout == 300
    # dist_sync's workers cannot follow worker 0's early stop: they would wait for its push for ever
    with pytest.raises(GluondetError, match="--patience stops on worker 0's validation"):
        resolve_train_config(model, {"kvstore": "dist_sync", "patience": 3})
    with pytest.raises(GluondetError, match="--watchdog-timeout must be positive"):
        resolve_train_config(model, {"kvstore": "horovod", "watchdog_timeout": 0})
    with pytest.raises(GluondetError, match="--find-lr runs in one process; leave out --kvstore horovod"):
        from gluondet.engine.lr_find import _check

        _check(resolve_train_config(model, {"kvstore": "horovod"}), 100, 1e-5, 1.0)
