"""gluondet data: dataset commands (synth, split, check, stats, convert). Placeholder until filled."""
import click


@click.group()
def data():
    """Make, split, check, describe and convert datasets."""
