"""Learning rate as a pure function of where training is: step decay, cosine or poly annealing,
each after an optional linear warm-up."""
import math


def decays_reached(epoch, lr_steps=(), lr_step_every=0):
    """How many decays apply in ``epoch`` (0-based): one per ``lr_steps`` epoch reached, plus one
    per ``lr_step_every`` epochs completed (decay every N epochs: at epochs N, 2N, 3N, ...)."""
    count = sum(1 for step in lr_steps if epoch >= step)
    if lr_step_every:
        count += epoch // lr_step_every
    return count


def annealed(lr_mode, done, total, power=2.0):
    """The fraction of the base lr that ``cosine`` or ``poly`` annealing gives after ``done`` of
    ``total`` iterations: GluonCV's ``LRScheduler`` with ``target_lr`` 0, whose N is ``total - 1``
    so that the last iteration reaches 0 (``(1 + cos(pi * T / N)) / 2``, ``(1 - T / N) ** power``)."""
    last = total - 1
    if last <= 0:  # one iteration (or none) to anneal over: GluonCV would divide by zero
        return 1.0
    done = min(max(0, done), last)
    if lr_mode == "cosine":
        return (1 + math.cos(math.pi * done / last)) / 2
    if lr_mode == "poly":
        return (1 - done / last) ** power
    raise ValueError(f"not an annealing lr mode: {lr_mode}")  # a gluondet bug: config checks the mode


def learning_rate(epoch, iteration, iters_per_epoch, base_lr, lr_steps=(), lr_decay=0.1,
                  warmup_epochs=0.0, lr_step_every=0, lr_mode="step", epochs=0, lr_power=2.0):
    """The lr for ``iteration`` (0-based, within the epoch) of ``epoch`` (0-based).

    ``step``: ``base_lr`` times ``lr_decay`` for each epoch in ``lr_steps`` already reached
    (``epoch >= step``), and for each ``lr_step_every`` epochs completed (``--lr-step-every 8``:
    epochs 0-7 at the base lr, 8-15 at base * decay, ...; the configuration allows one of the two).
    ``cosine`` and ``poly``: per iteration from ``base_lr`` down to 0 at the last iteration of
    ``epochs`` (``annealed``), over the iterations after the warm-up: the warm-up does not count in
    the curve's length, as in GluonCV's detection scripts (train_yolo3.py's ``LRSequential`` of a
    linear warm-up, then the mode over ``epochs - warmup_epochs``).
    Warm-up: over the first ``warmup_epochs`` epochs (a fraction is fine), counted in iterations,
    the lr rises linearly from ``base_lr / warmup_iters`` to the full value (GluonCV's scripts start
    at 0, a step that changes nothing; here the first step already moves).
    Being a function of position alone, resume needs nothing but the epoch to get it right.
    """
    warmup_iters = int(round(warmup_epochs * iters_per_epoch))
    done = epoch * iters_per_epoch + iteration
    if lr_mode == "step":
        lr = base_lr * lr_decay ** decays_reached(epoch, lr_steps, lr_step_every)
    else:
        lr = base_lr * annealed(lr_mode, done - warmup_iters, epochs * iters_per_epoch - warmup_iters, lr_power)
    if done < warmup_iters:
        lr *= (done + 1) / warmup_iters
    return lr


def schedule_of(config, iters_per_epoch):
    """``lr_at(epoch, iteration)``: the lr ``learning_rate`` gives for a TrainConfig's schedule."""
    def lr_at(epoch, iteration):
        return learning_rate(epoch, iteration, iters_per_epoch, config.lr, config.lr_steps, config.lr_decay,
                             config.warmup_epochs, config.lr_step_every, config.lr_mode, config.epochs,
                             config.lr_power)

    return lr_at


def lr_curve(lr_at, epochs, iters_per_epoch, points=500):
    """The planned lr of a whole run for curves.png: ``(x, lr)`` lists, iteration ``i`` of epoch ``e``
    at ``x = e + (i + 1) / iters_per_epoch`` (the end of epoch ``e`` at ``e + 1``, its number in
    metrics.csv). About ``points`` evenly spaced iterations, plus the first and last of every epoch
    so that a step decay draws as a drop between epochs."""
    total = epochs * iters_per_epoch
    stride = max(1, total // points)
    ends = {k * iters_per_epoch + i for k in range(epochs) for i in (0, iters_per_epoch - 1)}
    chosen = sorted(set(range(0, total, stride)) | ends)
    xs = [(g + 1) / iters_per_epoch for g in chosen]
    return xs, [lr_at(g // iters_per_epoch, g % iters_per_epoch) for g in chosen]
