"""gluondet detect (placeholder until implemented)."""
import click


@click.command(name="detect")
def detect():
    """Not implemented yet."""
    raise click.ClickException("not implemented yet")
