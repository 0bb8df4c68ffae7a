"""The CLI as the integration tests drive it: in-process, stderr apart, a bug's traceback raised."""
from click.testing import CliRunner

from gluondet.cli import main

# a model config of the tiny SSD at 64 px, for tests that train it for a few steps
TINY_YAML = """\
family: ssd
builder: tiny_ssd
data_shape: 64
train: {batch_size: 4, lr: 0.02, warmup_epochs: 0, augment: flip}
"""


def invoke_cli(args, env=None):
    """``gluondet ARGS`` through click's CliRunner; an exception other than the CLI's own exit is
    raised (a bug in gluondet), so a test sees the traceback rather than an exit status."""
    result = CliRunner(mix_stderr=False).invoke(main, [str(a) for a in args], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def eval_json(run_dir, out, *extra):
    """``gluondet eval RUN_DIR --split val EXTRA --json OUT`` (no DataLoader processes): its JSON."""
    import json

    result = invoke_cli(["eval", run_dir, "--split", "val", *extra, "--json", out, "--num-workers", 0])
    assert result.exit_code == 0, result.stderr
    return json.loads(out.read_text())


def eval_on_devices(run_dir, ctx, tmp_path):
    """The last weights' val eval on ``ctx`` and on one CPU: {devices: its JSON}."""
    return {devices: eval_json(run_dir, tmp_path / f"ap-{devices}.json", "--which", "last", "--ctx", devices)
            for devices in dict.fromkeys([ctx, "cpu"])}
