"""``gluondet`` as a dist worker that also dumps its final weights and shard (for the dist test).

Run as ``python dist_worker.py DUMP_DIR train ...``: the gluondet CLI with one extra hook, added
the way any caller of gluondet.engine.train adds hooks, so production code needs no test switch.
"""
import sys
from pathlib import Path

import gluondet.engine.train as engine
from gluondet.cli import main
from gluondet.engine.hooks import HookBase
from gluondet.run_folder import write_json


class DumpWorker(HookBase):
    """worker<rank>.params and worker<rank>.json (the image ids of its shard) after training."""

    def __init__(self, folder, setup):
        self.folder, self.setup = Path(folder), setup

    def after_train(self):
        s, loader = self.setup, self.trainer.loader
        self.folder.mkdir(parents=True, exist_ok=True)
        self.trainer.net.save_parameters(str(self.folder / f"worker{s.rank}.params"))
        ids = [s.train_ds.image_id(i) for i in loader.loader._dataset.indices]
        write_json(self.folder / f"worker{s.rank}.json", {"rank": s.rank, "image_ids": ids})


if __name__ == "__main__":
    dump = sys.argv.pop(1)
    make_hooks = engine.make_hooks
    engine.make_hooks = lambda s, *a, **k: make_hooks(s, *a, **k) + [DumpWorker(dump, s)]
    main()
