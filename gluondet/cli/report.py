"""gluondet report: write RUN/report.html, one self-contained page about a run."""
import click


@click.command()
@click.argument("run", metavar="RUN_DIR", type=click.Path(exists=True, file_okay=False))
def report(run):
    """Write RUN_DIR/report.html from the run folder alone: config, training curves, and for each
    `gluondet eval` of the run its per-class table, PR / F1 / confusion / error pictures and the
    mosaics of the worst images. Pictures are embedded: open it anywhere, no network, no server.

    \b
    Example:
      gluondet eval runs/helmet_voc-ssd_512_vgg16_atrous --split val
      gluondet report runs/helmet_voc-ssd_512_vgg16_atrous
    """
    from ..eval.html_report import write_report

    path = write_report(run)
    click.echo(f"wrote {path}")
