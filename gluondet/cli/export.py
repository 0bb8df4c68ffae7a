"""gluondet export (placeholder until implemented)."""
import click


@click.command(name="export")
def export():
    """Not implemented yet."""
    raise click.ClickException("not implemented yet")
