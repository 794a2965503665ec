"""The training flags, shared by apps/train.py and apps/tune.py, and their TrainConfig."""

import contextlib
import dataclasses
import os
import sys

from absl import app, flags, logging

from ctkd_tf import data, distribute, experts, export, models
from ctkd_tf.ctkd import ATTENTION_TARGETS, HINT_LOSSES
from ctkd_tf.train import LR_SCHEDULES, METHODS, PRECISIONS, TrainConfig

_D = TrainConfig()  # the defaults: the reference CIFAR recipe

_DATASET = flags.DEFINE_enum("dataset", _D.dataset, list(data.RECIPES), "Data set.")
_DATA_DIR = flags.DEFINE_string("data_dir", _D.data_dir, "TFDS data dir; for image_folder, the images' root.")
_TRAIN_SPLIT = flags.DEFINE_string("train_split", _D.train_split, "Training split (TFDS syntax).")
_EVAL_SPLIT = flags.DEFINE_string("eval_split", _D.eval_split, "Evaluation split (TFDS syntax).")
_METHOD = flags.DEFINE_enum("method", _D.method, list(METHODS), "ctkd, or a baseline: student, kd, at, rl.")
_STUDENT = flags.DEFINE_enum("student", _D.student, models.names(), "Student network.")
_SCRATCH = flags.DEFINE_enum("scratch_teacher", _D.scratch_teacher, models.names(), "Scratch teacher.")
_EXPERT = flags.DEFINE_enum("expert", _D.expert, models.names(), "Expert network (trained if not given).")
_EXPERT_WEIGHTS = flags.DEFINE_string(
    "expert_weights", _D.expert_weights, "A trained expert: a .keras file or a shipped expert's name."
)
_TARGET = flags.DEFINE_enum(
    "attention_target",
    _D.attention_target,
    list(ATTENTION_TARGETS),
    "Network(s) the expert's attention guides: student (the paper), scratch (the reference code), both.",
)
_HINT = flags.DEFINE_float("hint_weight", _D.hint_weight, "Weight of the hint.", lower_bound=0)
_ATTENTION = flags.DEFINE_float("attention_weight", _D.attention_weight, "Attention weight.", lower_bound=0)
_HINT_WARMUP = flags.DEFINE_integer(
    "hint_warmup_epochs",
    _D.hint_warmup_epochs,
    "Ramp the hint weight up from 0 over these epochs.",
    lower_bound=0,
)
_HINT_LOSS = flags.DEFINE_enum(
    "hint_loss", _D.hint_loss, list(HINT_LOSSES), "mse: the paper's squared logit difference; kl: T^2 KL."
)
_HINT_T = flags.DEFINE_float(
    "hint_temperature", _D.hint_temperature, "Softmax temperature of --hint_loss=kl.", lower_bound=1e-6
)
_EXPERT_KD = flags.DEFINE_float(
    "expert_kd_weight",
    _D.expert_kd_weight,
    "CTKD/AT: weight of an extra KD term from the expert's logits (at --kd_temperature); 0: the paper.",
    lower_bound=0,
)
_SCRATCH_KD = flags.DEFINE_float(
    "scratch_kd_weight",
    _D.scratch_kd_weight,
    "CTKD: weight of a KD term from the expert's logits into the scratch teacher; 0: the paper.",
    lower_bound=0,
)
_HINT_WHEN_CORRECT = flags.DEFINE_bool(
    "hint_when_correct",
    _D.hint_when_correct,
    "The hint only on examples the scratch teacher gets right; off: the paper.",
)
_KD_T = flags.DEFINE_float("kd_temperature", _D.kd_temperature, "KD softmax temperature.", lower_bound=1e-6)
_KD_ALPHA = flags.DEFINE_float("kd_alpha", _D.kd_alpha, "KD term weight.", lower_bound=0, upper_bound=1)
_EPOCHS = flags.DEFINE_integer("epochs", _D.epochs, "Training epochs.", lower_bound=1)
_EXPERT_EPOCHS = flags.DEFINE_integer("expert_epochs", _D.expert_epochs, "Expert epochs.", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch_size", _D.batch_size, "Global batch size.", lower_bound=1)
_LR = flags.DEFINE_float("learning_rate", _D.learning_rate, "Initial learning rate.", lower_bound=1e-12)
_SCHEDULE = flags.DEFINE_enum(
    "lr_schedule", _D.lr_schedule, list(LR_SCHEDULES), "step: x lr_decay at lr_boundaries; cosine: to 0."
)
_BOUNDARIES = flags.DEFINE_list(
    "lr_boundaries", [str(b) for b in _D.lr_boundaries], "Epochs at which the rate is multiplied by lr_decay."
)
_DECAY = flags.DEFINE_float(
    "lr_decay", _D.lr_decay, "Learning-rate factor at each boundary.", lower_bound=1e-12
)
_MOMENTUM = flags.DEFINE_float("momentum", _D.momentum, "SGD momentum.", lower_bound=0, upper_bound=0.999)
_WD = flags.DEFINE_float("weight_decay", _D.weight_decay, "PyTorch-style weight decay (L2).", lower_bound=0)
_MODEL_DIR = flags.DEFINE_string("model_dir", _D.model_dir, "Where everything of the run goes.")
_SEED = flags.DEFINE_integer("seed", _D.seed, "Seed of initialisation, shuffling and augmentation.")
_DETERMINISTIC = flags.DEFINE_bool(
    "deterministic",
    _D.deterministic,
    "Bit-identical reruns: deterministic ops, gradient sums in a fixed order.",
)
_STRATEGY = flags.DEFINE_enum("strategy", _D.strategy, list(distribute.STRATEGIES), "tf.distribute strategy.")
_NUM_GPUS = flags.DEFINE_integer("num_gpus", _D.num_gpus, "Use at most this many GPUs.", lower_bound=0)
_SYNC_BN = flags.DEFINE_bool(
    "sync_batchnorm", _D.sync_batchnorm, "Batch-norm statistics synced across replicas."
)
_PRECISION = flags.DEFINE_enum(
    "mixed_precision", _D.mixed_precision, list(PRECISIONS), "Keras dtype policy; losses stay float32."
)
_JIT = flags.DEFINE_bool("jit_compile", _D.jit_compile, "Compile the training step with XLA.")
_STEPS_PER_EXECUTION = flags.DEFINE_integer(
    "steps_per_execution", _D.steps_per_execution, "Training steps per tf.function call.", lower_bound=1
)
_EXPORT = flags.DEFINE_list(
    "export", list(_D.export), f"Student exports: {', '.join(export.EXPORT_FORMATS)}."
)
_QUANTIZE = flags.DEFINE_bool("tflite_quantize", _D.tflite_quantize, "Also an int8 TFLite student.")
_VALIDATE = flags.DEFINE_bool(
    "validate_every_epoch",
    _D.validate_every_epoch,
    "Score --eval_split after every epoch (log.csv, TensorBoard); --novalidate_every_epoch scores it "
    "once, after the last epoch, and saves that time.",
)
_CHECKPOINT_STEPS = flags.DEFINE_integer(
    "checkpoint_steps",
    _D.checkpoint_steps,
    "Also checkpoint every this many training steps within an epoch (0: at epochs' ends only); "
    "a run stopped in the middle of an epoch resumes at the step after its last checkpoint.",
    lower_bound=0,
)
_VERBOSE = flags.DEFINE_integer("verbose", _D.verbose, "0 silent, 1 progress bars, 2 a line per epoch.")

flags.register_validator(
    "lr_boundaries",
    lambda values: (
        all(v.isdigit() for v in values) and [int(v) for v in values] == sorted({int(v) for v in values})
    ),
    message="--lr_boundaries must be strictly increasing whole epochs, e.g. 60,120,160.",
)
flags.register_validator(
    "export",
    lambda values: set(values) <= set(export.EXPORT_FORMATS),
    message=f"--export takes a comma-separated subset of {', '.join(export.EXPORT_FORMATS)}.",
)
flags.register_validator(
    "expert_weights",
    lambda value: value is None or value in experts.names() or os.path.isfile(value),
    message="--expert_weights must be an existing .keras file or a shipped expert: "
    + ", ".join(experts.names()),
)


def config_from_flags():
    """The run's `TrainConfig` from the flags, or a usage error naming the bad flag."""
    values = {field.name: flags.FLAGS[field.name].value for field in dataclasses.fields(TrainConfig)}
    values["lr_boundaries"] = tuple(int(b) for b in values["lr_boundaries"])
    values["export"] = tuple(values["export"])
    try:
        return TrainConfig(**values)
    except ValueError as error:
        raise app.UsageError(str(error)) from None


def write_flags(model_dir):
    """Writes the training flags into `model_dir/flags.txt`, itself a flagfile."""
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, "flags.txt")
    with open(path, "w") as file:
        for field in dataclasses.fields(TrainConfig):
            serialized = flags.FLAGS[field.name].serialize()
            if serialized:
                file.write(serialized + "\n")
    logging.info("Flags written to %s", path)


@contextlib.contextmanager
def exit_when_data_unavailable():
    """Ends the app with the message alone, no traceback, when a data set cannot be had."""
    try:
        yield
    except data.DatasetUnavailableError as error:
        sys.exit(f"Error: {error}")
