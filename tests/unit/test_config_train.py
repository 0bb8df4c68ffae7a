"""The training config: TrainConfig defaults < model YAML train: < flags, with typed checking."""
import pytest

from gluondet.config import TrainConfig, parse_lr_steps, resolve_model_config, resolve_train_config
from gluondet.errors import GluondetError

MODEL = {"name": "m", "family": "ssd", "data_shape": 300,
         "train": {"batch_size": 16, "lr": 0.002, "lr_steps": [10, 20], "warmup_epochs": 2}}


def test_yaml_overrides_defaults_and_flags_override_yaml():
    config = resolve_train_config(MODEL, {"lr": 0.01, "epochs": 3, "batch_size": None})
    assert config.lr == 0.01  # flag
    assert config.batch_size == 16 and config.lr_steps == [10, 20] and config.warmup_epochs == 2  # YAML
    assert config.epochs == 3
    assert config.momentum == TrainConfig().momentum  # default


def test_lr_steps_accept_a_comma_list_and_sort():
    assert parse_lr_steps("80, 60") == [60, 80]
    assert parse_lr_steps([5]) == [5] and parse_lr_steps(None) == [] and parse_lr_steps("") == []
    assert resolve_train_config(MODEL, {"lr_steps": "3,1"}).lr_steps == [1, 3]
    with pytest.raises(GluondetError, match="--lr-steps"):
        parse_lr_steps("60;80")


def test_unknown_yaml_train_key_names_the_model():
    bad = dict(MODEL, train={"learning_rate": 0.1})
    with pytest.raises(GluondetError, match="learning_rate"):
        resolve_train_config(bad, {})


def test_yaml_values_are_type_checked():
    with pytest.raises(GluondetError, match="batch_size"):
        resolve_train_config(dict(MODEL, train={"batch_size": "many"}), {})
    with pytest.raises(GluondetError, match="whole number"):
        resolve_train_config(dict(MODEL, train={"epochs": 2.5}), {})
    assert resolve_train_config(dict(MODEL, train={"lr": "1e-3"}), {}).lr == pytest.approx(1e-3)


@pytest.mark.parametrize("flags, message", [
    ({"lr": 0.0}, "--lr"), ({"batch_size": 0}, "--batch-size"), ({"lr_decay": 2.0}, "--lr-decay"),
    ({"metric": "map"}, "--metric"), ({"max_iters": 0}, "--max-iters"), ({"data_shape": 8}, "--data-shape"),
    ({"augment": "mosaic"}, "--augment"),
])
def test_values_that_cannot_train_are_refused(flags, message):
    with pytest.raises(GluondetError, match=message):
        resolve_train_config(MODEL, flags)


def test_a_base_config_replaces_the_yaml_for_resume():
    base = resolve_train_config(MODEL, {"lr": 0.5, "epochs": 4})
    again = resolve_train_config(dict(MODEL, train={"lr": 0.001}), {"epochs": 9}, base=base)
    assert again.lr == 0.5 and again.epochs == 9


def test_pretrained_base_is_bool_or_path():
    assert resolve_train_config(MODEL, {}).pretrained_base is True
    assert resolve_train_config(MODEL, {"pretrained_base": False}).pretrained_base is False
    assert resolve_train_config(MODEL, {"pretrained_base": "/w/vgg.params"}).pretrained_base == "/w/vgg.params"


@pytest.mark.parametrize("name", ["ssd_512_vgg16_atrous", "ssd_300_vgg16_atrous", "ssd_512_mobilenet1.0",
                                  "ssd_512_resnet50_v1", "faster_rcnn_resnet50_v1b",
                                  "faster_rcnn_resnet101_v1d"])
def test_shipped_model_yamls_resolve(name):
    from gluondet.families import family_name
    from gluondet.models import MODELS

    model_cfg = resolve_model_config(name)
    config = resolve_train_config(model_cfg, {})
    assert name in MODELS and model_cfg["builder"].endswith("_custom")
    assert family_name(model_cfg) == ("faster_rcnn" if name.startswith("faster") else "ssd")
    assert config.lr > 0 and config.lr_steps and config.clip_gradient
    # From scratch the SSDs need a warm-up (SSD512 at lr 0.001 went NaN within 10 iterations without).
    assert model_cfg["family"] == "faster_rcnn" or config.warmup_epochs > 0


def test_lr_step_every_replaces_the_yaml_steps_and_refuses_both_flags():
    from gluondet.errors import GluondetError

    model = {"name": "m", "train": {"lr_steps": [10, 20]}}
    config = resolve_train_config(model, {"lr_step_every": 8})
    assert config.lr_step_every == 8 and config.lr_steps == []
    assert resolve_train_config(model, {}).lr_step_every == 0
    with pytest.raises(GluondetError, match="contradict"):
        resolve_train_config(model, {"lr_step_every": 8, "lr_steps": "3,5"})
    with pytest.raises(GluondetError, match="--lr-step-every must be"):
        resolve_train_config({"name": "m"}, {"lr_step_every": -1})


SCHEDULED = dict(MODEL, train=dict(MODEL["train"], epochs=20, lr_steps=[15, 18]))


def test_lr_steps_keep_their_fractions_when_epochs_change():
    config = resolve_train_config(SCHEDULED, {"epochs": 200})
    assert config.lr_steps == [150, 180]
    assert config.notes == ["lr steps 150,180: the model YAML's for 20 epochs (15,18) scaled to --epochs 200; "
                            "--lr-steps sets them"]
    assert resolve_train_config(SCHEDULED, {"epochs": 4}).lr_steps == [3]  # 3.0 and 3.6: one decay left
    assert resolve_train_config(SCHEDULED, {"epochs": 2}).lr_steps == [1]  # never at epoch 0
    assert resolve_train_config(SCHEDULED, {}).lr_steps == [15, 18] and not resolve_train_config(SCHEDULED, {}).notes


def test_given_lr_steps_or_step_every_are_not_scaled():
    assert resolve_train_config(SCHEDULED, {"epochs": 200, "lr_steps": "15,18"}).lr_steps == [15, 18]
    config = resolve_train_config(SCHEDULED, {"epochs": 200, "lr_step_every": 30})
    assert (config.lr_steps, config.lr_step_every) == ([], 30)
    every = dict(MODEL, train={"epochs": 24, "lr_step_every": 8})
    scaled = resolve_train_config(every, {"epochs": 48})
    assert scaled.lr_step_every == 16 and "every 16 epochs" in scaled.notes[0]


def test_without_batch_size_every_device_gets_an_image():
    rcnn = {"name": "r", "family": "faster_rcnn", "train": {"batch_size": 1}}
    config = resolve_train_config(rcnn, {"ctx": "cpu0,cpu1"})
    assert config.batch_size == 2 and "one image per device" in config.notes[0]
    assert resolve_train_config(rcnn, {"ctx": "cpu0,cpu1,cpu2", "batch_size": 6}).batch_size == 6
    assert resolve_train_config(MODEL, {"ctx": "cpu0,cpu1"}).batch_size == 16  # already enough
    with pytest.raises(GluondetError, match="smaller than the 2 devices"):
        resolve_train_config(rcnn, {"ctx": "cpu0,cpu1", "batch_size": 1})  # said, so refused


def test_divergence_options_are_checked():
    assert resolve_train_config(MODEL, {}).on_diverge == "rollback"
    assert resolve_train_config(MODEL, {"clip_grad_norm": "10"}).clip_grad_norm == 10.0
    for flags, message in (({"on_diverge": "panic"}, "--on-diverge must be one of"),
                           ({"clip_grad_norm": 0}, "--clip-grad-norm must be positive"),
                           ({"max_rollbacks": -1}, "--max-rollbacks"),
                           ({"clip_grad_norm": 5, "kvstore": "dist_sync"}, "dist_")):
        with pytest.raises(GluondetError, match=message):
            resolve_train_config(MODEL, flags)


def test_a_one_epoch_run_keeps_no_scaled_step():
    assert resolve_train_config(SCHEDULED, {"epochs": 1}).lr_steps == []


def test_lr_mode_cosine_or_poly_drops_the_yaml_steps_and_refuses_given_ones():
    assert resolve_train_config(SCHEDULED, {}).lr_mode == "step"  # the default: nothing changes
    for mode in ("cosine", "poly"):
        config = resolve_train_config(SCHEDULED, {"lr_mode": mode, "epochs": 200})
        assert (config.lr_mode, config.lr_steps, config.lr_step_every) == (mode, [], 0)
        assert config.notes == []  # nothing to scale to --epochs, nothing said about steps
        for flags in ({"lr_steps": "3,5"}, {"lr_step_every": 4}):
            with pytest.raises(GluondetError, match=f"^--lr-mode {mode} anneals the lr by itself"):
                resolve_train_config(SCHEDULED, dict(flags, lr_mode=mode))
    with pytest.raises(GluondetError, match="--lr-mode must be one of step, cosine, poly"):
        resolve_train_config(MODEL, {"lr_mode": "linear"})
    # a model YAML that anneals: its own steps contradict it, --lr-mode step puts them back in use
    yaml_cosine = dict(MODEL, train={"lr_mode": "cosine", "lr_power": 0.9})
    assert resolve_train_config(yaml_cosine, {}).lr_power == 0.9
    assert resolve_train_config(yaml_cosine, {"lr_mode": "step", "lr_steps": "4"}).lr_steps == [4]
    with pytest.raises(GluondetError, match="anneals the lr by itself"):
        resolve_train_config(dict(MODEL, train={"lr_mode": "poly", "lr_steps": [3]}), {})


def test_lr_power_must_be_positive_and_resume_keeps_the_mode():
    assert TrainConfig().lr_power == 2.0  # GluonCV's LRScheduler default (and its detection scripts')
    for bad in (0, -1):
        with pytest.raises(GluondetError, match="--lr-power must be positive"):
            resolve_train_config(MODEL, {"lr_mode": "poly", "lr_power": bad})
    base = resolve_train_config(SCHEDULED, {"lr_mode": "poly", "lr_power": 0.9})
    again = resolve_train_config(SCHEDULED, {"epochs": 30}, base=base)
    assert (again.lr_mode, again.lr_power, again.lr_steps, again.epochs) == ("poly", 0.9, [], 30)
    old_run = {k: v for k, v in resolve_train_config(SCHEDULED, {}).to_dict().items()
               if k not in ("lr_mode", "lr_power")}  # a run folder written before --lr-mode existed
    resumed = resolve_train_config(SCHEDULED, {}, base=TrainConfig(**old_run))
    assert (resumed.lr_mode, resumed.lr_steps) == ("step", [15, 18])
    switched = resolve_train_config(SCHEDULED, {"lr_mode": "cosine"}, base=TrainConfig(**old_run))
    assert (switched.lr_mode, switched.lr_steps) == ("cosine", [])
