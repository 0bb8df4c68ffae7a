"""What the trainer's unit tests train: a loader of fixed random batches and a run folder for it."""
import mxnet as mx
import numpy as np

from gluondet.run_folder import RunFolder

ITERS = 3


class ToyLoader:
    """``iters`` batches of 4 drawn from (seed, epoch): the same epoch gives the same batches,
    resumed (``set_epoch(epoch, start)``) or not."""

    def __init__(self, iters=ITERS):
        self.iters, self.epoch, self.start = iters, 0, 0

    def set_epoch(self, epoch, start=0):
        self.epoch, self.start = epoch, start

    def __len__(self):
        return self.iters

    def __iter__(self):
        rng = np.random.default_rng([7, self.epoch])
        batches = [(rng.normal(size=(4, 3)), rng.normal(size=(4, 1))) for _ in range(self.iters)]
        for x, y in batches[self.start:]:
            yield mx.nd.array(x), mx.nd.array(y)


def toy_run_folder(tmp_path):
    """A new, locked run folder of a toy model (one class), for a fixture to yield from."""
    folder = RunFolder.create(tmp_path / "run")
    folder.write_info({"model": {"name": "toy", "family": "ssd"}}, ["a"])
    yield folder
    folder.unlock()
