"""From a dataset name or config to data on disk: demo data is generated on first use.

A dataset config with a ``synth:`` section (``shapes_voc``) describes data gluondet can make
itself; when its root does not exist yet, ``ensure_dataset`` writes it there and says so on
stderr, so ``--dataset shapes_voc`` works for every command the first time.
"""
from ..errors import GluondetError
from ..progress import say
from .synth import write_shapes_voc

SYNTH_ARGS = {"train": "n_train", "val": "n_val", "n_train": "n_train", "n_val": "n_val",
              "seed": "seed", "size": "size"}


def ensure_dataset(cfg):
    """Generate a demo dataset (config with ``synth:``) whose root does not exist; else do nothing."""
    if not cfg.synth or cfg.root.exists():
        return cfg.root
    if not isinstance(cfg.synth, dict):
        raise GluondetError(f"{cfg.source or cfg.name}: 'synth' must be a mapping, e.g. {{train: 300, val: 100}}")
    kwargs = {}
    for key, value in cfg.synth.items():
        if key not in SYNTH_ARGS:
            raise GluondetError(f"{cfg.source or cfg.name}: unknown synth setting '{key}' "
                                f"(known: train, val, seed, size)")
        kwargs[SYNTH_ARGS[key]] = int(value)

    say(f"gluondet: dataset {cfg.name} not found at {cfg.root}: generating it now (once)")
    try:
        write_shapes_voc(cfg.root, progress=True, **kwargs)
    except GluondetError:
        if not (cfg.root / "Annotations").is_dir():
            raise
        # another process generated it at the same moment; its folder appeared whole
    return cfg.root
