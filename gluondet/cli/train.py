"""gluondet train: resolve the configuration, run the training engine, say where the run is."""
import dataclasses
import sys

import click

from ..config import field_type, flag_fields
from .options import config_dir_option, dataset_option, skip_bad_option


def _run_default(field):
    """`` [D, or the model YAML's]``: what a run uses when the flag is left out (TrainConfig's default
    unless the model YAML's ``train:`` sets the field); nothing for a field without a default."""
    default = field.default
    if default in (None, "", dataclasses.MISSING) or isinstance(default, (list, dict)):
        return ""
    shown = {True: "on", False: "off"}.get(default, default) if isinstance(default, bool) else default
    return f" [{shown:g}, or the model YAML's]" if isinstance(shown, float) else f" [{shown}, or the model YAML's]"


def _config_flag(field):
    """The ``gluondet train`` option of a TrainConfig field made with ``config._flag``: ``None`` when
    not given (the model YAML or TrainConfig decides); typed by the field's annotation (a list, such
    as --lr-steps, is given as text and parsed by the config)."""
    choices = field.metadata["choices"]
    kind = click.Choice(choices) if choices else (field_type(field.name) or str)
    return click.option("--" + field.name.replace("_", "-"), type=kind, default=None,
                        metavar=field.metadata["metavar"], help=field.metadata["help"] + _run_default(field))


def config_flags(fn):
    """Every config flag (config.flag_fields), in TrainConfig's order."""
    for field in reversed(flag_fields()):
        fn = _config_flag(field)(fn)
    return fn


@click.command(name="train")
@dataset_option(required=False, help_extra=" Not needed with --resume.")
@click.option("--model", "-m", default=None, metavar="NAME|FILE.yaml",
              help="Model config (configs/models/NAME.yaml) [default: ssd_512_vgg16_atrous].")
@config_flags
@click.option("--model-option", "model_options", multiple=True, metavar="KEY=VALUE",
              help="A switch of the model's family over its YAML's options: (repeatable), e.g. "
                   "YOLOv3's mixup=false or no_mixup_epochs=10; values are read as YAML.")
@click.option("--out", default=None, metavar="DIR",
              help="Folder to write into: the new run folder [runs/<dataset>-<model>, numbered when "
                   "taken; never overwritten].")
@click.option("--resume", default=None, metavar="RUN_DIR",
              help="Continue a run at its next epoch with its lr, optimizer state and best mAP.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or per-epoch lines (warnings and errors only).")
@click.option("--pretrained-base", default=None, metavar="PATH",
              help="The backbone's ImageNet weights as a local .params file (instead of downloading).")
@click.option("--no-pretrained-base", is_flag=True, help="Train the backbone from random weights.")
@click.option("--init-from", default=None, metavar="ZOO_NAME|PARAMS",
              help="Start from a whole trained detector (e.g. ssd_512_vgg16_atrous_voc or a run's "
                   ".params), keeping the weights of shared class names.")
@click.option("--amp/--no-amp", default=None,
              help="Mixed precision: bfloat16 on CPUs with bf16 instructions (avx512_bf16/AMX), float16 "
                   "with dynamic loss scaling on GPUs; weights stay float32 [off].")
@click.option("--find-lr", is_flag=True,
              help="Instead of training: an lr range test (a few hundred steps with the lr rising "
                   "exponentially) that draws loss against lr into lr_find.png and suggests --lr.")
@skip_bad_option
@config_dir_option
def train(dataset, model, resume, pretrained_base, no_pretrained_base, find_lr, **flags):
    """Train a detector on a dataset and write a run folder (weights, classes, config, metrics).

    \b
    Examples:
      gluondet train --dataset shapes_voc --model tiny_ssd
      gluondet train --dataset helmet_voc --ctx gpu0,gpu1 --batch-size 32
      gluondet train --resume runs/helmet_voc-ssd_512_vgg16_atrous --epochs 300
    """
    from ..config import resolve_model_config, resolve_train_config
    from ..engine.train import resume_config
    from ..errors import GluondetError
    from ..models import DEFAULT_MODEL

    if pretrained_base and no_pretrained_base:
        raise GluondetError("--pretrained-base and --no-pretrained-base contradict each other; use one")
    flags["pretrained_base"] = False if no_pretrained_base else pretrained_base
    flags["model_options"] = flags.get("model_options") or None  # none given: the YAML's (or the run's) stand
    for name in ("skip_bad", "quiet"):
        if flags.get(name) is False:
            flags[name] = None  # a flag not given must not override a resumed run's choice
    if resume:
        if dataset or model:
            raise GluondetError("--resume continues a run with its own dataset and model; "
                                "leave out --dataset and --model")
        config = resume_config(resume, flags)
    else:
        if not dataset:
            raise GluondetError("no dataset: use --dataset NAME|PATH (or --resume RUN_DIR)")
        model = model or DEFAULT_MODEL
        model_cfg = resolve_model_config(model, flags.get("config_dir"))
        config = resolve_train_config(model_cfg, dict(flags, dataset=dataset, model=model))

    from contextlib import nullcontext

    from ..engine.distributed import exit_on_failure
    from ..engine.train import TrainingStopped
    from ..engine.train import train as run_training
    from ..progress import configure as configure_progress

    configure_progress(quiet=bool(config.quiet))  # a resumed run keeps the --quiet it was started with
    if find_lr:
        from ..engine.lr_find import find_lr as range_test
        from ..engine.lr_find import say_result

        say_result(range_test(config))  # lr_find.png in the current folder; no run folder
        return
    # A failing dist worker or Horovod rank must exit at once: at shutdown MXNet (or Horovod) would
    # wait for its peers forever. A stop (Ctrl-C, SIGTERM) exits through it too, with its status.
    distributed = config.kvstore.startswith("dist") or config.kvstore == "horovod"
    with exit_on_failure() if distributed else nullcontext():
        try:
            run = run_training(config)
        except TrainingStopped as e:
            if e.run_dir:
                where = f"epoch {e.epoch}" + (f" at iteration {e.iteration}" if e.iteration is not None else "")
                click.echo(f"\n{e.reason}: stopped in {where}; everything done so far is saved in {e.run_dir}; "
                           f"continue with: gluondet train --resume {e.run_dir}", err=True)
            sys.exit(143 if e.reason == "SIGTERM" else 130)
    if run is not None:
        click.echo(f"run folder: {run.path}")
