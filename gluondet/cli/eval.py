"""gluondet eval (placeholder until implemented)."""
import click


@click.command(name="eval")
def eval_cmd():
    """Not implemented yet."""
    raise click.ClickException("not implemented yet")
