"""The divergence guard, rollback and --clip-grad-norm with the toy network (tests/unit/test_trainer.py's
Dense(1) on seeded batches): a spike is not applied, sustained divergence rolls back to the last
commit with the lr halved (bit for bit the run a halved schedule gives), the limit stops with one
line, a resumed run after a rollback equals the straight one, and gradient clipping matches numpy."""
import itertools
import os
import signal

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon
from test_trainer import ITERS, ToyLoader, ToyStep, run, toy_net, weights  # noqa: F401 (run: fixture)

from gluondet.engine import hooks as H
from gluondet.engine.divergence import ClipGradNorm, DivergenceGuard, RollbackToCommit
from gluondet.engine.trainer import LossDiverged, Trainer, TrainingStopped
from gluondet.run_folder import RunFolder

NAN = float("nan")


def guarded_trainer(run, epochs=4, step=None, lr_at=None, guard=None, ctx_list=None, net=None, state=None):
    """The toy through the production hooks, with a guard that judges after 2 steps and calls 3 bad
    steps in a row sustained (the defaults need 10 and 5: more than the toy's 3-step epochs)."""
    guard = guard or DivergenceGuard(min_history=2, patience=3)
    maps = (k / 100 for k in itertools.count(1))  # improving: every validation a new best

    def validate(guard_batches):
        return {"map": next(maps), "per_class": {}}

    ctx_list = ctx_list or [mx.cpu()]
    net = net or toy_net()
    optimizer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1, "momentum": 0.9},
                              update_on_kvstore=False)
    hooks = [H.EpochSeed(1), RollbackToCommit(run, ctx_list), guard, H.Validation(validate, 1),
             H.BestScore(), H.Checkpointer(run, 0.1, "voc"), H.MetricsWriter(run, ("loss",))]
    return Trainer(net, ToyLoader(), step or ToyStep(), optimizer, ctx_list, hooks,
                   lr_at or (lambda e, i: 0.1), epochs, ITERS, state=state)


def new_run(tmp_path, name):
    folder = RunFolder.create(tmp_path / name)
    folder.write_info({"model": {"name": "toy"}}, ["a"])
    return folder


def halved_from(epoch):
    """The schedule a rollback in ``epoch`` (1-based) leaves: 0.1 before it, 0.05 from it on."""
    return lambda e, i: 0.1 if e + 1 < epoch else 0.05


def test_a_spike_is_not_applied(run):
    step = ToyStep(loss_at={5: 1e6})  # epoch 2, iteration 1: finite, far above the recent level
    trainer = guarded_trainer(run, epochs=2, step=step)
    seen = {}
    trainer.register([type("Keep", (H.HookBase,), {"after_step": lambda self: seen.update(
        {len(step.calls): trainer.net.weight.data().asnumpy().copy()})})()])
    trainer.train()
    np.testing.assert_array_equal(seen[5], seen[4])
    assert run.last_state()["history"][1]["skipped_steps"] == 1
    assert run.last_state()["rollbacks"] == []


def test_sustained_divergence_rolls_back_and_halves_the_lr(run, tmp_path):
    step = ToyStep(loss_at={7: NAN, 8: NAN, 9: NAN})  # all of epoch 3
    guarded_trainer(run, step=step).train()
    state = run.last_state()
    assert state["epoch"] == 4 and state["lr_scale"] == 0.5 and state["lr"] == pytest.approx(0.05)
    [event] = state["rollbacks"]
    assert (event["epoch"], event["iteration"], event["loss"], event["lr"]) == (3, 2, "loss", 0.1)
    # the epochs after the rollback are the epochs a schedule halved from epoch 3 trains, bit for bit
    reference = new_run(tmp_path, "reference")
    guarded_trainer(reference, lr_at=halved_from(3)).train()
    reference.unlock()
    for name, value in weights(reference / "last.params").items():
        np.testing.assert_array_equal(weights(run / "last.params")[name], value)
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].endswith("skipped_steps,rollbacks") and rows[3].endswith(",0,1")  # epoch 3 ran again
    from gluondet.eval.html_report import write_report

    page = write_report(run.path).read_text(encoding="utf-8")
    assert "Divergence: 1 rollback(s)" in page and "<td>3</td><td>2</td><td>loss</td><td>nan</td>" in page


def test_a_rollback_before_any_commit_goes_back_to_the_start(run, tmp_path):
    guarded_trainer(run, epochs=2, step=ToyStep(loss_at={1: NAN, 2: NAN, 3: NAN})).train()
    reference = new_run(tmp_path, "reference")
    guarded_trainer(reference, epochs=2, lr_at=halved_from(1)).train()
    reference.unlock()
    np.testing.assert_array_equal(weights(run / "last.params")["weight"],
                                  weights(reference / "last.params")["weight"])
    assert run.last_state()["rollbacks"][0]["epoch"] == 1


def test_the_limit_stops_with_one_line_naming_the_loss(run):
    step = ToyStep(loss_at={n: NAN for n in range(7, 40)})
    trainer = guarded_trainer(run, step=step, guard=DivergenceGuard(max_rollbacks=2, min_history=2, patience=3))
    with pytest.raises(LossDiverged) as stopped:
        trainer.train()
    line = str(stopped.value)
    assert "\n" not in line and "after 2 rollback(s)" in line
    # rolled back to epoch 2, then (diverging again from it) to the start: it stops in epoch 1
    assert "loss is nan at epoch 1, iteration 2 (lr 0.025" in line and "--find-lr" in line
    state = run.last_state()
    assert state["epoch"] == 2 and len(state["rollbacks"]) == 0  # the commit before the divergence
    assert trainer.state.lr_scale == 0.25


def test_stop_mode_stops_at_once_and_warn_mode_goes_on(run, tmp_path, capsys):
    step = ToyStep(loss_at={7: NAN, 8: NAN, 9: NAN})
    with pytest.raises(LossDiverged, match="3 steps in a row"):
        guarded_trainer(run, step=step, guard=DivergenceGuard("stop", min_history=2, patience=3)).train()
    warned = new_run(tmp_path, "warned")
    step = ToyStep(loss_at={7: NAN, 8: NAN, 9: NAN})
    guarded_trainer(warned, step=step, guard=DivergenceGuard("warn", min_history=2, patience=3)).train()
    warned.unlock()
    state = warned.last_state()
    assert state["epoch"] == 4 and state["rollbacks"] == [] and state["history"][2]["skipped_steps"] == 3
    assert "going on (--on-diverge warn)" in capsys.readouterr().err


def test_a_loss_that_climbs_without_spikes_is_divergence(run):
    # every step 1.5x the last: never 10x the median of the last 4, but 20x the run's lowest level soon
    step = ToyStep(loss_at={n: 1.5 ** n for n in range(1, 40)})
    guard = DivergenceGuard("stop", window=4, min_history=2, patience=3)
    trainer = guarded_trainer(run, step=step, guard=guard)
    with pytest.raises(LossDiverged, match=r"rose \d+x above the run's lowest"):
        trainer.train()
    assert trainer.state.skipped == 0


@pytest.mark.parametrize("stop_at_call", [10, 12])  # just after the rollback; in the epoch after
def test_resume_after_a_rollback_is_bit_exact(run, tmp_path, stop_at_call):
    straight = new_run(tmp_path, "straight")
    guarded_trainer(straight, step=ToyStep(loss_at={7: NAN, 8: NAN, 9: NAN})).train()
    straight.unlock()

    def send(n):
        if n == stop_at_call:
            os.kill(os.getpid(), signal.SIGTERM)

    step = ToyStep(loss_at={7: NAN, 8: NAN, 9: NAN}, on_step=send)
    with pytest.raises(TrainingStopped):
        guarded_trainer(run, step=step).train()
    run.unlock()
    run.lock()
    from gluondet.engine.train import restore_state

    net = toy_net()
    net.load_parameters(str(run / "last.params"))
    trainer = guarded_trainer(run, net=net)

    class Setup:  # what restore_state reads of gluondet.engine.train.Setup
        resumed, chief = run.last_state(), True
        config = type("C", (), {"resume": str(run.path)})

    trainer.state = restore_state(Setup, trainer.optimizer)
    assert trainer.state.lr_scale == 0.5
    trainer.train()
    for name, value in weights(straight / "last.params").items():
        np.testing.assert_array_equal(weights(run / "last.params")[name], value)
    assert run.last_state()["rollbacks"] == straight.last_state()["rollbacks"]


def one_step_weights(ctx_list, max_norm, lr=0.5):
    """The toy's weights after one step of plain SGD with ``ClipGradNorm(max_norm)`` (or none)."""
    net = gluon.nn.Dense(1, in_units=3)
    net.initialize(mx.init.Constant(0.1), ctx=ctx_list)
    optimizer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": lr}, update_on_kvstore=False)
    hooks = [ClipGradNorm(net.collect_params().values(), max_norm)] if max_norm else []
    loader = [(mx.nd.array(np.arange(12).reshape(4, 3) / 4.0), mx.nd.array([[3.0], [-1.0], [2.0], [5.0]]))]

    class Step(ToyStep):
        def __call__(self, net, batch, ctx_list):  # the batch split over the devices, as SSD's step
            from mxnet import autograd

            x, y = batch
            parts = [(x[i::len(ctx_list)].as_in_context(c), y[i::len(ctx_list)].as_in_context(c))
                     for i, c in enumerate(ctx_list)]
            with autograd.record():
                losses = [((net(a) - b) ** 2).sum() for a, b in parts]
            autograd.backward(losses)
            return {"loss": sum(float(l.asscalar()) for l in losses)}

    trainer = Trainer(net, loader, Step(), optimizer, ctx_list, hooks, lambda e, i: lr, 1, 1)
    trainer.train()
    return {k: v.data(ctx_list[0]).asnumpy() for k, v in net.collect_params().items()}


@pytest.mark.parametrize("ctx_list", [[mx.cpu(0)], [mx.cpu(0), mx.cpu(1)]], ids=["cpu", "cpu0,cpu1"])
def test_clip_grad_norm_scales_the_batch_gradient_to_the_norm(ctx_list):
    x = np.arange(12).reshape(4, 3) / 4.0
    y = np.array([3.0, -1.0, 2.0, 5.0])
    residual = x @ np.full(3, 0.1) - y  # the weight starts at 0.1, the bias at 0 (Dense's own)
    grad = np.concatenate([2 * x.T @ residual, [2 * residual.sum()]]) / 4  # mean over the batch of 4
    norm = np.linalg.norm(grad)
    for max_norm in (norm / 4, norm * 2):
        got = one_step_weights(ctx_list, max_norm)
        expected = np.array([0.1, 0.1, 0.1, 0.0]) - 0.5 * grad * min(1.0, max_norm / norm)
        weight = next(v for k, v in got.items() if k.endswith("weight"))
        bias = next(v for k, v in got.items() if k.endswith("bias"))
        np.testing.assert_allclose(np.concatenate([weight.ravel(), bias]), expected, rtol=1e-5)


def test_diverging_again_from_the_same_commit_goes_back_to_the_start(run, tmp_path):
    # epoch 3 diverges, is rolled back to epoch 2, and diverges again from it at half the lr: the
    # commit itself is suspect, so the run starts over at a quarter of the lr
    step = ToyStep(loss_at={n: NAN for n in range(7, 13)})
    guarded_trainer(run, step=step).train()
    state = run.last_state()
    assert [r["to_epoch"] for r in state["rollbacks"]] == [2, 0] and state["lr_scale"] == 0.25
    reference = new_run(tmp_path, "reference")
    guarded_trainer(reference, lr_at=lambda e, i: 0.025).train()
    reference.unlock()
    for name, value in weights(reference / "last.params").items():
        np.testing.assert_array_equal(weights(run / "last.params")[name], value)
    assert [row["epoch"] for row in state["history"]] == [1, 2, 3, 4]


def test_many_bad_steps_between_good_ones_are_divergence(run):
    step = ToyStep(loss_at={n: NAN for n in range(7, 40, 2)})  # every other step from epoch 3 on
    guard = DivergenceGuard("stop", min_history=2, patience=3, skip_limit=4)
    with pytest.raises(LossDiverged, match="4 of the last"):
        guarded_trainer(run, epochs=10, step=step, guard=guard).train()


class PoisonWeights(H.HookBase):
    """Before call ``at``: every weight NaN, as a forward that poisons BatchNorm statistics does
    (no update of the guard's could have done it)."""

    def __init__(self, step, at):
        self.step, self.at = step, at

    def before_step(self):
        if len(self.step.calls) + 1 == self.at:
            for param in self.trainer.net.collect_params().values():
                param.set_data(mx.nd.full(param.shape, NAN))


def test_an_epoch_whose_weights_are_not_finite_is_never_committed(run):
    step = ToyStep()
    trainer = guarded_trainer(run, step=step, guard=DivergenceGuard("stop", min_history=2, patience=3))
    trainer.register([PoisonWeights(step, at=6)])  # the last step of epoch 2
    with pytest.raises(LossDiverged, match="weights are no longer finite at the end of the epoch"):
        trainer.train()
    assert run.last_state()["epoch"] == 1
    assert np.isfinite(weights(run / "last.params")["weight"]).all()
