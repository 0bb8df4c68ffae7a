"""Learning rate as a pure function of where training is: step decay plus linear warm-up."""


def decays_reached(epoch, lr_steps=(), lr_step_every=0):
    """How many decays apply in ``epoch`` (0-based): one per ``lr_steps`` epoch reached, plus one
    per ``lr_step_every`` epochs completed (decay every N epochs: at epochs N, 2N, 3N, ...)."""
    count = sum(1 for step in lr_steps if epoch >= step)
    if lr_step_every:
        count += epoch // lr_step_every
    return count


def learning_rate(epoch, iteration, iters_per_epoch, base_lr, lr_steps=(), lr_decay=0.1,
                  warmup_epochs=0.0, lr_step_every=0):
    """The lr for ``iteration`` (0-based, within the epoch) of ``epoch`` (0-based).

    Step decay: ``base_lr`` times ``lr_decay`` for each epoch in ``lr_steps`` already reached
    (``epoch >= step``), and for each ``lr_step_every`` epochs completed (``--lr-step-every 8``:
    epochs 0-7 at the base lr, 8-15 at base * decay, ...; the configuration allows one of the two).
    Warm-up: over the first ``warmup_epochs`` epochs (a fraction is fine), counted in iterations,
    the lr rises linearly from ``base_lr / warmup_iters`` to the full value.
    Being a function of position alone, resume needs nothing but the epoch to get it right.
    """
    lr = base_lr * lr_decay ** decays_reached(epoch, lr_steps, lr_step_every)
    warmup_iters = int(round(warmup_epochs * iters_per_epoch))
    done = epoch * iters_per_epoch + iteration
    if done < warmup_iters:
        lr *= (done + 1) / warmup_iters
    return lr


def epoch_learning_rates(epochs, base_lr, lr_steps=(), lr_decay=0.1, lr_step_every=0):
    """The lr each epoch starts its post-warm-up iterations with, for epochs 0..epochs-1 (for plots)."""
    return [base_lr * lr_decay ** decays_reached(e, lr_steps, lr_step_every) for e in range(epochs)]
