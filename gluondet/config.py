"""Configuration: dataset and model YAML files, and the typed training config built from them.

Dataset configs (``configs/datasets/NAME.yaml``) say where a dataset is and what it holds; model
configs (``configs/models/NAME.yaml``) say which network to build and its training defaults. A run's
configuration is resolved as: TrainConfig defaults < model YAML ``train:`` < command-line flags,
and the result is written into the run folder (``config.yaml``), so a run folder alone is enough
to evaluate or deploy it. All YAML goes through ``yaml.safe_load``.
"""
import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from .constants import AUGMENTATIONS, KVSTORES, LR_MODES, MAX_ROLLBACKS, METRICS, ON_DIVERGE, OPTIMIZERS
from .errors import GluondetError
from .fileio import atomic_write_text
from .layouts import coco_file_spec, coco_roles, find_coco_splits
from .ranges import check_ranges
from .runtime import parse_ctx_spec

SHIPPED_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
CONFIG_DIR_ENV = "GLUONDET_CONFIG_DIR"
DATA_DIR_ENV = "GLUONDET_DATA"
DEFAULT_DATA_DIR = "~/.gluondet/datasets"


def shipped_config_dir():
    """The configs/ folder: beside the package in a checkout, or the installed gluondet.configs."""
    if (SHIPPED_CONFIG_DIR / "datasets").is_dir():
        return SHIPPED_CONFIG_DIR
    import gluondet.configs  # installed from a wheel: configs/ is the package gluondet.configs

    return Path(gluondet.configs.__file__).resolve().parent


def config_search_path(config_dir=None):
    """Folders searched for configs, first match wins: --config-dir, $GLUONDET_CONFIG_DIR, shipped."""
    dirs = []
    for d in (config_dir, os.environ.get(CONFIG_DIR_ENV)):
        if d:
            dirs.append(Path(d).expanduser())
    dirs.append(shipped_config_dir())
    return dirs


def load_yaml(path):
    """Read a YAML mapping with safe_load; a broken or non-mapping file is a GluondetError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise GluondetError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise GluondetError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise GluondetError(f"{path}: expected a YAML mapping (key: value), found {type(data).__name__}")
    return data


def nearest(word, candidates):
    """"; did you mean X?" for the closest of ``candidates`` to a mistyped ``word``, or ""."""
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def refuse_unknown_keys(data, known, where):
    """A GluondetError naming ``where`` (the file) for the first key of ``data`` not in ``known``."""
    unknown = [k for k in data if k not in known]
    if unknown:
        key = unknown[0]
        raise GluondetError(f"{where}: unknown key '{key}'{nearest(key, known)} "
                            f"(known: {', '.join(sorted(known))})")


def dump_yaml(data, path):
    """Write ``data`` as YAML atomically (temporary file, then rename)."""

    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


_VAR_RE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")


def expand_path(value, base_dir=None):
    """Expand ``~``, ``$VAR`` and ``${VAR:-default}``; a relative path is taken from ``base_dir``."""

    def substitute(m):
        name = m.group(1) or m.group(3)
        default = m.group(2)
        if name == DATA_DIR_ENV and default is None:
            default = DEFAULT_DATA_DIR
        got = os.environ.get(name)
        if got:
            return got
        if default is not None:
            return default
        raise GluondetError(f"path '{value}' uses ${name}, which is not set")

    path = Path(os.path.expanduser(_VAR_RE.sub(substitute, str(value))))
    path = Path(os.path.expanduser(str(path)))  # a default may itself start with ~
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return path


# ----------------------------------------------------------------------------- datasets
@dataclass
class DatasetConfig:
    """Where a dataset is and what it holds.

    ``splits`` maps a role (train, val, test) to what the reader needs: for VOC a split spec
    such as ``trainval`` or ``2007/trainval+2012/trainval``; for COCO a mapping with
    ``annotations`` (the instances JSON) and ``images`` (the image folder).
    ``classes`` is None when they are to be discovered from the annotations.
    ``synth`` (demo data only) holds ``gluondet data synth`` arguments used to create it on first use.
    ``supercategories`` ({class: group}, optional) groups classes for the error breakdown's Sim
    curve; a COCO file's own ``supercategory`` fields serve when it is not given.
    """

    name: str
    format: str
    root: Path
    classes: Optional[List[str]] = None
    splits: Dict[str, Any] = field(default_factory=dict)
    synth: Optional[Dict[str, Any]] = None
    source: Optional[Path] = None
    supercategories: Optional[Dict[str, str]] = None

    def split_spec(self, role_or_split):
        """The reader's spec for a role (train/val/test), or the argument itself if it is no role."""
        return self.splits.get(role_or_split, role_or_split)

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["root"] = str(self.root)
        d["source"] = str(self.source) if self.source else None
        return d


DATASET_FORMATS = ("voc", "coco")
DATASET_KEYS = ("name", "format", "root", "classes", "splits", "synth", "source",  # source: in run folders
                "supercategories")
VOC_DEFAULT_SPLITS = {"train": "train", "val": "val", "test": "test"}


def find_config(kind, name, config_dir=None):
    """Path of ``<kind>/<name>.yaml`` in the search path, or None."""
    for d in config_search_path(config_dir):
        candidate = d / kind / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    return None


def available_configs(kind, config_dir=None):
    names = set()
    for d in config_search_path(config_dir):
        names.update(p.stem for p in (d / kind).glob("*.yaml"))
    return sorted(names)


def dataset_config_from_dict(data, source=None, name=None):
    """Validate a dataset YAML mapping and build its DatasetConfig."""
    where = source or name or "dataset config"
    refuse_unknown_keys(data, DATASET_KEYS, where)
    fmt = str(data.get("format", "voc")).lower()
    if fmt not in DATASET_FORMATS:
        raise GluondetError(f"{where}: format '{fmt}' is not one of {', '.join(DATASET_FORMATS)}")
    if "root" not in data:
        raise GluondetError(f"{where}: no 'root' (the dataset folder)")
    classes = data.get("classes")
    if classes is not None:
        if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
            # ('person') in Python is a string, not a tuple: a classic source of per-letter classes.
            raise GluondetError(f"{where}: 'classes' must be a list of names, e.g. [hat, person]")
        classes = [str(c) for c in classes]
        stripped = [c.strip() for c in classes]
        if stripped != classes:
            bad = next(c for c, s in zip(classes, stripped) if c != s)
            raise GluondetError(f"{where}: class name {bad!r} has leading or trailing spaces")
        if len(set(classes)) != len(classes):
            dup = next(c for c in classes if classes.count(c) > 1)
            raise GluondetError(f"{where}: class '{dup}' is listed twice")
    supercategories = _supercategories(data.get("supercategories"), classes, where)
    base = Path(source).parent if source else None
    root = data["root"]
    if isinstance(root, list):  # alternatives: the first that exists (else the first, for the message)
        if not root:
            raise GluondetError(f"{where}: 'root' is an empty list")
        found = [expand_path(r, base) for r in root]
        root = next((r for r in found if r.exists()), found[0])
    splits = dict(VOC_DEFAULT_SPLITS) if fmt == "voc" else {}
    splits.update(data.get("splits") or {})
    return DatasetConfig(
        name=str(data.get("name") or name or Path(str(root)).name),
        format=fmt,
        root=expand_path(root, base),
        classes=classes,
        splits=splits,
        synth=data.get("synth"),
        source=Path(source) if source else None,
        supercategories=supercategories,
    )


def _supercategories(value, classes, where):
    """A dataset YAML's ``supercategories: {class: group}``, checked: a mapping of names, whose keys
    are listed classes when ``classes`` is given (a typo is refused like an unknown key)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                              for k, v in value.items()):
        raise GluondetError(f"{where}: 'supercategories' must map class names to group names, "
                            "e.g. {hat: headwear, helmet: headwear}")
    if classes is not None:
        refuse_unknown_keys(value, classes, f"{where}: supercategories")
    return {str(k): str(v).strip() for k, v in value.items()}


def resolve_dataset(name_or_path, config_dir=None):
    """A DatasetConfig from a config name (``helmet_voc``), a YAML file, a VOC root or a COCO JSON."""
    if name_or_path is None:
        raise GluondetError("no dataset given: use --dataset NAME (a config) or a VOC folder or COCO JSON")
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return dataset_config_from_dict(load_yaml(path), source=path)
    if path.is_dir():
        coco_splits = {} if (path / "Annotations").is_dir() else find_coco_splits(path)
        if coco_splits:  # a COCO root: annotations/instances_*.json and image folders
            return DatasetConfig(name=path.resolve().name, format="coco", root=path.resolve(),
                                 splits={**coco_splits, **coco_roles(coco_splits)})
        return DatasetConfig(name=path.resolve().name, format="voc", root=path.resolve(),
                             splits=dict(VOC_DEFAULT_SPLITS))
    if path.suffix == ".json" and path.is_file():
        root, spec = coco_file_spec(path)
        return DatasetConfig(name=path.resolve().stem, format="coco", root=root,
                             splits={"train": spec, "val": spec, "test": spec})
    if _looks_like_path(text):
        raise GluondetError(f"{text}: no such folder or file (--dataset takes a VOC folder, a COCO .json, "
                            "a dataset .yaml or a config name)")
    found = find_config("datasets", text, config_dir)
    if found is None:
        names = available_configs("datasets", config_dir)
        raise GluondetError(f"dataset '{text}' is not a folder, a file or a known config{nearest(text, names)} "
                            f"(known configs: {', '.join(names) or 'none'})")
    return dataset_config_from_dict(load_yaml(found), source=found, name=text)


def _looks_like_path(text):
    """A value written as a path (a separator, ~, a leading dot, a file suffix), not a config name."""
    return ("/" in text or os.sep in text or text.startswith(("~", "."))
            or Path(text).suffix.lower() in (".yaml", ".yml", ".json"))


# ----------------------------------------------------------------------------- models
# What a model YAML may say (configs/models/*.yaml); a run folder's config.yaml repeats it.
MODEL_KEYS = ("name", "family", "builder", "data_shape", "kwargs", "options", "train", "mean", "std", "short",
              "max_size")

def resolve_model_config(name_or_path, config_dir=None):
    """The model YAML mapping for a model name (configs/models/NAME.yaml) or a YAML file path."""
    path = Path(str(name_or_path)).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise GluondetError(f"model config {path} does not exist")
        data = load_yaml(path)
    else:
        found = find_config("models", str(name_or_path), config_dir)
        if found is None:
            names = available_configs("models", config_dir)
            raise GluondetError(f"model '{name_or_path}' has no config{nearest(name_or_path, names)} "
                                f"(known models: {', '.join(names)})")
        path = found
        data = load_yaml(found)
        # the name as given: Path.stem would cut "ssd_512_mobilenet1.0" at its dot
        data.setdefault("name", str(name_or_path))
    refuse_unknown_keys(data, MODEL_KEYS, path)
    train = data.get("train")
    if isinstance(train, dict):
        refuse_unknown_keys(train, TrainConfig.__dataclass_fields__, f"{path}: train")
    data.setdefault("name", path.stem)
    return data


def merge(base, override):
    """Recursive dict merge; values in ``override`` that are None leave ``base`` as it is."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


# ----------------------------------------------------------------------------- training
NUM_WORKERS_HELP = ("DataLoader processes [on CPUs only none: the data is read in the main process, "
                    "beside MXNet's synchronous engine; else half the usable CPUs, 1 to 4].")


def _flag(default=None, help="", choices=None, factory=None, metavar=None):
    """A TrainConfig field that is also a ``gluondet train`` flag (``--name-with-dashes``): its help
    and, for a choice, the allowed values. The flag's type is the field's annotation, its default
    the field's (shown in --help as what a run uses unless the model YAML says otherwise)."""
    metadata = {"help": help, "choices": tuple(choices) if choices else None, "metavar": metavar}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything a training run needs, resolved as: these defaults < model YAML ``train:`` < flags.

    The fields made with ``_flag`` are ``gluondet train``'s flags, in this order in its --help
    (cli/train.py builds them from here); the others have flags of their own there.
    ``pretrained_base`` is True, False or a path to the backbone's .params.
    """

    dataset: Optional[str] = None
    model: str = "ssd_512_vgg16_atrous"
    ctx: str = _flag("cpu", "Devices: cpu, cpuN, gpuN or a comma list such as gpu0,gpu1; the batch is split "
                            "across them.", metavar="DEVICES")
    batch_size: int = _flag(8, "Images per iteration over all devices.")
    epochs: int = _flag(24, "Epochs to train (with --resume: the new total).")
    lr: float = _flag(0.001, "Base learning rate.")
    lr_mode: str = _flag("step", "Schedule after the warm-up: step (times --lr-decay at --lr-steps or every "
                                 "--lr-step-every epochs), or cosine or poly (annealed per iteration to 0 at the "
                                 "run's last iteration, as GluonCV's LRScheduler).", choices=LR_MODES)
    lr_power: float = _flag(2.0, "Exponent of --lr-mode poly (GluonCV's default 2).")
    lr_steps: List[int] = _flag(help="Epochs (0-based, comma list such as 60,80) where lr is multiplied by "
                                     "--lr-decay.", factory=list)
    lr_step_every: int = _flag(0, "Multiply lr by --lr-decay every N epochs (instead of --lr-steps).")
    lr_decay: float = _flag(0.1, "Factor applied at each --lr-steps epoch.")
    warmup_epochs: float = _flag(0.0, "Linear lr warm-up over this many epochs, per iteration.")
    wd: float = _flag(0.0005, "Weight decay.")
    momentum: float = _flag(0.9, "SGD momentum.")
    optimizer: str = _flag("sgd", "SGD with --momentum, or Adam (GluonCV's CenterNet recipe).", choices=OPTIMIZERS)
    clip_gradient: Optional[float] = _flag(None, "Clip each gradient element to [-C, C].")
    clip_grad_norm: Optional[float] = _flag(None, "Scale each step's gradient down to a global L2 norm of at "
                                                  "most C (detectron2's R-CNN clipping).")
    on_diverge: str = _flag("rollback", "When the loss keeps exploding (steps far above their recent level are "
                                        "never applied): roll back to the last committed epoch with the lr "
                                        "halved, stop, or warn and go on.", choices=ON_DIVERGE)
    max_rollbacks: int = _flag(MAX_ROLLBACKS, "Rollbacks before a diverging run stops.")
    augment: str = _flag("ssd", "SSD training augmentation: GluonCV's (colour, expand, crop, flip) or resize "
                                "+ flip only.", choices=AUGMENTATIONS)
    model_options: Dict[str, Any] = field(default_factory=dict)  # the family's switches, over the YAML's options:
    num_workers: Optional[int] = _flag(None, NUM_WORKERS_HELP)
    data_shape: Optional[int] = _flag(None, "Input size in pixels (SSD: square side; Faster R-CNN: shorter "
                                            "side).")
    val_interval: int = _flag(1, "Validate every N epochs (and after the last).")
    log_every: int = _flag(0, "Also write the losses (mean over N iterations) and lr to TensorBoard every N "
                              "iterations (0: per epoch only).")
    save_interval: int = _flag(10, "Also keep epoch_XXXX.params every N epochs, 0 for never.")
    out: Optional[str] = None
    resume: Optional[str] = None
    seed: int = _flag(233, "Random seed; the same seed gives the same run, resumed or not.")
    patience: int = _flag(0, "Stop when N validations in a row did not improve the best mAP (0: never).")
    train_split: str = _flag("train", "Split (role or spec) to train on.")
    val_split: str = _flag("val", "Split to validate on.")
    max_iters: Optional[int] = _flag(None, "At most N iterations per epoch (short smoke runs).")
    kvstore: str = _flag("device", "Gradient aggregation; dist_* for multi-machine jobs on MXNet's parameter "
                                   "server (gluondet launch); horovod for processes started by horovodrun, "
                                   "one per device (--ctx gpu: each takes gpu<local rank>), --batch-size per "
                                   "process and --lr for the whole job's batch (README: Horovod).",
                         choices=KVSTORES)
    watchdog_timeout: float = _flag(300.0, "Horovod: stop the job, naming the rank, when one stops answering "
                                           "or is stuck this many seconds while the others wait.")
    metric: str = _flag("voc", "Validation metric that picks best.params: VOC area mAP, VOC2007 11-point, or "
                               "COCO; mask models: COCO mask AP (coco_segm) or box AP (coco_bbox), both in "
                               "metrics.csv.", choices=METRICS)
    pretrained_base: Any = True
    init_from: Optional[str] = None
    skip_bad: bool = False
    amp: bool = False  # mixed precision: bfloat16 on CPUs with bf16 instructions, float16 on GPUs
    config_dir: Optional[str] = None
    quiet: bool = False

    # How resolve_train_config arrived at values the user did not give (lines for the start-up
    # message); not a field: a run folder's config.yaml holds the values themselves.
    notes = ()

    def to_dict(self):
        return dataclasses.asdict(self)


TRAIN_METRICS = METRICS


def flag_fields():
    """TrainConfig's fields that are ``gluondet train`` flags (made with ``_flag``), in order."""
    return [f for f in dataclasses.fields(TrainConfig) if "help" in f.metadata]


def parse_lr_steps(value, where="--lr-steps"):
    """``"60,80"``, ``[60, 80]`` or ``60`` -> sorted [60, 80]."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", "").split(",") if p]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [value]
    try:
        steps = [int(float(p)) for p in parts]
    except (TypeError, ValueError):
        raise GluondetError(f"{where}: '{value}' is not a comma list of epochs such as 60,80") from None
    return sorted(steps)


def parse_model_options(value, where):
    """A mapping of model options from a YAML mapping or ``KEY=VALUE`` flags (values read as YAML:
    ``mixup=false``, ``no_mixup_epochs=20``)."""
    if isinstance(value, dict):
        return dict(value)
    options = {}
    for item in [value] if isinstance(value, str) else value:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise GluondetError(f"--model-option {item}: not KEY=VALUE (e.g. mixup=false)")
        options[key.strip()] = yaml.safe_load(text) if text.strip() else None
    return options


def field_type(name):
    """The type TrainConfig's annotation states for field ``name`` (``Optional[int]``: int), or None
    for a field of mixed or container type."""
    import typing

    hint = typing.get_type_hints(TrainConfig)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    hint = args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint
    return hint if hint in (bool, int, float, str) else None


def _coerce(name, value, where):
    """Convert a YAML/flag value to the type of TrainConfig field ``name``."""
    if value is None:
        return None
    if name == "lr_steps":
        return parse_lr_steps(value, where)
    if name == "model_options":
        return parse_model_options(value, where)
    if name == "pretrained_base":
        if isinstance(value, bool) or value in ("true", "false"):
            return value if isinstance(value, bool) else value == "true"
        return str(value)
    kind = field_type(name)
    if kind is bool:
        if not isinstance(value, bool):
            raise GluondetError(f"{where}: '{name}' must be true or false, got {value!r}")
        return value
    if kind in (int, float):
        try:
            converted = kind(value)
        except (TypeError, ValueError):
            raise GluondetError(f"{where}: '{name}' must be a number, got {value!r}") from None
        if kind is int and converted != float(value):
            raise GluondetError(f"{where}: '{name}' must be a whole number, got {value!r}")
        return converted
    return str(value) if kind is str else value


def resolve_train_config(model_cfg, flags, base=None):
    """A TrainConfig from ``base`` (defaults, or a resumed run's config) < model YAML ``train:`` < flags.

    ``flags`` maps TrainConfig field names to values; None means "not given". Unknown keys in the
    model YAML's ``train:`` section are an error naming the file, so a typo never goes unnoticed.
    """
    where = model_cfg.get("source") or f"model '{model_cfg.get('name')}'"
    known = set(TrainConfig.__dataclass_fields__)
    values = dataclasses.asdict(base) if base is not None else dataclasses.asdict(TrainConfig())
    if base is None:
        yaml_train = model_cfg.get("train") or {}
        if not isinstance(yaml_train, dict):
            raise GluondetError(f"{where}: 'train' must be a mapping of training defaults")
        unknown = sorted(set(yaml_train) - known)
        if unknown:
            raise GluondetError(f"{where}: unknown train setting(s) {', '.join(unknown)}; "
                                f"known: {', '.join(sorted(known))}")
        for key, value in yaml_train.items():
            values[key] = _coerce(key, value, where)
    for key, value in flags.items():
        if key not in known:
            raise ValueError(f"not a TrainConfig field: {key}")  # a gluondet bug, not user input
        if value is not None:
            values[key] = _coerce(key, value, f"--{key.replace('_', '-')}")
    # one decay flag given replaces the other's value from the YAML (or the resumed run)
    if flags.get("lr_step_every") and flags.get("lr_steps") is None:
        values["lr_steps"] = []
    if flags.get("lr_steps") and flags.get("lr_step_every") is None:
        values["lr_step_every"] = 0
    # the YAML's (or resumed run's) decay epochs are for step mode: --lr-mode cosine|poly drops them
    # (decay flags given with it stay, and validation refuses the pair)
    if flags.get("lr_mode") not in (None, "step"):
        values["lr_steps"] = values["lr_steps"] if flags.get("lr_steps") else []
        values["lr_step_every"] = values["lr_step_every"] if flags.get("lr_step_every") else 0
    notes = _scale_schedule(values, model_cfg, flags) if base is None else []
    notes += _batch_per_device(values, flags)
    config = TrainConfig(**values)
    config.notes = notes
    validate_train_config(config)
    return config


def _scale_schedule(values, model_cfg, flags):
    """A model YAML's lr steps are written for its own epoch count: when --epochs changes it and
    neither --lr-steps nor --lr-step-every is given, the decays keep their fractions of the schedule
    (GluonCV's and detectron2's habit), rounded to whole epochs. Returns the start-up line."""
    yaml_train = model_cfg.get("train") or {}
    yaml_epochs = yaml_train.get("epochs")
    epochs = values["epochs"]
    if (flags.get("epochs") is None or flags.get("lr_steps") is not None or flags.get("lr_step_every")
            or not yaml_epochs or int(yaml_epochs) == epochs):
        return []
    ratio = epochs / int(yaml_epochs)
    where = f"the model YAML's for {yaml_epochs} epochs"
    if values["lr_steps"]:
        old = list(values["lr_steps"])
        # a decay at epoch 0 would lower the whole run's lr: steps stay in 1..epochs-1
        values["lr_steps"] = sorted({min(epochs - 1, max(1, int(round(step * ratio)))) for step in old}) \
            if epochs >= 2 else []
        return [f"lr steps {','.join(map(str, values['lr_steps'])) or 'none'}: {where} ({','.join(map(str, old))}) "
                f"scaled to --epochs {epochs}; --lr-steps sets them"]
    if values["lr_step_every"]:
        old = values["lr_step_every"]
        values["lr_step_every"] = max(1, int(round(old * ratio)))
        return [f"lr decay every {values['lr_step_every']} epochs: {where} (every {old}) scaled to "
                f"--epochs {epochs}; --lr-step-every sets it"]
    return []


def _batch_per_device(values, flags):
    """Without --batch-size, at least one image per device: the model YAML's batch (R-CNN: 1) is
    raised to the number of devices, as GluonCV's R-CNN scripts put one image on each."""

    devices = len(parse_ctx_spec(values["ctx"]))
    if flags.get("batch_size") is not None or values["batch_size"] >= devices:
        return []
    old, values["batch_size"] = values["batch_size"], devices
    return [f"batch size {devices}: one image per device (the configured {old} is fewer than the "
            f"{devices} devices of --ctx {values['ctx']}); --batch-size sets it"]


def validate_train_config(config):
    """Refuse values that cannot train, with the flag to fix."""

    for name, value in dataclasses.asdict(config).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise GluondetError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
    check_ranges(dataclasses.asdict(config))  # the numbers, in the one table every command uses
    checks = [(getattr(config, f.name) in f.metadata["choices"],
               f"--{f.name.replace('_', '-')} must be one of {', '.join(f.metadata['choices'])}")
              for f in flag_fields() if f.metadata["choices"]]
    checks += [
        (not (config.lr_step_every and config.lr_steps), "--lr-steps and --lr-step-every contradict each "
                                                          "other; give one"),
        (config.lr_mode == "step" or not (config.lr_steps or config.lr_step_every),
         f"--lr-mode {config.lr_mode} anneals the lr by itself: --lr-steps and --lr-step-every are for "
         f"--lr-mode step; give one or the other"),
        (not (config.clip_grad_norm and config.kvstore.startswith("dist")),
         "--clip-grad-norm needs the update on the workers; dist_* kvstores update on their servers"),
        # worker 0 alone validates, and the others could not know when it stopped: they would wait
        # for its next push for ever (Horovod hands the decision to every rank: engine/horovod.py)
        (not (config.patience and config.kvstore.startswith("dist")),
         "--patience stops on worker 0's validation, which dist_* workers cannot follow; leave it out, "
         "or train with --kvstore horovod"),
    ]
    for ok, message in checks:
        if not ok:
            raise GluondetError(message)

    devices = len(parse_ctx_spec(config.ctx))
    if config.batch_size < devices:  # a device without an image would have no gradient to give
        raise GluondetError(f"--batch-size {config.batch_size} is smaller than the {devices} devices of "
                            f"--ctx {config.ctx}: every device needs at least one image per step; "
                            f"use --batch-size {devices} or more")
    return config
