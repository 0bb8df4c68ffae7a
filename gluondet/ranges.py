"""The allowed range of every numeric option, in one table for every command.

``train`` (through config.validate_train_config), ``eval``, ``detect`` and ``export`` all check
their numbers here, so one bad value gets one line, the same from each: ``--batch-size must be at
least 1``. A value click's own range types refused would be a usage screen instead, and a value
nobody checked reached MXNet (``eval --batch-size 0``: a ZeroDivisionError in its sampler).
"""
import math

from .errors import GluondetError

_AT_LEAST_1 = (lambda v: v >= 1, "at least 1")
_NOT_NEGATIVE = (lambda v: v >= 0, "0 or more")
_POSITIVE = (lambda v: v > 0, "positive")

# option (its dest name) -> (whether a value is allowed, what "--option must be ..." says)
RANGES = {
    "batch_size": _AT_LEAST_1,
    "epochs": _AT_LEAST_1,
    "val_interval": _AT_LEAST_1,
    "max_iters": _AT_LEAST_1,
    "max_boxes": _AT_LEAST_1,
    "calib_images": _AT_LEAST_1,
    "num_workers": _NOT_NEGATIVE,
    "warmup_epochs": _NOT_NEGATIVE,
    "wd": _NOT_NEGATIVE,
    "max_rollbacks": _NOT_NEGATIVE,
    "mosaics": _NOT_NEGATIVE,
    "lr_step_every": (lambda v: v >= 0, "0 (off) or more"),
    "log_every": (lambda v: v >= 0, "0 (off) or more"),
    "save_interval": (lambda v: v >= 0, "0 (never) or more"),
    "patience": (lambda v: v >= 0, "0 (never stop early) or more"),
    "data_shape": (lambda v: v >= 32, "at least 32"),
    "lr": _POSITIVE,
    "clip_gradient": _POSITIVE,
    "clip_grad_norm": _POSITIVE,
    "lr_power": _POSITIVE,
    "lr_decay": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "iou": (lambda v: 0.05 <= v <= 0.95, "in [0.05, 0.95]"),
    "score": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "thresh": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "max_batch": _AT_LEAST_1,
    "max_queue": _AT_LEAST_1,
    "max_wait_ms": _NOT_NEGATIVE,
    "max_upload_mb": _POSITIVE,
    "watchdog_timeout": _POSITIVE,
    "port": (lambda v: 0 <= v <= 65535, "in [0, 65535] (0: any free port)"),
    # options whose meaning depends on the command: "command.option"
    "synth.train": _NOT_NEGATIVE,
    "synth.val": _NOT_NEGATIVE,
    "synth.size": (lambda v: v >= 32, "at least 32"),
    "split.val": (lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    "split.test": (lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    "show.pages": (lambda v: 1 <= v <= 100, "in [1, 100]"),
    "launch.workers": _AT_LEAST_1,
    "launch.servers": _AT_LEAST_1,
    "launch.timeout": (lambda v: v >= 1, "at least 1 (second)"),
    "launch.watchdog_timeout": (lambda v: v >= 1, "at least 1 (second)"),
}


def check_ranges(values):
    """Refuse the first value of ``values`` ({dest name: value}) outside its range in RANGES.

    None means "not given" (the default applies) and names without a range are skipped, so a
    whole config's fields can be passed. A name "command.option" is an option of one command only.
    """
    for name, value in values.items():
        if name not in RANGES or value is None or isinstance(value, bool):
            continue
        flag = "--" + name.rsplit(".", 1)[-1].replace("_", "-")
        if isinstance(value, float) and not math.isfinite(value):
            raise GluondetError(f"{flag} must be a finite number, got {value}")
        allowed, what = RANGES[name]
        if not allowed(value):
            raise GluondetError(f"{flag} must be {what}, got {value:g}")
    return values
