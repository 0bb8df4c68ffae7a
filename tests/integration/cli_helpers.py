"""The CLI as the integration tests drive it: in-process, stderr apart, a bug's traceback raised."""
from click.testing import CliRunner

from gluondet.cli import main


def invoke_cli(args, env=None):
    """``gluondet ARGS`` through click's CliRunner; an exception other than the CLI's own exit is
    raised (a bug in gluondet), so a test sees the traceback rather than an exit status."""
    result = CliRunner(mix_stderr=False).invoke(main, [str(a) for a in args], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result
