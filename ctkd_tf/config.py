"""`TrainConfig`: everything a run depends on, each option defined once (default, help, check).

`apps/train.py` makes its flags from these fields (`options.define_flags`), so a field
added here is a flag with the same name, help and check.
"""

import dataclasses

from ctkd_tf import data, distribute, export, methods, models, networks, pixels
from ctkd_tf.loss_options import LossOptions
from ctkd_tf.options import at_least, check, check_fields, fraction, option, positive

LR_SCHEDULES = ("step", "cosine")
OPTIMIZERS = ("sgd", "adam")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


_NETWORK = (models.is_network, models.NETWORK_NAMES)


def _pairs_or_auto(value):
    try:
        networks.parse_pairs(value)
    except ValueError:
        return False
    return True


def square(sides):
    """`(height, width)` of an `--image_size`-like value: H or H,W."""
    return (sides[0], sides[0]) if len(sides) == 1 else tuple(sides)


def image_ratio(image_size, expert_image_size):
    """The integer factor by which `expert_image_size` is `image_size` in both sides, or None."""
    (h, w), (eh, ew) = square(image_size), square(expert_image_size)
    factor = eh // h
    return factor if factor >= 1 and (eh, ew) == (h * factor, w * factor) else None


def _increasing(values):
    return list(values) == sorted(set(values))


@dataclasses.dataclass(frozen=True)
class TrainConfig(LossOptions):
    """Everything a run depends on; the defaults are the reference CIFAR recipe (the paper's).

    Each attribute is the flag of the same name of `apps/train.py` (see `--helpfull`).
    A loss option of a teacher the method does not have is not used, so one recipe
    serves every method (`methods.Method.build` says which method uses which). The loss
    options come first, defined in `loss_options.LossOptions`.
    """

    dataset: str = option("cifar10", "Data set.", choices=tuple(data.RECIPES))
    data_dir: str | None = option(None, "TFDS data dir; for image_folder, the images' root.")
    train_split: str = option("train", "Training split (TFDS syntax).")
    eval_split: str = option("test", "Evaluation split (TFDS syntax).")
    image_size: tuple[int, ...] = option(
        (),
        "Resize the images to H[,W] (any size they have; image folders of photos); empty: as they are.",
        (lambda sides: len(sides) <= 2 and all(side >= 1 for side in sides), "H or H,W of positive sides"),
    )
    expert_image_size: tuple[int, ...] = option(
        (),
        "The expert's image size H[,W], larger than --image_size by an integer factor: the pipeline crops "
        "and augments once at this size, the expert sees it, and the student (and scratch teacher) the "
        "same crop resized to --image_size; empty: --image_size.",
        (lambda sides: len(sides) <= 2 and all(side >= 1 for side in sides), "H or H,W of positive sides"),
    )
    augment: str | None = option(
        None,
        "Training augmentation: cifar (pad, crop, flip), imagenet (random resized crop, flip), none; "
        "default: cifar up to 64 px, else imagenet.",
        choices=data.AUGMENTATIONS,
    )
    method: str = option("ctkd", "ctkd, or a baseline: student, kd, at, rl.", choices=methods.names)
    student: str = option(
        "wrn16_1",
        "Student network: a zoo name, a Keras Applications name (MobileNetV3Small) or a .keras file.",
        _NETWORK,
    )
    scratch_teacher: str = option("wrn40_1", "Scratch teacher (a network, as --student).", _NETWORK)
    expert: str = option("wrn40_1", "Expert network, as --student (trained if not given).", _NETWORK)
    # Whether the file exists is checked when the run needs it (and by the flag, at once).
    expert_weights: str | None = option(None, "A trained expert: a .keras file or a shipped expert's name.")
    expert_init: str | None = option(
        None,
        "Stage 1 fine-tunes a pretrained expert instead of training it from scratch: imagenet (Keras "
        "Applications --expert; downloads), the weights file of that network without its top, or a "
        ".keras file (its last layer replaced by a head for the data's classes).",
    )
    student_init: str | None = option(
        None,
        "Start the student from pretrained weights with a new head for the data's classes: imagenet "
        "(Keras Applications --student; downloads), the weights file of that network without its top, or "
        "a .keras file (its last layer replaced). Stage 2 then fine-tunes it as stage 1 fine-tunes the "
        "expert: --student_head_epochs of the new head alone, then the whole network, batch norm frozen, "
        "with --finetune_optimizer at --finetune_learning_rate (x --finetune_lr_factor for the whole "
        "network) in place of --optimizer and --learning_rate.",
    )
    scratch_teacher_init: str | None = option(
        None, "The scratch teacher's pretrained weights, as --student_init (fine-tuned with it)."
    )
    student_head_epochs: int = option(
        2, "With --student_init: the first epochs of stage 2 train the new head(s) alone.", at_least(0)
    )
    student_pixels: str = option(
        "dataset",
        "The pixel values the student network takes (a .keras file: what it was trained on); "
        + pixels.FLAG_HELP
        + ". The exported student takes uint8 pixels and converts them.",
        choices=pixels.CONVENTIONS,
    )
    scratch_teacher_pixels: str = option(
        "dataset",
        "The pixel values the scratch teacher takes, as --student_pixels.",
        choices=pixels.CONVENTIONS,
    )
    expert_pixels: str = option(
        "dataset",
        "The pixel values the expert takes, as --student_pixels: for --expert_weights or --expert "
        "given as a .keras file, what it was trained on (a Rescaling layer inside: raw).",
        choices=pixels.CONVENTIONS,
    )
    min_expert_accuracy: float | None = option(
        None,
        "Before stage 2, the expert's top-1 on --eval_split (fed as stage 2 feeds it) must reach this "
        "fraction, or the run stops and says why; default: the share of the split's most common class "
        "+ 0.10; 0: no check.",
        fraction,
    )
    expert_head_epochs: int = option(
        1,
        "With --expert_init: the first epochs of --expert_epochs train the new head alone (the "
        "pretrained backbone frozen); the rest the whole network at --learning_rate x --finetune_lr_factor.",
        at_least(0),
    )
    finetune_optimizer: str = option(
        "adam",
        "With --expert_init: stage 1's optimizer (adam: Keras's transfer-learning recipe; sgd: with "
        "--momentum).",
        choices=OPTIMIZERS,
    )
    finetune_learning_rate: float = option(
        1e-3, "With --expert_init: the learning rate of the new head's epochs.", positive
    )
    finetune_lr_factor: float = option(
        0.1,
        "With --expert_init: the whole network's epochs train at --finetune_learning_rate x this factor "
        "(batch norm stays in inference mode).",
        positive,
    )
    attention_pairs: str = option(
        "",
        "auto, or student_layer:expert_layer,... (layer paths, / into nested models); empty: the zoo's "
        "group outputs where the networks have them, else auto.",
        (_pairs_or_auto, "auto or comma-separated student_layer:expert_layer pairs"),
    )
    hint_warmup_epochs: int = option(0, "Ramp the hint weight up from 0 over these epochs.", at_least(0))
    epochs: int = option(200, "Training epochs.", at_least(1))
    expert_epochs: int = option(200, "Expert epochs.", at_least(1))
    batch_size: int = option(128, "Global batch size.", at_least(1))
    learning_rate: float = option(0.1, "Initial learning rate.", positive)
    lr_schedule: str = option(
        "step", "step: x lr_decay at lr_boundaries; cosine: to 0.", choices=LR_SCHEDULES
    )
    lr_boundaries: tuple[int, ...] = option(
        (60, 120, 160),
        "Epochs at which the rate is multiplied by lr_decay.",
        (_increasing, "strictly increasing whole epochs, e.g. 60,120,160"),
    )
    lr_decay: float = option(0.2, "Learning-rate factor at each boundary.", positive)
    optimizer: str = option(
        "sgd", "Stage 2's optimizer (and stage 1's without --expert_init).", choices=OPTIMIZERS
    )
    momentum: float = option(0.9, "SGD momentum.", (lambda value: 0 <= value < 1, "in [0, 1)"))
    weight_decay: float = option(5e-4, "PyTorch-style weight decay (L2).", at_least(0))
    model_dir: str = option("runs/cifar10_ctkd", "Where everything of the run goes.")
    seed: int = option(0, "Seed of initialisation, shuffling and augmentation.")
    deterministic: bool = option(
        False, "Bit-identical reruns: deterministic ops, gradient sums in a fixed order."
    )
    strategy: str = option("auto", "tf.distribute strategy.", choices=distribute.STRATEGIES)
    num_gpus: int | None = option(None, "Use at most this many GPUs.", at_least(0))
    sync_batchnorm: bool = option(False, "Batch-norm statistics synced across replicas.")
    mixed_precision: str = option("float32", "Keras dtype policy; losses stay float32.", choices=PRECISIONS)
    jit_compile: bool = option(False, "Compile the training step with XLA.")
    steps_per_execution: int = option(1, "Training steps per tf.function call.", at_least(1))
    export: tuple[str, ...] = option(
        (),
        f"Student exports: {', '.join(export.EXPORT_FORMATS)}.",
        (
            lambda formats: set(formats) <= set(export.EXPORT_FORMATS),
            f"among {', '.join(export.EXPORT_FORMATS)}",
        ),
    )
    tflite_quantize: bool = option(False, "Also an int8 TFLite student.")
    validate_every_epoch: bool = option(
        True,
        "Score --eval_split after every epoch (log.csv, TensorBoard); --novalidate_every_epoch scores it "
        "once, after the last epoch, and saves that time.",
    )
    checkpoint_steps: int = option(
        100,
        "Also checkpoint every this many training steps within an epoch (0: at epochs' ends only); "
        "a run stopped in the middle of an epoch resumes at the step after its last checkpoint.",
        at_least(0),
    )
    verbose: int = option(1, "0 silent, 1 progress bars, 2 a line per epoch.")

    def __post_init__(self):
        check_fields(self)
        expert_source = self.expert_weights or self.expert_init or self.expert
        for name, source, what in (
            ("student_pixels", self.student_init or self.student, "--student (or --student_init)"),
            (
                "scratch_teacher_pixels",
                self.scratch_teacher_init or self.scratch_teacher,
                "--scratch_teacher (or --scratch_teacher_init)",
            ),
            (
                "expert_pixels",
                expert_source,
                "the expert's file (--expert_weights, --expert_init or --expert)",
            ),
        ):
            check(
                getattr(self, name) == "dataset" or source.endswith(".keras"),
                name,
                f"dataset unless {what} is a .keras file, got {getattr(self, name)!r} for {source!r} "
                "(networks built here by name take the data set's normalisation)",
            )
        check(
            not (self.student_init or self.scratch_teacher_init) or self.student_head_epochs < self.epochs,
            "student_head_epochs",
            f"fewer than --epochs={self.epochs} (the whole network trains after the head)",
        )
        check(
            not self.expert_image_size or bool(self.image_size),
            "expert_image_size",
            "given with --image_size (the student's size)",
        )
        if self.expert_image_size and self.image_size:
            check(
                image_ratio(self.image_size, self.expert_image_size) is not None,
                "expert_image_size",
                f"an integer multiple (2, 3, ...) of --image_size={','.join(map(str, self.image_size))} in "
                f"both sides, got {','.join(map(str, self.expert_image_size))}: the expert's attention maps "
                "are pooled to the student's by that factor",
            )
        check(
            self.expert_init is None or self.expert_head_epochs < self.expert_epochs,
            "expert_head_epochs",
            f"fewer than --expert_epochs={self.expert_epochs} (the whole network trains after the head)",
        )
        check(
            methods.get(self.method).multi_worker or self.strategy != "multi_worker",
            "strategy",
            f"not multi_worker with --method={self.method}: Keras's Distiller does not run under "
            "MultiWorkerMirroredStrategy (keras-team/keras#20585)",
        )
