"""gluondet launch (placeholder until implemented)."""
import click


@click.command(name="launch")
def launch():
    """Not implemented yet."""
    raise click.ClickException("not implemented yet")
