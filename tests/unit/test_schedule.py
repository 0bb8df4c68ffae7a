"""The learning-rate schedule: step decay at lr_steps, cosine and poly annealing (held equal to
GluonCV's LRScheduler / LRSequential iteration by iteration), and per-iteration linear warm-up."""
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


def gluoncv_schedule(mode, base_lr, epochs, iters, warmup_iters, power):
    """GluonCV's own composition (its train_yolo3.py): a linear warm-up, then ``mode`` over the
    remaining iterations. The warm-up runs from base / W to base over W iterations, gluondet's
    (GluonCV's scripts start it at 0); LRScheduler's linear mode cannot schedule one iteration."""
    from gluoncv.utils import LRScheduler, LRSequential

    total = epochs * iters
    anneal = LRScheduler(mode, base_lr=base_lr, target_lr=0, niters=total - warmup_iters, power=power)
    if warmup_iters < 2:
        assert warmup_iters == 0
        return anneal
    warmup = LRScheduler("linear", base_lr=base_lr / warmup_iters, target_lr=base_lr, niters=warmup_iters)
    return LRSequential([warmup, anneal])


@pytest.mark.parametrize("mode", ["cosine", "poly"])
@pytest.mark.parametrize("epochs, iters, warmup_epochs", [
    (1, 10, 0), (3, 7, 0), (4, 5, 1), (6, 13, 0.5), (12, 3, 2), (2, 50, 1.5), (5, 4, 4.5),
])
def test_cosine_and_poly_equal_gluoncvs_schedulers_at_every_iteration(mode, epochs, iters, warmup_epochs):
    warmup_iters = int(round(warmup_epochs * iters))
    for base_lr, power in ((0.01, 2.0), (0.4, 0.9), (1.0, 3.0)):
        reference = gluoncv_schedule(mode, base_lr, epochs, iters, warmup_iters, power)
        ours = [learning_rate(e, i, iters, base_lr, warmup_epochs=warmup_epochs, lr_mode=mode,
                              epochs=epochs, lr_power=power) for e in range(epochs) for i in range(iters)]
        assert ours == pytest.approx([reference(k) for k in range(epochs * iters)], rel=1e-12, abs=1e-15)
        assert ours[-1] == 0 and ours[warmup_iters] == pytest.approx(base_lr)


def test_annealing_ignores_the_step_settings_and_the_power_only_shapes_poly():
    plain = [learning_rate(e, i, 6, 0.1, lr_mode="cosine", epochs=5) for e in range(5) for i in range(6)]
    assert plain == [learning_rate(e, i, 6, 0.1, lr_steps=[2], lr_step_every=1, lr_decay=0.5, lr_power=7,
                                   lr_mode="cosine", epochs=5) for e in range(5) for i in range(6)]
    square = learning_rate(2, 0, 10, 1.0, lr_mode="poly", epochs=4)  # t/T = 20/39
    assert square == pytest.approx((19 / 39) ** 2)
    assert learning_rate(2, 0, 10, 1.0, lr_mode="poly", epochs=4, lr_power=0.9) == pytest.approx((19 / 39) ** 0.9)


def test_a_single_iteration_after_warmup_runs_at_the_base_lr():
    # GluonCV divides by zero here (N = niters - 1 = 0); gluondet runs the one step at the base lr
    assert learning_rate(0, 0, 1, 0.3, lr_mode="cosine", epochs=1) == 0.3
    assert learning_rate(1, 1, 2, 0.3, lr_mode="poly", epochs=2, warmup_epochs=1.5) == 0.3
    assert learning_rate(0, 1, 2, 0.3, lr_mode="cosine", epochs=1, warmup_epochs=1) == 0.3  # all warm-up


def test_step_mode_is_the_default_and_unchanged_by_epochs():
    for e in range(30):
        for i in (0, 4, 8):
            expected = 0.2 * 0.1 ** sum(e >= s for s in (10, 20)) * min(1.0, (e * 9 + i + 1) / 18)
            assert learning_rate(e, i, 9, 0.2, lr_steps=[10, 20], warmup_epochs=2) == pytest.approx(expected)
            assert learning_rate(e, i, 9, 0.2, lr_steps=[10, 20], warmup_epochs=2, lr_mode="step",
                                 epochs=30) == learning_rate(e, i, 9, 0.2, lr_steps=[10, 20], warmup_epochs=2)


def test_the_schedule_of_a_config_is_a_function_of_the_config_alone():
    from gluondet.config import resolve_train_config
    from gluondet.engine.schedule import schedule_of

    config = resolve_train_config({"name": "m"}, {"lr": 0.02, "epochs": 8, "lr_mode": "cosine", "warmup_epochs": 1})
    first, again = schedule_of(config, 11), schedule_of(config, 11)  # a resumed run builds it anew
    reference = gluoncv_schedule("cosine", 0.02, 8, 11, 11, 2.0)
    for e in range(8):
        for i in range(11):
            assert first(e, i) == again(e, i) == pytest.approx(reference(e * 11 + i), rel=1e-12, abs=1e-15)


def test_the_curve_for_plots_samples_the_schedule_at_the_end_of_each_iteration():
    from gluondet.engine.schedule import lr_curve

    lr_at = lambda e, i: learning_rate(e, i, 4, 1.0, lr_steps=[2], lr_decay=0.1)  # noqa: E731
    xs, ys = lr_curve(lr_at, 3, 4)
    assert xs == pytest.approx([k / 4 for k in range(1, 13)])  # the end of epoch k at x = k
    assert ys == pytest.approx([1] * 8 + [0.1] * 4)
    xs, ys = lr_curve(lambda e, i: e * 1000 + i, 200, 1000, points=100)  # 200k iterations: ys name them
    assert len(xs) <= 100 + 2 * 200 and xs[-1] == 200 and xs[0] == pytest.approx(0.001)
    assert xs == pytest.approx([(g + 1) / 1000 for g in ys]) and ys == sorted(set(ys))
    # every epoch's first and last iteration is there: a decay between epochs draws as a drop
    assert set(ys) >= {k * 1000 + j for k in range(200) for j in (0, 999)}
