"""The learning-rate schedule: step decay at lr_steps and per-iteration linear warm-up."""
import pytest

from gluondet.engine.schedule import learning_rate


def test_constant_without_steps_or_warmup():
    assert all(learning_rate(e, i, 10, 0.01) == 0.01 for e in range(5) for i in range(10))


def test_step_decay_applies_from_the_step_epoch_on():
    lr = lambda epoch: learning_rate(epoch, 0, 10, 1.0, lr_steps=[3, 5], lr_decay=0.1)  # noqa: E731
    assert [lr(e) for e in range(7)] == pytest.approx([1, 1, 1, 0.1, 0.1, 0.01, 0.01])


def test_unsorted_steps_count_the_same():
    assert learning_rate(6, 0, 10, 1.0, lr_steps=[5, 3]) == pytest.approx(0.01)


def test_linear_warmup_rises_per_iteration_to_the_base_lr():
    lrs = [learning_rate(e, i, 4, 0.8, warmup_epochs=2) for e in range(3) for i in range(4)]
    # 8 warm-up iterations: (k + 1) / 8 of the base lr, then the base lr.
    assert lrs[:8] == pytest.approx([0.8 * (k + 1) / 8 for k in range(8)])
    assert lrs[8:] == pytest.approx([0.8] * 4)
    assert all(a < b for a, b in zip(lrs[:8], lrs[1:8]))


def test_fractional_warmup_epochs_count_iterations():
    lrs = [learning_rate(0, i, 10, 1.0, warmup_epochs=0.5) for i in range(10)]
    assert lrs[4] == pytest.approx(1.0) and lrs[3] == pytest.approx(0.8) and lrs[9] == 1.0


def test_warmup_scales_the_decayed_lr_when_a_step_comes_first():
    assert learning_rate(1, 0, 10, 1.0, lr_steps=[1], lr_decay=0.5, warmup_epochs=2) == pytest.approx(0.5 * 11 / 20)


def test_step_every_n_epochs():
    lr = lambda epoch: learning_rate(epoch, 0, 10, 1.0, lr_decay=0.5, lr_step_every=3)  # noqa: E731
    assert [lr(e) for e in range(10)] == pytest.approx([1, 1, 1, .5, .5, .5, .25, .25, .25, .125])


def test_step_every_equals_the_explicit_steps_it_stands_for():
    for every in (1, 2, 8):
        steps = list(range(every, 50, every))
        assert all(learning_rate(e, i, 7, 0.3, lr_steps=steps, warmup_epochs=1.5)
                   == pytest.approx(learning_rate(e, i, 7, 0.3, lr_step_every=every, warmup_epochs=1.5))
                   for e in range(50) for i in (0, 6))


def test_epoch_learning_rates_follow_the_schedule():
    from gluondet.engine.schedule import epoch_learning_rates

    assert epoch_learning_rates(5, 1.0, lr_steps=[2], lr_decay=0.1) == pytest.approx([1, 1, .1, .1, .1])
    assert epoch_learning_rates(5, 1.0, lr_step_every=2, lr_decay=0.1) == pytest.approx([1, 1, .1, .1, .01])
