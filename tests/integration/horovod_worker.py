"""``gluondet`` as a Horovod rank that also records what it trained on (for tests/integration/test_horovod.py).

Run as ``python horovod_worker.py DUMP_DIR train ...`` under horovodrun: the gluondet CLI with one
extra hook, added the way any caller of gluondet.engine.train adds hooks (production code has no
test switch). The hook writes, per rank: every step's batch and lr (``rank<r>_steps.npz``), the
weights training starts from (``rank<r>_start.params``: after the broadcast from rank 0; the
loader's anchor pass made them), the final weights (``rank<r>.params``)
and the image ids of its shard (``rank<r>.json``). With ``STOP_RANK=r`` in the environment, rank r
instead prints its pid and stops itself (SIGSTOP) before its second step, for the watchdog tests;
with ``RANK1_DATASET=PATH``, rank 1 trains on that dataset instead.
"""
import os
import signal
import sys
from pathlib import Path

import numpy as np

import gluondet.engine.train as engine
from gluondet.cli import main
from gluondet.engine.hooks import HookBase
from gluondet.run_folder import write_json


class Recorder:
    """The trainer's step, recording each batch (its arrays) before running it."""

    def __init__(self, step, batches):
        self._step, self.batches = step, batches

    def __getattr__(self, name):
        return getattr(self._step, name)

    def __call__(self, net, batch, ctx_list):
        self.batches.append([part.asnumpy() for part in batch])
        return self._step(net, batch, ctx_list)


class DumpRank(HookBase):
    def __init__(self, folder, setup):
        self.folder, self.setup = Path(folder), setup
        self.batches, self.lrs = [], []

    def before_train(self):  # after gluondet's own hooks: the weights are rank 0's
        self.folder.mkdir(parents=True, exist_ok=True)
        self.trainer.net.save_parameters(str(self.folder / f"rank{self.setup.rank}_start.params"))
        self.trainer.step = Recorder(self.trainer.step, self.batches)

    def before_step(self):
        state = self.trainer.state
        stop = os.environ.get("STOP_RANK")
        if stop is not None and int(stop) == self.setup.rank and (state.epoch, state.iteration) == (0, 1):
            print(f"rank {self.setup.rank} pid {os.getpid()} stops itself at epoch 1, iteration 1", flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)

    def after_backward(self):
        self.lrs.append(self.trainer.state.lr)

    def after_train(self):
        s, loader = self.setup, self.trainer.loader
        prefix = self.folder / f"rank{s.rank}"
        self.trainer.net.save_parameters(f"{prefix}.params")
        arrays = {f"step{i}_part{j}": part for i, batch in enumerate(self.batches) for j, part in enumerate(batch)}
        np.savez(f"{prefix}_steps.npz", lr=np.array(self.lrs), **arrays)
        ids = [s.train_ds.image_id(i) for i in loader.loader._dataset.indices]
        write_json(f"{prefix}.json", {"rank": s.rank, "num_workers": s.num_workers, "image_ids": ids,
                                      "steps": len(self.batches)})


if __name__ == "__main__":
    dump = sys.argv.pop(1)
    if os.environ.get("RANK1_DATASET") and os.environ.get("HOROVOD_RANK") == "1":  # a rank reading other files
        sys.argv[sys.argv.index("--dataset") + 1] = os.environ["RANK1_DATASET"]
    make_hooks = engine.make_hooks
    engine.make_hooks = lambda s, *a, **k: make_hooks(s, *a, **k) + [DumpRank(dump, s)]
    main()
