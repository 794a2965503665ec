"""The training pipeline: train (or load) the expert, then the chosen method; outputs in model_dir.

`train_and_evaluate(config)` reads top to bottom: strategy, data, the expert stage, the
method's model, fit with resume, evaluation, outputs. Each step is a function of what it
uses; the tuner (`tune.py`) calls the same ones.
"""

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
from ctkd_tf import data, distribute, experts, export, kernels, methods, models, networks, pixels, resume
from ctkd_tf.config import TrainConfig, square

ATTENTION_IMAGES = 8  # fixed evaluation images whose attention maps go to TensorBoard

__all__ = ["TrainConfig", "train_and_evaluate"]


def train_and_evaluate(config, callbacks=()):
    """Runs the two stages and writes everything under `config.model_dir`.

    Stage 1 (methods with an expert, when no trained expert is given or saved in
    `model_dir/expert.keras`): trains the expert alone with the same recipe. Stage 2
    trains the student with the chosen method. Rerunning the same config resumes
    from the last checkpoint of either stage.

    Args:
        config: a `TrainConfig`.
        callbacks: extra Keras callbacks for stage 2.

    Under a multi-worker strategy every worker runs this; the chief writes into
    `model_dir`, the others into `model_dir/.workers/`, and all resume from the
    chief's checkpoints.

    Returns:
        The results dict, also written to `model_dir/results.json`.
    """
    start = time.time()
    method = methods.get(config.method)
    # What earlier processes of this run trained, before this one adds to their checkpoints.
    stage_dirs = ("expert", "expert/head") if trains_expert(config) else ()
    stage_dirs += ("head",) if pretrained_networks(config) else ()
    earlier_wall_time_s = resume.wall_time(checkpoint_dir(config, "")) + sum(
        resume.wall_time(checkpoint_dir(config, stage_dir)) for stage_dir in stage_dirs
    )
    with dtype_policy(config.mixed_precision):
        strategy = setup(config)
        out = distribute.output_dir(config.model_dir, strategy)
        os.makedirs(out, exist_ok=True)
        record_config(os.path.join(out, "config.json"), config)
        run_data = make_data(config, config.train_split, config.eval_split, strategy)
        resume.atomic_write(
            os.path.join(out, "labels.txt"), "".join(f"{n}\n" for n in run_data.train_info.class_names)
        )
        expert = expert_stage(config, strategy, run_data, out) if method.expert else None

        networks_, backbones = stage_two_networks(config, strategy, run_data.train_info)
        checked = None
        logging.info("Stage 2: %s, %d epochs, into %s", config.method, config.epochs, config.model_dir)
        for stage_dir, phase, frozen in stage_two_phases(config):
            for backbone in backbones:
                backbone.trainable = not frozen
                models.freeze_batchnorm(backbone)
            model = make_model(phase, strategy, run_data.train_info, expert, **networks_)
            if expert is not None and checked is None:
                checked = check_expert(config, model, expert, run_data, out)
            if frozen:
                logging.info("Stage 2 (the new heads): %d epochs into %s", phase.epochs, stage_dir)
            attention = attention_images(os.path.join(out, stage_dir), model, expert, run_data)
            fit(model, phase, strategy, run_data, out, stage_dir, phase.epochs, [*callbacks, *attention])
        for backbone in backbones:
            backbone.trainable = True

        results = evaluate(config, method, model, run_data)
        if checked is not None:
            results["expert_accuracy"] = checked["accuracy"]
        finetune = read_json(os.path.join(out, "expert", "finetune.json"))
        if finetune:
            results["expert_finetune"] = finetune
        student = model.student
        resume.save_model(student, os.path.join(out, "student.keras"))
        if config.export:
            try:
                results["exports"] = export_student(config, student, run_data, out)
            except Exception as error:  # the training is done and saved: say what failed, keep the run
                results["export_error"] = f"{type(error).__name__}: {str(error)[:500]}"
                logging.error(
                    "Export failed (%s); the trained student is in %s. Rerun with --export= to skip it.",
                    results["export_error"],
                    os.path.join(out, "student.keras"),
                )
        results["wall_time_s"] = round(time.time() - start + earlier_wall_time_s, 1)
        results["history"] = read_history(os.path.join(out, "log.csv"))
        resume.write_json(os.path.join(out, "results.json"), results)
    logging.info("Results (%s on %s):", config.method, config.eval_split)
    for key in ("student_accuracy", "scratch_accuracy", "expert_accuracy", "student_params", "wall_time_s"):
        if key in results:
            logging.info("  %-17s %s", key, results[key])
    return results


@contextlib.contextmanager
def dtype_policy(name):
    """Keras's global dtype policy set to `name` for a run, restored afterwards."""
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def setup(config):
    """The run's strategy (created first, as a multi-worker strategy requires), seeds, determinism."""
    if config.deterministic and not kernels.sum_gradients_in_a_fixed_order():
        logging.warning(
            "deterministic: this TensorFlow lacks the internals that fix the order of gradient "
            "sums; full-size networks may differ in the last bits between processes."
        )
    strategy = distribute.make_strategy(config.strategy, config.num_gpus)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    logging.info("Devices: %s", ", ".join(d.name for d in tf.config.list_logical_devices()))
    logging.info(
        "Strategy: %s with %d replica(s); precision %s%s",
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
        config.mixed_precision,
        ", XLA" if config.jit_compile else "",
    )
    return strategy


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
    resume.write_json(path, new)


@dataclasses.dataclass(frozen=True)
class RunData:
    """The input pipelines of a run and what they yield (`data.DatasetInfo`)."""

    train: tf.data.Dataset
    train_info: data.DatasetInfo
    eval: tf.data.Dataset
    eval_info: data.DatasetInfo


def make_data(config, train_split, eval_split, strategy):
    """The training and evaluation pipelines of `config`'s data set, on these splits."""
    image_size = config.expert_image_size or config.image_size or None
    if image_size is not None and len(image_size) == 1:  # H: a square
        image_size = (image_size[0], image_size[0])
    sizes = dict(image_size=image_size, augment=config.augment)
    train_ds, train_info = data.build_dataset(
        config.dataset, train_split, config.batch_size, True, config.data_dir, config.seed, **sizes
    )
    eval_ds, eval_info = data.build_dataset(
        config.dataset,
        eval_split,
        config.batch_size,
        False,
        config.data_dir,
        num_classes=train_info.num_classes,
        **sizes,
    )
    replicas = strategy.num_replicas_in_sync
    logging.info(
        "Data: %s %s (%d examples, %d classes, images %s), evaluation on %s (%d examples)",
        config.dataset,
        train_split,
        train_info.num_examples,
        train_info.num_classes,
        "x".join(map(str, train_info.image_shape)),
        eval_split,
        eval_info.num_examples,
    )
    logging.info(
        "Batch: %d global, %d per replica; %d steps per epoch",
        config.batch_size,
        config.batch_size // replicas,
        int(train_ds.cardinality()),
    )
    if config.batch_size % replicas:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the {replicas} replicas.")
    return RunData(train_ds, train_info, eval_ds, eval_info)


def trains_expert(config):
    """Whether a run of `config` trains its own expert (stage 1)."""
    return methods.get(config.method).expert and not config.expert_weights


def checkpoint_dir(config, stage_dir):
    """Where a stage's checkpoints go: under the chief's `model_dir`, shared by all workers."""
    return os.path.join(config.model_dir, stage_dir, "checkpoints")


def expert_stage(config, strategy, run_data, out):
    """Stage 1: the trained expert, loaded, or trained alone on the run's data and saved."""
    path = (
        experts.resolve(config.expert_weights) if config.expert_weights else os.path.join(out, "expert.keras")
    )
    if os.path.exists(path):
        logging.info("Stage 1: using the trained expert %s", path)
        with strategy.scope():
            return keras.models.load_model(path)
    logging.info(
        "Stage 1: training the expert %s alone, %d epochs, into %s",
        config.expert,
        config.expert_epochs,
        os.path.join(out, "expert"),
    )
    expert_config = dataclasses.replace(
        config,
        method="student",
        student=config.expert,
        student_pixels=config.expert_pixels,
        student_init=None,
        scratch_teacher_init=None,
        image_size=config.expert_image_size or config.image_size,
        expert_image_size=(),
        epochs=config.expert_epochs,
    )
    if config.expert_init:
        expert = fine_tune(expert_config, strategy, run_data, out)
    else:
        model = make_model(expert_config, strategy, run_data.train_info, None, role="expert")
        fit(model, expert_config, strategy, run_data, out, "expert", config.expert_epochs)
        expert = model.student
    resume.save_model(expert, path)
    return expert


def fine_tune(config, strategy, run_data, out):
    """Stage 1 from a pretrained backbone (`config.expert_init`): the new head, then the whole network.

    Keras's transfer-learning recipe: the first `expert_head_epochs` train the head alone at
    `finetune_learning_rate` (the backbone frozen), then the whole network trains for the
    rest of `expert_epochs` at that rate times `finetune_lr_factor`, with
    `finetune_optimizer`; the backbone's batch norm stays in inference mode throughout (its
    layers frozen: statistics of a few thousand photos in small batches would replace
    ImageNet's). Each phase checkpoints and resumes on its own (`expert/head/`, `expert/`).

    Both phases are scored on the evaluation split; a whole-network phase that ends below the
    head phase is not kept: the expert of the head phase is, with a warning. What happened
    is written to `expert/finetune.json` (and `results.json`'s `expert_finetune`).
    """
    info = run_data.train_info
    with strategy.scope():
        expert, backbone = models.pretrained(
            config.expert,
            config.expert_init,
            info.num_classes,
            info.image_shape,
            info.mean,
            info.std,
            weight_decay=config.weight_decay,
            name="expert",
            pixels=config.expert_pixels,
        )
    scores, head_weights = {}, None
    # The pretrained network converts the pipeline's images itself.
    for stage_dir, phase, frozen in finetune_phases(
        config, "expert", config.expert_head_epochs, student_pixels="dataset"
    ):
        backbone.trainable = not frozen
        models.freeze_batchnorm(backbone)
        model = make_model(phase, strategy, info, None, student=expert)
        logging.info(
            "Stage 1 (%s): %d epochs, %s at rate %g, into %s",
            "the new head" if frozen else "the whole network",
            phase.epochs,
            phase.optimizer,
            phase.learning_rate,
            stage_dir,
        )
        fit(model, phase, strategy, run_data, out, stage_dir, phase.epochs)
        scores["head" if frozen else "whole"] = accuracy(expert, run_data.eval)
        if frozen:
            head_weights = expert.get_weights()
    backbone.trainable = True
    summary = {f"{name}_accuracy": score for name, score in scores.items()}
    summary["kept"] = "whole"
    if head_weights is not None and "whole" in scores and scores["whole"] < scores["head"]:
        logging.warning(
            "Stage 1: fine-tuning the whole network ended at %.2f %% top-1 on %s, below the new head's "
            "%.2f %%: keeping the expert of the head phase. Fine-tune more gently (lower "
            "--finetune_lr_factor or --finetune_learning_rate), or train the head longer "
            "(--expert_head_epochs).",
            100 * scores["whole"],
            config.eval_split,
            100 * scores["head"],
        )
        expert.set_weights(head_weights)
        summary["kept"] = "head"
    elif "whole" not in scores:
        summary["kept"] = "head"
    logging.info("Stage 1: %s", ", ".join(f"{k} {v}" for k, v in summary.items()))
    resume.write_json(os.path.join(out, "expert", "finetune.json"), summary)
    return expert


def conventions(config):
    """The pixel convention of each role's network in stage 2 (`pixels.CONVENTIONS`).

    An expert fine-tuned in the run (`--expert_init`) takes the pipeline's images: the
    convention of its init file is converted inside it.
    """
    expert = "dataset" if trains_expert(config) and config.expert_init else config.expert_pixels
    return {
        "student": config.student_pixels,
        "scratch_teacher": config.scratch_teacher_pixels,
        "expert_teacher": expert,
    }


def network_inputs(config, info):
    """`CTKD`'s `preprocessing`: what each network takes of the pipeline's images, converted to its
    pixel convention (`conventions`) and, with `--expert_image_size`, resized to its size."""
    preprocessing = pixels.preprocessing(conventions(config), info.mean, info.std)
    if not config.expert_image_size or square(config.expert_image_size) == square(config.image_size):
        return preprocessing
    for role in ("student", "scratch_teacher"):
        size = input_shape(config, role, info)[:2]
        resize = keras.layers.Resizing(*size, interpolation="bilinear", antialias=True, name=f"{role}_size")
        layers = [resize, preprocessing[role]] if role in preprocessing else [resize]
        preprocessing[role] = keras.Sequential(layers, name=f"{role}_inputs")
    return preprocessing


def check_expert(config, model, expert, run_data, out):
    """The expert's check before stage 2 (`experts.check`), fed as `model` feeds it; written to
    `out/expert_check.json`. Raises `experts.ExpertCheckError` when it fails."""
    hints = dict(
        pixels_flag="--expert_pixels",
        convention=conventions(config)["expert_teacher"],
        trained_here=trains_expert(config),
        finetuned=trains_expert(config) and bool(config.expert_init),
        class_names=run_data.train_info.class_names,
    )
    try:
        if hasattr(model, "check_expert"):  # CTKD: through its preprocessing
            result = model.check_expert(run_data.eval, config.min_expert_accuracy, hints=hints)
        else:  # Keras's Distiller: the pipeline's images as they are
            result = experts.check(
                lambda x: expert(x, training=False), run_data.eval, config.min_expert_accuracy, expert, hints
            )
    except experts.ExpertCheckError:
        logging.error("The expert failed its check on %s: stopping before stage 2.", config.eval_split)
        raise
    resume.write_json(os.path.join(out, "expert_check.json"), result)
    logging.info(
        "The expert's check: %.2f %% top-1 on %s (at least %.2f %% needed; the most common class %.2f %%)",
        100 * result["accuracy"],
        config.eval_split,
        100 * result["min_accuracy"],
        100 * result["majority_share"],
    )
    return result


def build_network(config, name, role, info):
    """The network `name` (`models.get`) for the data of `info`, with `config`'s recipe (weight decay, BN),
    taking the images of its role's size (`input_shape`)."""
    zoo = dict(synchronized_batchnorm=config.sync_batchnorm) if name in models.names() else {}
    return models.get(
        name,
        info.num_classes,
        input_shape(config, role, info),
        mean=info.mean,
        std=info.std,
        weight_decay=config.weight_decay,
        name=role,
        **zoo,
    )


def input_shape(config, role, info):
    """The image shape the network of `role` takes: the pipeline's, but for the student and the
    scratch teacher of a run whose expert sees larger images (`--expert_image_size`)."""
    if config.expert_image_size and role in ("student", "scratch_teacher"):
        return (*square(config.image_size), info.image_shape[-1])
    return tuple(info.image_shape)


def pretrained_networks(config):
    """`{role: init}` of the stage-2 networks that start from pretrained weights (`--student_init`, ...)."""
    method = methods.get(config.method)
    inits = {"student": config.student_init}
    if method.scratch_teacher:
        inits["scratch_teacher"] = config.scratch_teacher_init
    return {role: init for role, init in inits.items() if init}


def stage_two_networks(config, strategy, info):
    """`({"student": ..., "scratch": ...}, [pretrained backbones])`: the networks stage 2 trains.

    Networks with `--student_init` / `--scratch_teacher_init` start from those weights with a
    new head (`models.pretrained`); the others are built new by `make_model` (None here).
    """
    built, backbones = {}, []
    for role, init in pretrained_networks(config).items():
        name = config.student if role == "student" else config.scratch_teacher
        with strategy.scope():
            net, backbone = models.pretrained(
                name,
                init,
                info.num_classes,
                input_shape(config, role, info),
                info.mean,
                info.std,
                weight_decay=config.weight_decay,
                name=role,
                pixels=getattr(config, f"{role}_pixels"),
                role=role,
            )
        built["student" if role == "student" else "scratch"] = net
        backbones.append(backbone)
    return built, backbones


def stage_two_phases(config):
    """`[(stage_dir, phase config, backbones frozen)]`: stage 2 in one phase, or with pretrained
    networks the new heads first (`head/`), then the whole networks, at the fine-tuning rates."""
    if not pretrained_networks(config):
        return [("", config, False)]
    return finetune_phases(
        config,
        "",
        config.student_head_epochs,
        student_pixels="dataset",  # the pretrained networks convert the pipeline's images themselves
        scratch_teacher_pixels="dataset",
        student_head_epochs=0,  # each phase is one fit
    )


def finetune_phases(config, stage_dir, head_epochs, **changes):
    """`[(stage_dir, phase config, backbone frozen)]` of Keras's transfer-learning recipe, with
    `changes` to `config` in both: `head_epochs` of the new head alone at
    `finetune_learning_rate` (into `<stage_dir>/head`), then the rest of `config.epochs` of the
    whole network at that rate times `finetune_lr_factor` (into `stage_dir`), both with
    `finetune_optimizer`. A phase of no epochs is left out."""
    rate = config.finetune_learning_rate
    phases = [
        (os.path.join(stage_dir, "head"), True, head_epochs, rate),
        (stage_dir, False, config.epochs - head_epochs, rate * config.finetune_lr_factor),
    ]
    return [
        (
            phase_dir,
            dataclasses.replace(
                config,
                epochs=epochs,
                learning_rate=phase_rate,
                optimizer=config.finetune_optimizer,
                **changes,
            ),
            frozen,
        )
        for phase_dir, frozen, epochs, phase_rate in phases
        if epochs
    ]


def make_optimizer(config, epochs, steps):
    """`config.optimizer` (SGD with momentum, or Adam); the step schedule (counted in epochs) or
    cosine decay over `epochs`."""
    rate = config.learning_rate
    if config.lr_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(config.learning_rate, epochs * steps)
    elif config.lr_boundaries:
        rate = keras.optimizers.schedules.PiecewiseConstantDecay(
            [int(b) * steps for b in config.lr_boundaries],
            [config.learning_rate * config.lr_decay**i for i in range(len(config.lr_boundaries) + 1)],
        )
    if config.optimizer == "adam":
        return keras.optimizers.Adam(rate)
    return keras.optimizers.SGD(rate, momentum=config.momentum)


def make_model(config, strategy, info, expert, role="student", student=None, scratch=None):
    """The compiled, built model of `config.method` (networks, losses, optimizer), all from `config`.

    Args:
        config: a `TrainConfig` (the run's, or one with other loss weights: the tuner's).
        strategy: the strategy whose scope creates the variables.
        info: the training pipeline's `DatasetInfo` (classes, image shape, steps).
        expert: the trained expert, for methods that use one.
        role: the name of the network trained as the student.
        student: that network, already built (None: `config.student`'s, new).
        scratch: the scratch teacher, already built (None: `config.scratch_teacher`'s, new).
    """
    method = methods.get(config.method)
    steps = info.num_examples // config.batch_size
    with strategy.scope():
        student = student or build_network(config, config.student, role, info)
        if method.scratch_teacher:
            scratch = scratch or build_network(config, config.scratch_teacher, "scratch_teacher", info)
        else:
            scratch = None
        preprocessing = network_inputs(config, info)
        model = method.build(config, student, scratch, expert, preprocessing)
        method.compile(
            model,
            make_optimizer(config, config.epochs, steps),
            jit_compile=config.jit_compile,
            steps_per_execution=config.steps_per_execution,
        )
        if not model.built:  # Keras's Distiller: built by a first call
            model.build((None, *info.image_shape))
    return model


def fit(model, config, strategy, run_data, out, stage_dir, epochs, callbacks=(), initial_epoch=0):
    """Trains `model` for `epochs`, resuming from and checkpointing to `model_dir/stage_dir`.

    Logs go to `out/stage_dir` (`log.csv`, `tensorboard/` unless `callbacks` hold a
    `TensorBoard` of their own). A loss that turns NaN or infinite stops the run with a
    FloatingPointError that says what to do; the last checkpoint is kept. Without a
    checkpoint, training starts at epoch `initial_epoch` (KerasTuner's Hyperband).
    """
    workdir = os.path.join(out, stage_dir)
    os.makedirs(workdir, exist_ok=True)
    log = os.path.join(workdir, "log.csv")
    all_callbacks = [
        ctkd_callbacks.DataEpoch(run_data.train_info.epoch),
        # Raising (rather than stopping) skips the epoch's end: the last checkpoint stays.
        keras.callbacks.TerminateOnNaN(raise_error=True),
        ctkd_callbacks.LearningRateLogger(),
        *hint_schedule(config, model),
        keras.callbacks.CSVLogger(log, append=True),
        *callbacks,
    ]
    if not any(isinstance(c, keras.callbacks.TensorBoard) for c in callbacks):
        all_callbacks.append(keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard")))
    try:
        return resume.fit(
            model,
            run_data.train,
            epochs,
            checkpoint_dir(config, stage_dir),
            log,
            strategy,
            save_steps=config.checkpoint_steps,
            callbacks=all_callbacks,
            initial_epoch=initial_epoch,
            # Without it, the split is scored once, by the final evaluation.
            validation_data=run_data.eval if config.validate_every_epoch else None,
            shuffle=False,  # the pipeline shuffles, per epoch and resumably
            verbose=config.verbose,
        )
    except RuntimeError as error:
        if "NaN or Inf loss" not in str(error):  # TerminateOnNaN's message
            raise
        raise FloatingPointError(
            f"The loss became nan or inf ({error}). Training stopped; the checkpoint of the last "
            "completed epoch is kept. Lower --learning_rate or the loss weights, then rerun the same "
            "command to resume from it."
        ) from error


def hint_schedule(config, model):
    """The callbacks that change loss weights during training: the hint warm-up."""
    epochs = config.hint_warmup_epochs
    if epochs and getattr(model, "scratch_teacher", None) is not None:
        return [ctkd_callbacks.HintWarmup(model.hint_weight, epochs)]
    return []


def attention_images(out, model, expert, run_data):
    """The TensorBoard attention-map callback, as a list: empty when the student has no matching points."""
    pairs = getattr(model, "attention_pairs", None) or [(name, name) for name in models.GROUP_OUTPUTS]

    def has(net, paths):
        try:
            return net is not None and all(networks.layer_at(net, path) for path in paths)
        except ValueError:
            return False

    student_layers, expert_layers = [p[0] for p in pairs], [p[1] for p in pairs]
    if not has(model.student, student_layers):
        return []
    images = next(iter(run_data.eval))[0][:ATTENTION_IMAGES]
    info = run_data.train_info
    return [
        ctkd_callbacks.AttentionImages(
            os.path.join(out, "tensorboard", "attention"),
            images,
            model.student,
            student_layers,
            expert if has(expert, expert_layers) else None,
            expert_layers,
            ctkd_callbacks.display_images(images, info.mean, info.std),
            getattr(model, "preprocessing", None),
        )
    ]


def evaluate(config, method, model, run_data):
    """The results of a trained model on the evaluation split, and what the run was."""
    final = model.evaluate(run_data.eval, return_dict=True, verbose=0)
    results = {
        "method": config.method,
        "dataset": config.dataset,
        "train_split": config.train_split,
        "train_examples": run_data.train_info.num_examples,
        "eval_split": config.eval_split,
        "eval_examples": run_data.eval_info.num_examples,
        "student_accuracy": float(final["student_accuracy"]),
        "epochs": config.epochs,
        "seed": config.seed,
        "student": config.student,
        "student_params": int(model.student.count_params()),
    }
    if method.scratch_teacher:
        results["scratch_accuracy"] = float(final["scratch_accuracy"])
    return results


def export_student(config, student, run_data, out, calibration=None):
    """`config.export`'s formats of the student under `out/export`, taking uint8 RGB pixels.

    With TFLite, also `labels.txt` and `card.json` (`export.card`: the accuracy of the
    Keras student and of each TFLite model in LiteRT on the evaluation split); the int8
    model is calibrated on 256 training images (or on `calibration`, uint8 pixels).
    """
    info = run_data.train_info
    directory = os.path.join(out, "export")

    def pixels(dataset, batches=None):
        return uint8_pixels(dataset, info, tuple(student.input_shape[1:3]), batches)

    representative = calibration
    if config.tflite_quantize and representative is None:
        representative = pixels(run_data.train, max(1, 256 // config.batch_size))[0]
    paths = export.export_student(
        student, directory, config.export, representative, info.mean, info.std, config.student_pixels
    )
    if "tflite" in paths:
        resume.atomic_write(
            os.path.join(directory, "labels.txt"), "".join(f"{n}\n" for n in info.class_names)
        )
        images, labels = pixels(run_data.eval)
        card = export.card(
            paths,
            student,
            info.mean,
            info.std,
            info.class_names,
            images,
            labels,
            config.eval_split,
            config.student_pixels,
        )
        resume.write_json(os.path.join(directory, "card.json"), card)
        logging.info("Export (%s, %d images): top-1 %s", config.eval_split, len(labels), card["accuracy"])
        for name, problems in card.get("problems", {}).items():
            logging.warning("Export: %s in LiteRT: %s (card.json's problems).", name, "; ".join(problems))
    return paths


def uint8_pixels(dataset, info, size, batches=None):
    """`(uint8 images, labels)` of a pipeline's normalised batches (all, or the first `batches`), as a
    camera gives them at `size` (the pipeline's images, of the expert's size if larger, resized)."""
    batch = [(x.numpy(), y.numpy()) for x, y in (dataset if batches is None else dataset.take(batches))]
    images = np.concatenate([x for x, _ in batch]) * np.asarray(info.std) + np.asarray(info.mean)
    if images.shape[1:3] != tuple(size):
        images = tf.image.resize(images, size, method="bilinear", antialias=True).numpy()
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), np.concatenate([y for _, y in batch])


def accuracy(model, dataset):
    """Top-1 accuracy of a network on a dataset of (images, labels), in inference mode."""
    metric = keras.metrics.SparseCategoricalAccuracy()
    for images, labels in dataset:
        metric.update_state(labels, model(images, training=False))
    return float(metric.result())


def read_json(path):
    """The JSON object of a file, or None when there is none."""
    if not os.path.exists(path):
        return None
    with open(path) as file:
        return json.load(file)


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
