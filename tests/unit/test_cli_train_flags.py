"""gluondet train's flags reach the engine: --find-lr runs the range test on the resolved config and
writes no run folder; the divergence flags land in the config the engine gets."""
import dataclasses

from click.testing import CliRunner

from gluondet.cli import main
from gluondet.config import field_type, flag_fields


def _invoke(args, monkeypatch, tmp_path, target):
    """Run ``gluondet train ARGS`` with ``target`` ("lr_find" or "train") replaced by a recorder (the
    dataset is never read: the recorder stands where reading starts)."""
    import gluondet.engine.lr_find as lr_find
    import gluondet.engine.train as engine

    seen = {}
    if target == "lr_find":
        monkeypatch.setattr(lr_find, "find_lr", lambda config: seen.setdefault("config", config))
        monkeypatch.setattr(lr_find, "say_result", lambda result: seen.setdefault("said", result))
    else:
        run = type("Run", (), {"path": tmp_path / "run"})  # what the CLI prints of the run folder
        monkeypatch.setattr(engine, "train", lambda config: seen.update(config=config) or run)
    monkeypatch.chdir(tmp_path)
    result = CliRunner(mix_stderr=False).invoke(main, ["train", *args])
    assert result.exit_code == 0, result.stderr
    return seen


def test_find_lr_runs_the_range_test_instead_of_training(monkeypatch, tmp_path):
    seen = _invoke(["--dataset", "shapes_voc", "--model", "tiny_ssd", "--find-lr", "--lr", "0.01"],
                   monkeypatch, tmp_path, "lr_find")
    assert seen["config"].model == "tiny_ssd" and seen["config"].lr == 0.01
    assert seen["said"] is seen["config"]  # say_result got what find_lr returned
    assert not (tmp_path / "runs").exists()


def test_divergence_flags_reach_the_config(monkeypatch, tmp_path):
    seen = _invoke(["--dataset", "shapes_voc", "--model", "tiny_ssd", "--on-diverge", "stop", "--max-rollbacks", "2",
                    "--clip-grad-norm", "10", "--epochs", "40"], monkeypatch, tmp_path, "train")
    config = seen["config"]
    assert (config.on_diverge, config.max_rollbacks, config.clip_grad_norm) == ("stop", 2, 10.0)
    assert config.lr_steps == [30, 36]  # tiny_ssd.yaml's 15,18 of 20 epochs, scaled to 40


def test_lr_mode_and_power_reach_the_config_and_drop_the_yaml_steps(monkeypatch, tmp_path):
    seen = _invoke(["--dataset", "shapes_voc", "--model", "tiny_ssd", "--lr-mode", "poly", "--lr-power", "0.9",
                    "--epochs", "40"], monkeypatch, tmp_path, "train")
    config = seen["config"]
    assert (config.lr_mode, config.lr_power, config.lr_steps, config.lr_step_every) == ("poly", 0.9, [], 0)


def test_lr_steps_with_cosine_is_one_line(tmp_path):
    result = CliRunner(mix_stderr=False).invoke(main, ["train", "--dataset", "shapes_voc", "--model", "tiny_ssd",
                                                       "--lr-mode", "cosine", "--lr-steps", "10,15"])
    assert result.exit_code != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "gluondet: error: --lr-mode cosine anneals the lr by itself: --lr-steps and --lr-step-every are for --lr-mode step; "
        "give one or the other"]
    bad = CliRunner(mix_stderr=False).invoke(main, ["train", "--dataset", "shapes_voc", "--lr-mode", "linear"])
    assert bad.exit_code == 2 and "'linear' is not one of 'step', 'cosine', 'poly'" in bad.stderr


def test_train_help_states_the_value_a_run_uses_when_a_flag_is_left_out():
    from click.testing import CliRunner

    from gluondet.cli import main
    from gluondet.config import TrainConfig

    text = " ".join(CliRunner().invoke(main, ["train", "--help"], terminal_width=1000).output.split())
    options = [p.opts[0] for p in main.commands["train"].params if p.opts[0].startswith("--")]
    fields = TrainConfig.__dataclass_fields__
    for flag, field in (("--val-interval", "val_interval"), ("--seed", "seed"), ("--lr-mode", "lr_mode"),
                        ("--lr-decay", "lr_decay"), ("--epochs", "epochs")):
        start = text.index(flag + " ")
        end = text.index(options[options.index(flag) + 1] + " ", start)  # where the next option's help begins
        default = fields[field].default
        note = f"[{default:g}" if isinstance(default, float) else f"[{default}"
        assert note + ", or the model YAML's]" in text[start:end], flag
    assert "MISSING" not in text


def _another_value(field):
    """A valid value of a config flag other than its default, and how the config holds it."""
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    if field.metadata["choices"]:
        value = next(c for c in field.metadata["choices"] if c != default)
        return value, value
    if field.name == "lr_steps":
        return "3,1", [1, 3]
    if field.name == "ctx":
        return "cpu0,cpu1", "cpu0,cpu1"
    if isinstance(default, str):
        return default + "2", default + "2"
    kind = field_type(field.name)
    value = (default + 2 if default else 64) if kind is int else (default / 2 if default else 1.0)
    return str(value), value


def test_every_config_flag_is_an_option_of_its_fields_type_and_reaches_the_config(monkeypatch, tmp_path):
    # the flags are made from TrainConfig's fields (help, type, choices): each one, given alone with
    # a value other than its default, is the value the engine gets
    params = {p.name: p for p in main.commands["train"].params}
    for field in flag_fields():
        option = params[field.name]
        assert option.opts == ["--" + field.name.replace("_", "-")] and option.default is None
        assert option.help.startswith(field.metadata["help"]), field.name
        flag_value, held = _another_value(field)
        config = _invoke(["--dataset", "shapes_voc", "--model", "tiny_ssd", option.opts[0], flag_value],
                         monkeypatch, tmp_path, "train")["config"]
        assert getattr(config, field.name) == held, field.name
    # and the train options that are not config flags are the ones with rules of their own
    others = set(params) - {f.name for f in flag_fields()}
    assert others == {"dataset", "model", "model_options", "out", "resume", "quiet", "pretrained_base",
                      "no_pretrained_base", "init_from", "amp", "find_lr", "skip_bad", "config_dir"}
