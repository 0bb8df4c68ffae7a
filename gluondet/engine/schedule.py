"""Learning rate as a pure function of where training is: step decay plus linear warm-up."""


def learning_rate(epoch, iteration, iters_per_epoch, base_lr, lr_steps=(), lr_decay=0.1,
                  warmup_epochs=0.0):
    """The lr for ``iteration`` (0-based, within the epoch) of ``epoch`` (0-based).

    Step decay: ``base_lr`` times ``lr_decay`` for each epoch in ``lr_steps`` already reached
    (``epoch >= step``). Warm-up: over the first ``warmup_epochs`` epochs (a fraction is fine),
    counted in iterations, the lr rises linearly from ``base_lr / warmup_iters`` to the full value.
    Being a function of position alone, resume needs nothing but the epoch to get it right.
    """
    lr = base_lr * lr_decay ** sum(1 for step in lr_steps if epoch >= step)
    warmup_iters = int(round(warmup_epochs * iters_per_epoch))
    done = epoch * iters_per_epoch + iteration
    if done < warmup_iters:
        lr *= (done + 1) / warmup_iters
    return lr
