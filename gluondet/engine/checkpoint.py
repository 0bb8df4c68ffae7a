"""The run folder: what a training run writes, and how a network is rebuilt from it.

A run folder carries everything ``eval``, ``detect`` and ``export`` need, so nobody re-types classes
or the model: ``config.yaml`` (resolved model, dataset and train sections), ``classes.txt``,
``best.params`` + ``best.json``, ``last.params`` + ``last.states`` + ``last.json`` (resume),
``epoch_XXXX.params``, ``metrics.csv``, ``curves.png``, ``tb/``. Every write is atomic (temporary
file, then rename), so a kill at any moment leaves the last good files readable.
"""
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..config import dump_yaml, load_yaml
from ..errors import GluondetError
from ..fileio import atomic_path, atomic_write_text

CONFIG_FILE = "config.yaml"
CLASSES_FILE = "classes.txt"


# ----------------------------------------------------------------------------- choosing the folder
def default_run_dir(dataset_name, model_name, runs_root="runs"):
    """``runs/<dataset>-<model>``, or with ``-2``, ``-3``... when taken: a run is never overwritten."""
    base = Path(runs_root) / f"{_safe(dataset_name)}-{_safe(model_name)}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def _safe(name):
    return re.sub(r"[^\w.+-]+", "_", str(name)).strip("_") or "run"


def check_new_run_dir(run_dir):
    """An explicit --out must not hold a run already (use --resume to continue one)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise GluondetError(
            f"--out {run_dir}: folder exists and is not empty; choose another --out, "
            f"or continue that run with --resume {run_dir}")
    return run_dir


# ----------------------------------------------------------------------------- writing
def write_run_info(run_dir, config, classes):
    """config.yaml (the resolved configuration) and classes.txt (one name per line, UTF-8)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_yaml(config, run_dir / CONFIG_FILE)
    atomic_write_text(run_dir / CLASSES_FILE, "".join(f"{c}\n" for c in classes))


def save_params(net, path):
    with atomic_path(path) as tmp:
        net.save_parameters(tmp)


def write_json(path, data):
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path):
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GluondetError(f"{path}: missing") from None
    except (OSError, ValueError) as e:
        raise GluondetError(f"{path}: cannot read ({e})") from None


def save_last(run_dir, net, trainer, state, with_states=True):
    """last.params, last.states (optimizer state) and last.json (``state``: epoch, best_map, lr...).

    last.json is written last: it names the epoch the other two belong to, so resume never pairs
    a new last.json with old weights. ``with_states`` is False on a dist kvstore, where the
    optimizer state lives on the parameter servers and MXNet cannot save it from a worker; then
    last.json says so and a resume restarts the momentum.
    """
    run_dir = Path(run_dir)
    save_params(net, run_dir / "last.params")
    if with_states:
        with atomic_path(run_dir / "last.states") as tmp:
            trainer.save_states(tmp)
    write_json(run_dir / "last.json", dict(state, optimizer_states=with_states))


def save_best(run_dir, net, epoch, mean_ap, metric):
    save_params(net, Path(run_dir) / "best.params")
    write_json(Path(run_dir) / "best.json", {"epoch": epoch, "map": mean_ap, "metric": metric})


def epoch_params_path(run_dir, epoch):
    return Path(run_dir) / f"epoch_{epoch:04d}.params"


# ----------------------------------------------------------------------------- reading
@dataclass
class RunInfo:
    """What a run folder says about its network: enough to rebuild it and read its outputs."""

    run_dir: Path
    params: Path
    classes: List[str]
    config: Dict[str, Any]
    model: Dict[str, Any]
    family: str
    data_shape: Optional[int]
    best: Optional[Dict[str, Any]] = field(default=None)

    def __getitem__(self, key):  # run_info["classes"] reads like the dict it describes
        return getattr(self, key)


def read_classes(run_dir):
    path = Path(run_dir) / CLASSES_FILE
    try:
        classes = [line.rstrip("\r\n") for line in path.read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError:
        raise GluondetError(
            f"{path}: missing; a run folder must carry its classes (written by gluondet train)") from None
    classes = [c for c in classes if c]
    if not classes:
        raise GluondetError(f"{path}: lists no classes")
    return classes


def read_run_info(run_dir_or_params, which="best"):
    """RunInfo for a run folder (``which``: best, last, or an epoch number) or a .params inside one."""
    from ..models import model_family

    given = Path(run_dir_or_params).expanduser()
    if given.suffix == ".params":
        run_dir, params = given.parent, given
    else:
        run_dir = given
        name = f"epoch_{int(which):04d}" if str(which).isdigit() else str(which)
        params = run_dir / f"{name}.params"
    if not run_dir.is_dir():
        raise GluondetError(f"{run_dir}: not a run folder (no such directory)")
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise GluondetError(
            f"{config_path}: missing; a run folder must carry its config (written by gluondet train), "
            f"weights alone do not say which network or classes they are for")
    classes = read_classes(run_dir)
    config = load_yaml(config_path)
    model = config.get("model")
    if not isinstance(model, dict):
        raise GluondetError(f"{config_path}: no 'model' section")
    if not params.is_file():
        hint = " (no validation has improved yet; try which='last' / --which last)" if which == "best" else ""
        raise GluondetError(f"{params}: missing{hint}")
    best_path = run_dir / "best.json"
    best = read_json(best_path) if best_path.is_file() else None
    data_shape = model.get("data_shape")
    return RunInfo(run_dir=run_dir, params=params, classes=classes, config=config, model=model,
                   family=model_family(model), data_shape=int(data_shape) if data_shape else None,
                   best=best)


def load_run(run_dir, which="best", ctx=None):
    """Rebuild the network of a run folder and load its weights: ``(net, run_info)``.

    ``which`` is ``best`` (default), ``last``, or an epoch number; ``run_dir`` may also be a
    ``.params`` file inside a run folder. ``ctx`` is a Context or a list (default: CPU).
    """
    import mxnet as mx

    from ..models import build_model

    info = read_run_info(run_dir, which)
    net = build_model(info.model, info.classes, pretrained_base=False)
    load_weights(net, info.params, info.family, ctx=ctx or mx.cpu(), config_path=info.run_dir / CONFIG_FILE)
    return net, info


def load_weights(net, params, family, ctx=None, config_path=None):
    """Load a .params file into ``net``; a mismatch is a GluondetError naming the file.

    Faster R-CNN's saved weights also hold its training target generator's constants, which a
    freshly built network creates only when it first trains: those extras are ignored.
    """
    import mxnet as mx

    try:
        net.load_parameters(str(params), ctx=ctx or mx.cpu(), ignore_extra=(family == "faster_rcnn"))
    except (AssertionError, mx.base.MXNetError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        where = f" in {config_path}" if config_path else ""
        raise GluondetError(f"{params}: does not fit the network{where} ({first})") from None
