"""Options shared by several commands, defined once and stacked as decorators."""
import click

from ..config import NUM_WORKERS_HELP  # noqa: F401 (train's --num-workers help, for eval's)


def dataset_option(required=True, help_extra=""):
    return click.option(
        "--dataset", "-d", required=required, metavar="NAME|PATH",
        help="A dataset config name (configs/datasets/NAME.yaml, e.g. helmet_voc, shapes_voc), "
             "a VOC root folder, or a COCO instances .json file." + help_extra,
    )


config_dir_option = click.option(
    "--config-dir", type=click.Path(file_okay=False), envvar="GLUONDET_CONFIG_DIR",
    help="Extra folder with datasets/*.yaml and models/*.yaml, searched before the shipped configs "
         "[env: GLUONDET_CONFIG_DIR].",
)

ctx_option = click.option(
    "--ctx", default="cpu", show_default=True, metavar="DEVICES",
    help="Devices: cpu, cpuN, gpuN or a comma list such as gpu0,gpu1 (batches are split across them).",
)

def set_quiet(ctx, param, value):
    from ..progress import configure

    configure(quiet=value)
    return value


quiet_option = click.option(
    "--quiet", "-q", is_flag=True, callback=set_quiet,
    help="No progress bars or progress lines (on a terminal: bars; in a log: one line per phase).",
)

def json_option(what):
    """``--json [FILE]``, the same in every command: write ``what`` as JSON to FILE; ``-`` or no
    FILE prints it on stdout in place of the text output."""
    return click.option(
        "--json", "json_file", metavar="FILE", is_flag=False, flag_value="-", default=None,
        help=f"Write {what} as JSON to FILE; '--json' alone or '--json -' prints it on stdout instead "
             "of the text output.")


def emit_json(json_file, doc):
    """Write ``doc`` to ``json_file`` (atomically) or, for ``-``, print it on stdout."""
    import json

    from ..fileio import atomic_write_text

    text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    if json_file == "-":
        click.echo(text, nl=False)
    else:
        atomic_write_text(json_file, text)


def deprecated(old, new):
    """One line on stderr: an old option spelling still works, and what to write instead."""
    click.echo(f"note: {old} is deprecated; use {new}", err=True)

skip_bad_option = click.option(
    "--skip-bad", is_flag=True,
    help="Leave out files the dataset check finds errors in (says how many) instead of stopping.",
)

dtype_option = click.option(
    "--dtype", default="float32", show_default=True, type=click.Choice(["float32", "bfloat16", "float16"]),
    help="Number type of the network's convolutions and dense layers: bfloat16 on CPUs with bf16 "
         "instructions (avx512_bf16/AMX), float16 on GPUs; the weights stay float32.",
)


def which_option(help_extra=""):
    return click.option("--which", default="best", show_default=True, metavar="best|last|EPOCH",
                        help="Which weights of the run folder." + help_extra)


def _thresh_value(ctx, param, value):
    """--thresh: a score (its range is checked with the others, ranges.py), or 'best' (read from
    the run's evaluation once it is known)."""
    if str(value).lower() == "best":
        return "best"
    try:
        score = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a score in [0, 1] nor 'best'") from None
    return score


def box_options(keep, best_extra=""):
    """--thresh and --max-boxes: which of a detector's boxes ``keep`` ("Keep boxes") names."""
    def stack(fn):
        fn = click.option("--max-boxes", default=100, show_default=True, type=int,
                          help="At most this many boxes per image (highest scores).")(fn)
        return click.option("--thresh", default="0.5", show_default=True, metavar="SCORE|best",
                            callback=_thresh_value,
                            help=f"{keep} scoring at least this; 'best': the F1-best threshold gluondet "
                                 f"eval found for these weights of the run{best_extra}.")(fn)
    return stack
