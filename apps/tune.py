"""Searches the CTKD loss weights with KerasTuner: flags -> configs -> tune_and_evaluate.

python apps/tune.py --flagfile=configs/cifar10.flags --tuner=bayesian --max_trials=12 --tune_epochs=15
"""

from absl import app, flags

from ctkd_tf.tune import TUNERS, SearchConfig, tune_and_evaluate

import train_flags

# --help and --helpshort list the shared training flags too, not only this file's.
flags.adopt_module_key_flags(train_flags)

_D = SearchConfig()

_TUNER = flags.DEFINE_enum("tuner", _D.tuner, list(TUNERS), "KerasTuner tuner.")
_MAX_TRIALS = flags.DEFINE_integer(
    "max_trials", _D.max_trials, "Trials in all (not for hyperband).", lower_bound=1
)
_TUNE_EPOCHS = flags.DEFINE_integer("tune_epochs", _D.tune_epochs, "Epochs per trial.", lower_bound=1)
_TUNE_SPLIT = flags.DEFINE_string("tune_split", _D.tune_split, "The trials' training split.")
_VAL_SPLIT = flags.DEFINE_string(
    "val_split", _D.val_split, "The trials' validation split, from the training set."
)
_HINT_RANGE = flags.DEFINE_list("hint_weight_range", [str(v) for v in _D.hint_weight_range], "min,max (log).")
_ATTENTION_RANGE = flags.DEFINE_list(
    "attention_weight_range", [str(v) for v in _D.attention_weight_range], "min,max (log)."
)
_TARGET = flags.DEFINE_bool(
    "tune_attention_target", _D.tune_attention_target, "Also search attention_target."
)
_T_RANGE = flags.DEFINE_list(
    "kd_temperature_range", [str(v) for v in _D.kd_temperature_range], "min,max (kd)."
)
_ALPHA_RANGE = flags.DEFINE_list("kd_alpha_range", [str(v) for v in _D.kd_alpha_range], "min,max (kd).")
_LR_RANGE = flags.DEFINE_list(
    "learning_rate_range", [], "min,max (log) to search the rate too; empty: fixed."
)
_FINAL = flags.DEFINE_bool("final_train", _D.final_train, "Retrain with the best values on the full data.")


def _range(values):
    return tuple(float(v) for v in values) if values else None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    config = train_flags.config_from_flags()
    try:
        search = SearchConfig(
            tuner=_TUNER.value,
            max_trials=_MAX_TRIALS.value,
            tune_epochs=_TUNE_EPOCHS.value,
            tune_split=_TUNE_SPLIT.value,
            val_split=_VAL_SPLIT.value,
            hint_weight_range=_range(_HINT_RANGE.value),
            attention_weight_range=_range(_ATTENTION_RANGE.value),
            tune_attention_target=_TARGET.value,
            kd_temperature_range=_range(_T_RANGE.value),
            kd_alpha_range=_range(_ALPHA_RANGE.value),
            learning_rate_range=_range(_LR_RANGE.value),
            final_train=_FINAL.value,
        )
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    train_flags.write_flags(config.model_dir)
    with train_flags.exit_when_data_unavailable():
        tune_and_evaluate(config, search)


if __name__ == "__main__":
    app.run(main)
