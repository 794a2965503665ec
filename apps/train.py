"""Trains a student with CTKD or one of its baselines: flags -> TrainConfig -> train_and_evaluate.

python apps/train.py --flagfile=configs/cifar10.flags
"""

from absl import app, flags

from ctkd_tf.train import train_and_evaluate

import train_flags

# --help and --helpshort list the shared training flags too, not only this file's.
flags.adopt_module_key_flags(train_flags)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    config = train_flags.config_from_flags()
    train_flags.write_flags(config.model_dir)
    with train_flags.exit_on_user_error():
        train_and_evaluate(config)


if __name__ == "__main__":
    app.run(main)
