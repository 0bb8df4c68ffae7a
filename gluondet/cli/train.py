"""gluondet train (placeholder until implemented)."""
import click


@click.command(name="train")
def train():
    """Not implemented yet."""
    raise click.ClickException("not implemented yet")
