"""gluondet train's flags reach the engine: --find-lr runs the range test on the resolved config and
writes no run folder; the divergence flags land in the config the engine gets."""
from click.testing import CliRunner

from gluondet.cli import main


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
