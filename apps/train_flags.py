"""The training flags, shared by apps/train.py and apps/tune.py: one per `TrainConfig` field."""

import contextlib
import os
import sys

from absl import app, flags, logging

from ctkd_tf import data, experts, options, resume
from ctkd_tf.config import TrainConfig

for _name in options.define_flags(TrainConfig):
    flags.declare_key_flag(_name)
# On the command line, a file that is not there is refused before any work.
flags.register_validator(
    "expert_weights",
    lambda value: value is None or value in experts.names() or os.path.isfile(value),
    message="--expert_weights must be an existing .keras file or a shipped expert: "
    + ", ".join(experts.names()),
)


def config_from_flags():
    """The run's `TrainConfig` from the flags, or a usage error naming the bad flag."""
    try:
        return options.from_flags(TrainConfig)
    except ValueError as error:
        raise app.UsageError(str(error)) from None


def write_flags(model_dir):
    """Writes the training flags into `model_dir/flags.txt`, itself a flagfile."""
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, "flags.txt")
    resume.atomic_write(path, options.flagfile(TrainConfig))
    logging.info("Flags written to %s", path)


@contextlib.contextmanager
def exit_on_user_error():
    """Ends the app with the message alone, no traceback, when a data set cannot be had or the
    expert fails its check before stage 2: the message says what to do."""
    try:
        yield
    except (data.DatasetUnavailableError, experts.ExpertCheckError) as error:
        sys.exit(f"Error: {error}")
