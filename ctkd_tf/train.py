"""The training pipeline: train (or load) the expert, then the chosen method; outputs in model_dir."""

import contextlib
import csv
import dataclasses
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from ctkd_tf import callbacks as ctkd_callbacks
from ctkd_tf import data, distribute, experts, export, kernels, models
from ctkd_tf.ctkd import ATTENTION_TARGETS, CTKD, HINT_LOSSES
from ctkd_tf.distiller import hinton_kd

# The method doc's comparison: which teachers each method uses (scratch, expert).
TEACHERS = {
    "ctkd": (True, True),
    "student": (False, False),
    "kd": (False, True),
    "at": (False, True),
    "rl": (True, False),
}
METHODS = tuple(TEACHERS)
LR_SCHEDULES = ("step", "cosine")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
ATTENTION_IMAGES = 8  # fixed evaluation images whose attention maps go to TensorBoard


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; the defaults are the reference CIFAR recipe (the paper's).

    Attributes mirror the flags of `apps/train.py` (see `--helpfull`). A loss option of a
    teacher the method does not have is not used, so one recipe serves every method: the
    hint's options (`hint_when_correct` too) need the scratch teacher (ctkd, rl);
    `attention_weight` and `expert_kd_weight` the expert (ctkd, at; kd has `kd_alpha`);
    `attention_target` and `scratch_kd_weight` are CTKD's choices (AT guides its only
    trained network, the student).
    """

    dataset: str = "cifar10"
    data_dir: str | None = None
    train_split: str = "train"
    eval_split: str = "test"
    method: str = "ctkd"
    student: str = "wrn16_1"
    scratch_teacher: str = "wrn40_1"
    expert: str = "wrn40_1"
    expert_weights: str | None = None
    attention_target: str = "student"
    hint_weight: float = 0.03
    attention_weight: float = 1000.0
    hint_warmup_epochs: int = 0
    hint_loss: str = "mse"
    hint_temperature: float = 4.0
    expert_kd_weight: float = 0.0
    kd_temperature: float = 4.0
    scratch_kd_weight: float = 0.0
    hint_when_correct: bool = False
    kd_alpha: float = 0.9
    epochs: int = 200
    expert_epochs: int = 200
    batch_size: int = 128
    learning_rate: float = 0.1
    lr_schedule: str = "step"
    lr_boundaries: tuple = (60, 120, 160)
    lr_decay: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    model_dir: str = "runs/cifar10_ctkd"
    seed: int = 0
    deterministic: bool = False
    strategy: str = "auto"
    num_gpus: int | None = None
    sync_batchnorm: bool = False
    mixed_precision: str = "float32"
    jit_compile: bool = False
    steps_per_execution: int = 1
    export: tuple = ()
    tflite_quantize: bool = False
    validate_every_epoch: bool = True
    checkpoint_steps: int = 100
    verbose: int = 1

    def __post_init__(self):
        checks = [
            ("method", self.method in METHODS, f"one of {', '.join(METHODS)}"),
            ("dataset", self.dataset in data.RECIPES, f"one of {', '.join(data.RECIPES)}"),
            (
                "attention_target",
                self.attention_target in ATTENTION_TARGETS,
                f"one of {', '.join(ATTENTION_TARGETS)}",
            ),
            ("hint_loss", self.hint_loss in HINT_LOSSES, f"one of {', '.join(HINT_LOSSES)}"),
            ("hint_temperature", self.hint_temperature > 0, "> 0"),
            ("expert_kd_weight", self.expert_kd_weight >= 0, ">= 0"),
            ("scratch_kd_weight", self.scratch_kd_weight >= 0, ">= 0"),
            (
                "strategy",
                self.strategy in distribute.STRATEGIES,
                f"one of {', '.join(distribute.STRATEGIES)}",
            ),
            (
                "strategy",
                not (self.method == "kd" and self.strategy == "multi_worker"),
                "not multi_worker with --method=kd: Keras's Distiller does not run under "
                "MultiWorkerMirroredStrategy (keras-team/keras#20585)",
            ),
            ("mixed_precision", self.mixed_precision in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
            ("steps_per_execution", self.steps_per_execution >= 1, ">= 1"),
            ("checkpoint_steps", self.checkpoint_steps >= 0, ">= 0"),
            ("epochs", self.epochs >= 1, ">= 1"),
            ("expert_epochs", self.expert_epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("learning_rate", self.learning_rate > 0, "> 0"),
            ("lr_decay", self.lr_decay > 0, "> 0"),
            ("lr_schedule", self.lr_schedule in LR_SCHEDULES, f"one of {', '.join(LR_SCHEDULES)}"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("hint_weight", self.hint_weight >= 0, ">= 0"),
            ("attention_weight", self.attention_weight >= 0, ">= 0"),
            ("hint_warmup_epochs", self.hint_warmup_epochs >= 0, ">= 0"),
            ("kd_temperature", self.kd_temperature > 0, "> 0"),
            ("kd_alpha", 0 <= self.kd_alpha <= 1, "in [0, 1]"),
            (
                "lr_boundaries",
                list(self.lr_boundaries) == sorted(set(self.lr_boundaries)),
                "strictly increasing",
            ),
            (
                "export",
                set(self.export) <= set(export.EXPORT_FORMATS),
                f"among {', '.join(export.EXPORT_FORMATS)}",
            ),
        ]
        for name in ("student", "scratch_teacher", "expert"):
            checks.append(
                (name, getattr(self, name) in models.names(), f"one of {', '.join(models.names())}")
            )
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}.")


def train_and_evaluate(config, callbacks=()):
    """Runs the two stages and writes everything under `config.model_dir`.

    Stage 1 (methods with an expert, when no trained expert is given or saved in
    `model_dir/expert.keras`): trains the expert alone with the same recipe. Stage 2
    trains the student with the chosen method. Rerunning the same config resumes
    from the last completed epoch of either stage.

    Args:
        config: a `TrainConfig`.
        callbacks: extra Keras callbacks for stage 2.

    Under a multi-worker strategy every worker runs this; the chief writes into
    `model_dir`, the others into `model_dir/.workers/`, and all resume from the
    chief's checkpoints.

    Returns:
        The results dict, also written to `model_dir/results.json`.
    """
    with dtype_policy(config.mixed_precision):
        return _train_and_evaluate(config, callbacks)


def record_config(path, config):
    """Writes `config` to `path`, warning first of what differs from the config it replaces.

    A run resumed with other settings (say `--epochs=100` on a finished 50-epoch run,
    which stretches a cosine schedule mid-run) goes on from its checkpoint with the new
    ones; the warning and `log.csv`'s per-epoch learning rate keep that visible.
    """
    new = json.loads(json.dumps(dataclasses.asdict(config)))  # tuples as lists, as read back
    if os.path.exists(path):
        with open(path) as file:
            old = json.load(file)
        changed = [
            f"{key}: {old.get(key)!r} -> {value!r}" for key, value in new.items() if old.get(key) != value
        ]
        if changed:
            logging.warning(
                "%s was started with other settings; it resumes with the new ones (%s).",
                os.path.dirname(path),
                "; ".join(changed),
            )
    with open(path, "w") as file:
        json.dump(new, file, indent=2)


@contextlib.contextmanager
def dtype_policy(name):
    """Keras's global dtype policy set to `name` for a run, restored afterwards."""
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def _train_and_evaluate(config, callbacks):
    start = time.time()
    stage = Stage(config)
    record_config(os.path.join(stage.out, "config.json"), config)
    uses_scratch, uses_expert = TEACHERS[config.method]
    expert = stage.expert() if uses_expert else None

    logging.info("Stage 2: %s, %d epochs, into %s", config.method, config.epochs, config.model_dir)
    model = stage.model(config, expert)
    student, out = model.student, stage.out
    attention = _attention_images(out, model, student, expert, stage.eval_ds, stage.train_info)
    stage.fit(model, "", config.epochs, [*callbacks, *([attention] if attention else [])])

    final = model.evaluate(stage.eval_ds, return_dict=True, verbose=0)
    results = {
        "method": config.method,
        "dataset": config.dataset,
        "train_split": config.train_split,
        "train_examples": stage.train_info.num_examples,
        "eval_split": config.eval_split,
        "eval_examples": stage.eval_info.num_examples,
        "student_accuracy": float(final["student_accuracy"]),
        "epochs": config.epochs,
        "seed": config.seed,
        "student": config.student,
        "student_params": int(student.count_params()),
    }
    if uses_scratch:
        results["scratch_accuracy"] = float(final["scratch_accuracy"])
    if expert is not None:
        results["expert_accuracy"] = accuracy(expert, stage.eval_ds)
    save(student, os.path.join(out, "student.keras"))
    if config.export:
        representative = None
        if config.tflite_quantize:
            representative = np.concatenate(
                [x.numpy() for x, _ in stage.train_ds.take(max(1, 128 // config.batch_size))]
            )
        results["exports"] = export.export_student(
            student, os.path.join(out, "export"), config.export, representative
        )
    # This process's time, and what earlier processes of the run trained before a resume.
    results["wall_time_s"] = round(time.time() - start + stage.earlier_wall_time_s, 1)
    results["history"] = read_history(os.path.join(out, "log.csv"))
    with open(os.path.join(out, "results.json"), "w") as file:
        json.dump(results, file, indent=2)
    logging.info("Results (%s on %s):", config.method, config.eval_split)
    for key in ("student_accuracy", "scratch_accuracy", "expert_accuracy", "student_params", "wall_time_s"):
        if key in results:
            logging.info("  %-17s %s", key, results[key])
    return results


def _attention_images(out, model, student, expert, eval_ds, info):
    """The TensorBoard attention-map callback, when the networks have matching points."""
    pairs = getattr(model, "attention_pairs", None) or [(name, name) for name in models.GROUP_OUTPUTS]

    def has(net, names):
        return net is not None and set(names) <= {layer.name for layer in net.layers}

    student_layers, expert_layers = [p[0] for p in pairs], [p[1] for p in pairs]
    if not has(student, student_layers):
        return None
    images = next(iter(eval_ds))[0][:ATTENTION_IMAGES]
    return ctkd_callbacks.AttentionImages(
        os.path.join(out, "tensorboard", "attention"),
        images,
        student,
        student_layers,
        expert if has(expert, expert_layers) else None,
        expert_layers,
        ctkd_callbacks.display_images(images, info.mean, info.std),
    )


class Stage:
    """What the stages of a run share: strategy, data, recipe, output folder, callbacks.

    Creating it creates the strategy (first, as a multi-worker strategy requires),
    seeds everything and builds the input pipelines of `train_split` and `eval_split`.

    Args:
        config: the run's `TrainConfig`.
        train_split: the training split; defaults to `config.train_split`.
        eval_split: the evaluation split; defaults to `config.eval_split`.
    """

    def __init__(self, config, train_split=None, eval_split=None):
        self.config = config
        if config.deterministic and not kernels.sum_gradients_in_a_fixed_order():
            logging.warning(
                "deterministic: this TensorFlow lacks the internals that fix the order of gradient "
                "sums; full-size networks may differ in the last bits between processes."
            )
        self.strategy = strategy = distribute.make_strategy(config.strategy, config.num_gpus)
        keras.utils.set_random_seed(config.seed)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        self.out = distribute.output_dir(config.model_dir, strategy)
        self.earlier_wall_time_s = 0.0  # training time of processes this one resumes
        os.makedirs(self.out, exist_ok=True)
        train_split = train_split or config.train_split
        eval_split = eval_split or config.eval_split
        self.train_ds, self.train_info = data.build_dataset(
            config.dataset, train_split, config.batch_size, True, config.data_dir, config.seed
        )
        self.eval_ds, self.eval_info = data.build_dataset(
            config.dataset,
            eval_split,
            config.batch_size,
            False,
            config.data_dir,
            num_classes=self.train_info.num_classes,
        )
        self.steps = self.train_info.num_examples // config.batch_size
        replicas = strategy.num_replicas_in_sync
        logging.info("Devices: %s", ", ".join(d.name for d in tf.config.list_logical_devices()))
        logging.info(
            "Strategy: %s with %d replica(s); precision %s%s",
            type(strategy).__name__,
            replicas,
            config.mixed_precision,
            ", XLA" if config.jit_compile else "",
        )
        logging.info(
            "Data: %s %s (%d examples, %d classes, images %s), evaluation on %s (%d examples)",
            config.dataset,
            train_split,
            self.train_info.num_examples,
            self.train_info.num_classes,
            "x".join(map(str, self.train_info.image_shape)),
            eval_split,
            self.eval_info.num_examples,
        )
        logging.info(
            "Batch: %d global, %d per replica; %d steps per epoch",
            config.batch_size,
            config.batch_size // replicas,
            self.steps,
        )
        if config.batch_size % replicas:
            raise ValueError(f"batch_size {config.batch_size} is not divisible by the {replicas} replicas.")

    def model(self, config, expert):
        """The compiled model of `config.method`, with `config`'s weights and rate.

        Args:
            config: a `TrainConfig` (the stage's, or one with other loss weights).
            expert: the trained expert, for methods that use one.
        """
        uses_scratch, uses_expert = TEACHERS[config.method]
        with self.strategy.scope():
            student = self.network(config.student, "student")
            optimizer = self.optimizer(config.epochs, config.learning_rate)
            if config.method == "kd":
                model = hinton_kd(student, expert, config.kd_temperature, config.kd_alpha)
                model.compile(
                    optimizer=optimizer,
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=[keras.metrics.SparseCategoricalAccuracy(name="student_accuracy")],
                    **self.compile_options(),
                )
                model.build((None, *self.train_info.image_shape))
                return model
            scratch = self.network(config.scratch_teacher, "scratch_teacher") if uses_scratch else None
            model = CTKD(
                student=student,
                scratch_teacher=scratch,
                expert_teacher=expert,
                attention_target=config.attention_target if config.method == "ctkd" else "student",
                hint_weight=config.hint_weight if uses_scratch else None,
                attention_weight=config.attention_weight if uses_expert else None,
                hint_loss=config.hint_loss,
                hint_temperature=config.hint_temperature,
                expert_kd_weight=config.expert_kd_weight if uses_expert else 0.0,
                kd_temperature=config.kd_temperature,
                scratch_kd_weight=config.scratch_kd_weight if config.method == "ctkd" else 0.0,
                hint_when_correct=config.hint_when_correct and uses_scratch,
            )
            model.compile(optimizer=optimizer, **self.compile_options())
            return model

    def network(self, name, role):
        info = self.train_info
        return models.get(
            name,
            info.num_classes,
            info.image_shape,
            weight_decay=self.config.weight_decay,
            synchronized_batchnorm=self.config.sync_batchnorm,
            name=role,
        )

    def compile_options(self):
        return dict(jit_compile=self.config.jit_compile, steps_per_execution=self.config.steps_per_execution)

    def optimizer(self, epochs, learning_rate):
        """SGD with momentum; the step schedule (counted in epochs) or cosine decay over `epochs`."""
        config = self.config
        rate = learning_rate
        if config.lr_schedule == "cosine":
            rate = keras.optimizers.schedules.CosineDecay(learning_rate, epochs * self.steps)
        elif config.lr_boundaries:
            rate = keras.optimizers.schedules.PiecewiseConstantDecay(
                [int(b) * self.steps for b in config.lr_boundaries],
                [learning_rate * config.lr_decay**i for i in range(len(config.lr_boundaries) + 1)],
            )
        return keras.optimizers.SGD(rate, momentum=config.momentum)

    def loss_schedules(self, model):
        """Callbacks that change loss weights during training: the hint warm-up."""
        epochs = self.config.hint_warmup_epochs
        if epochs and isinstance(model, CTKD) and model.scratch_teacher is not None:
            return [ctkd_callbacks.HintWarmup(model.hint_weight, epochs)]
        return []

    def fit(self, model, stage_dir, epochs, callbacks=()):
        """Trains `model`; writes into `out/stage_dir`, checkpoints in `model_dir/stage_dir`.

        A run stopped in the middle of an epoch resumes at the step after its last
        checkpoint (`checkpoint_steps`): the rest of that epoch first, as a `fit` of its
        own over the same batches an uninterrupted run would have seen, then the
        epochs after it.
        """
        workdir = os.path.join(self.out, stage_dir)
        os.makedirs(workdir, exist_ok=True)
        chief = distribute.is_chief(self.strategy)
        backup_dir = os.path.join(self.config.model_dir, stage_dir, "checkpoints")
        log = os.path.join(workdir, "log.csv")
        checkpoint = ctkd_callbacks.checkpoint_metadata(backup_dir)
        step = ctkd_callbacks.resume_step(checkpoint)
        if checkpoint:
            logging.info(
                "Resuming from the checkpoint of epoch %d of %d, step %d (%.0f s of training so far)",
                checkpoint["epoch"] + bool(step),
                epochs,
                step or self.steps,
                checkpoint.get("wall_time_s", 0.0),
            )
        self.earlier_wall_time_s += checkpoint.get("wall_time_s", 0.0)
        # Rows of epochs after the checkpoint are written again when the resume redoes them.
        ctkd_callbacks.trim_log(log, checkpoint.get("epoch", 0))
        all_callbacks = [
            ctkd_callbacks.DataEpoch(self.train_info.epoch),
            ctkd_callbacks.NaNGuard(),
            ctkd_callbacks.LearningRateLogger(),
            *self.loss_schedules(model),
            keras.callbacks.CSVLogger(log, append=True),
            keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard")),
            *callbacks,
            # Last: a step or an epoch is committed once everything else has recorded it.
            ctkd_callbacks.BackupAndRestore(backup_dir, chief=chief, save_steps=self.config.checkpoint_steps),
        ]
        options = dict(
            # Without it, the split is scored once, by the final evaluation.
            validation_data=self.eval_ds if self.config.validate_every_epoch else None,
            shuffle=False,  # the pipeline shuffles, per epoch and resumably
            verbose=self.config.verbose,
        )
        if step:  # the interrupted epoch's last steps (the BackupAndRestore starts the fit at it)
            rest = keras.callbacks.CallbackList(
                all_callbacks,
                add_history=True,
                add_progbar=self.config.verbose != 0,
                model=model,
                verbose=self.config.verbose,
                epochs=epochs,
                steps=self.steps - step,
            )
            model.fit(self.train_ds.skip(step), epochs=checkpoint["epoch"] + 1, callbacks=rest, **options)
            if distribute.is_multi_worker(self.strategy):
                # The next fit reads the backup: every worker waits until the chief,
                # whose fit has returned only once it committed the epoch's end, is here.
                distribute.barrier(self.strategy)
        return model.fit(self.train_ds, epochs=epochs, callbacks=all_callbacks, **options)

    def expert(self):
        """Stage 1: the trained expert, loaded, or trained alone and saved."""
        config = self.config
        if config.expert_weights:
            path = experts.resolve(config.expert_weights)
        else:
            path = os.path.join(self.out, "expert.keras")
        if os.path.exists(path):
            logging.info("Stage 1: using the trained expert %s", path)
            if not config.expert_weights:  # trained by an earlier process of this run
                backup_dir = os.path.join(config.model_dir, "expert", "checkpoints")
                self.earlier_wall_time_s += ctkd_callbacks.checkpoint_metadata(backup_dir).get(
                    "wall_time_s", 0.0
                )
            with self.strategy.scope():
                return keras.models.load_model(path)
        logging.info(
            "Stage 1: training the expert %s alone, %d epochs, into %s",
            config.expert,
            config.expert_epochs,
            os.path.join(self.out, "expert"),
        )
        with self.strategy.scope():
            expert = self.network(config.expert, "expert")
            model = CTKD(student=expert)
            model.compile(
                optimizer=self.optimizer(config.expert_epochs, config.learning_rate), **self.compile_options()
            )
        self.fit(model, "expert", config.expert_epochs)
        save(expert, path)
        return expert


def save(model, path):
    """`model.save(path)`, atomically: a process killed meanwhile leaves no half-written file."""
    partial = os.path.join(os.path.dirname(path), f"partial.{os.path.basename(path)}")
    model.save(partial)
    os.replace(partial, path)


def accuracy(model, dataset):
    """Top-1 accuracy of a network on a dataset of (images, labels), in inference mode."""
    metric = keras.metrics.SparseCategoricalAccuracy()
    for images, labels in dataset:
        metric.update_state(labels, model(images, training=False))
    return float(metric.result())


def read_history(path):
    """The per-epoch log of a run (all epochs, across resumes) as lists by column."""
    if not os.path.exists(path):
        return {}
    with open(path) as file:
        rows = list(csv.DictReader(file))
    # Keras writes "NA" where an epoch lacks a column (validation metrics, when not validating).
    columns = {
        key: [float(row[key]) for row in rows if row.get(key) not in (None, "", "NA")]
        for key in (rows[0] if rows else {})
    }
    return {key: values for key, values in columns.items() if values}
