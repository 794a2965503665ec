"""Searches the CTKD loss weights with KerasTuner: flags -> configs -> tune_and_evaluate.

python apps/tune.py --flagfile=configs/cifar10.flags --tuner=bayesian --max_trials=12 --tune_epochs=15
"""

from absl import app, flags

from ctkd_tf import options
from ctkd_tf.tune import SearchConfig, tune_and_evaluate

import train_flags

# --help and --helpshort list the shared training flags too, not only this file's.
flags.adopt_module_key_flags(train_flags)
for _name in options.define_flags(SearchConfig):
    flags.declare_key_flag(_name)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    config = train_flags.config_from_flags()
    try:
        search = options.from_flags(SearchConfig)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    train_flags.write_flags(config.model_dir)
    with train_flags.exit_on_user_error():
        tune_and_evaluate(config, search)


if __name__ == "__main__":
    app.run(main)
