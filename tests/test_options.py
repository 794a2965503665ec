"""Options defined once: the config's checks are the flags' checks; flags made from every field."""

import dataclasses
import re
import subprocess
import sys

import pytest
from absl import flags

from ctkd_tf import options
from ctkd_tf.config import TrainConfig
from ctkd_tf.tune import SearchConfig


def fresh_flags(config_class):
    flag_values = flags.FlagValues()
    names = options.define_flags(config_class, flag_values)
    return flag_values, names


@pytest.mark.parametrize("config_class", [TrainConfig, SearchConfig])
def test_every_field_is_a_flag_with_its_default_and_help(config_class):
    flag_values, names = fresh_flags(config_class)
    assert names == [field.name for field in dataclasses.fields(config_class)]
    flag_values(["app"])
    assert options.from_flags(config_class, flag_values) == config_class()
    for field in dataclasses.fields(config_class):
        assert flag_values[field.name].help.endswith(field.metadata["help"]) and field.metadata["help"]


@pytest.mark.parametrize(
    "field, value",
    [("hint_weight", -1.0), ("momentum", 1.0), ("lr_boundaries", (120, 60)), ("export", ("onnx",))],
)
def test_a_bad_value_gets_the_same_message_from_python_and_from_the_command_line(field, value):
    with pytest.raises(ValueError) as from_python:
        TrainConfig(**{field: value})
    flag_values, _ = fresh_flags(TrainConfig)
    text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    with pytest.raises(flags.IllegalFlagValueError) as from_flags:
        flag_values(["app", f"--{field}={text}"])
    assert str(from_python.value).split(" must be ")[1] in str(from_flags.value)


def test_flags_convert_lists_to_the_fields_types(tmp_path):
    flag_values, _ = fresh_flags(TrainConfig)
    flag_values(["app", "--lr_boundaries=3,7", "--export=", "--num_gpus=2"])
    config = options.from_flags(TrainConfig, flag_values)
    assert (config.lr_boundaries, config.export, config.num_gpus) == ((3, 7), (), 2)
    search_flags, _ = fresh_flags(SearchConfig)
    search_flags(["app", "--learning_rate_range=", "--hint_weight_range=0.01,0.5"])
    search = options.from_flags(SearchConfig, search_flags)
    assert search.learning_rate_range is None and search.hint_weight_range == (0.01, 0.5)


def test_a_flagfile_is_read_back_as_the_options_it_sets(tmp_path):
    path = tmp_path / "run.flags"
    path.write_text("# a comment\n--method=at\n--expert_kd_weight=1\n--lr_boundaries=5,9\n")
    assert options.read_flagfile(TrainConfig, str(path)) == dict(
        method="at", expert_kd_weight=1.0, lr_boundaries=(5, 9)
    )
    flag_values, _ = fresh_flags(TrainConfig)
    flag_values(["app", f"--flagfile={path}"])
    written = tmp_path / "written.flags"
    written.write_text(options.flagfile(TrainConfig, flag_values))
    assert options.from_flags(TrainConfig, flag_values) == TrainConfig(
        **options.read_flagfile(TrainConfig, str(written))
    )


def test_import_loads_neither_the_tuner_nor_tfds_until_used():
    code = (
        "import sys, ctkd_tf\n"
        "print('keras_tuner' in sys.modules, 'tensorflow_datasets' in sys.modules)\n"
        "ctkd_tf.CTKDHyperModel\n"
        "print('keras_tuner' in sys.modules, 'tensorflow_datasets' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False", "True", "True"]


@pytest.mark.parametrize(
    "name, bad, message",
    [
        ("kd_temperature", 0.0, "kd_temperature must be > 0, got 0.0"),
        ("hint_loss", "l1", "hint_loss must be one of mse, kl, got 'l1'"),
        ("expert_kd_weight", -1.0, "expert_kd_weight must be >= 0, got -1.0"),
    ],
)
def test_each_loss_option_has_one_definition_for_ctkd_the_config_the_flags_and_the_tuner(name, bad, message):
    import inspect

    import keras

    import ctkd_tf
    from ctkd_tf import loss_options, tune

    fields = {f.name: f for f in dataclasses.fields(loss_options.LossOptions)}
    train_fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    parameters = inspect.signature(ctkd_tf.CTKD).parameters
    for option in loss_options.CTKD_OPTIONS:
        # CTKD's default: the option's, or None for the weights whose default depends on the teachers.
        assert parameters[option].default in (fields[option].default, None), option
        assert train_fields[option].metadata == fields[option].metadata, option
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert set(loss_options.CTKD_OPTIONS) <= set(ctkd_tf.CTKD(student).get_config())
    assert set(tune.RANGES) - {"learning_rate"} <= set(fields)
    # One check: the same message from CTKD, the config and the flag.
    with pytest.raises(ValueError, match=re.escape(message)):
        ctkd_tf.CTKD(student, **{name: bad})
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**{name: bad})
    flag_values, _ = fresh_flags(TrainConfig)
    with pytest.raises(flags.Error):
        flag_values(["prog", f"--{name}={bad}"])


def test_an_empty_optional_flag_is_none():
    flag_values, _ = fresh_flags(TrainConfig)
    flag_values(["prog", "--student_init=imagenet", "--student_init=", "--data_dir="])
    config = options.from_flags(TrainConfig, flag_values)
    assert (config.student_init, config.data_dir) == (None, None)
