"""The methods a run can train, by name: their networks, how their model is built, what the tuner searches.

CTKD and its baselines are, all but KD, the same `CTKD` model with fewer teachers:
without a scratch teacher it is Attention Transfer, without an expert Rocket Launching,
without both the student alone. Training (`train`), the tuner (`tune`) and the
benchmarks read what they need of a method here.
"""

import dataclasses

import keras

from ctkd_tf import networks
from ctkd_tf.ctkd import CTKD
from ctkd_tf.distiller import hinton_kd
from ctkd_tf.loss_options import CTKD_OPTIONS


@dataclasses.dataclass(frozen=True)
class Method:
    """One method of the comparison.

    Attributes:
        name: its `--method` name.
        description: one line, for `--help` and tables.
        scratch_teacher: whether it trains a scratch teacher with the student.
        expert: whether it needs a trained expert (stage 1 of a run).
        searched: the loss options (`TrainConfig` fields) the tuner searches for it.
        distiller: built as Keras's `Distiller` (Hinton KD) rather than `CTKD`.
    """

    name: str
    description: str
    scratch_teacher: bool
    expert: bool
    searched: tuple
    distiller: bool = False

    @property
    def multi_worker(self):
        """Whether it trains under `MultiWorkerMirroredStrategy`: Keras's `Distiller` does not
        (keras-team/keras#20585; `CTKD` works around it)."""
        return not self.distiller

    def build(self, config, student, scratch_teacher=None, expert=None, preprocessing=None):
        """The method's model over the networks, with `config`'s loss options (not compiled).

        `preprocessing`: `CTKD`'s, by role (`pixels.preprocessing`: the networks that take
        other pixel values than the pipeline's); the KD baseline feeds every network the
        pipeline's images, and refuses it.

        A loss option of a teacher the method does not have is not used, so one config
        serves every method: the hint's options need the scratch teacher, the
        attention's and the expert's KD the expert, and `attention_target` and
        `scratch_kd_weight` both (CTKD's choices: otherwise the attention guides the one
        trained network, the student).
        """
        if self.distiller:
            if preprocessing:
                raise ValueError(
                    f"--method={self.name} (Keras's Distiller) feeds every network the pipeline's images, "
                    f"so it cannot convert pixels or resize images for {', '.join(sorted(preprocessing))} "
                    "(--*_pixels, --expert_image_size): use the same "
                    "KD with --method=at --attention_weight=0 --expert_kd_weight=1, which can."
                )
            return hinton_kd(student, expert, config.kd_temperature, config.kd_alpha)
        both = self.scratch_teacher and self.expert
        pairs = networks.parse_pairs(config.attention_pairs) if self.expert else None
        if isinstance(pairs, list):  # named on the command line: errors name the flag
            guided = [("student", student)] + ([("scratch_teacher", scratch_teacher)] if both else [])
            for trained, expert_layer in pairs:
                for role, net, path in [
                    *((r, n, trained) for r, n in guided),
                    ("expert_teacher", expert, expert_layer),
                ]:
                    try:
                        networks.layer_at(net, path, role)
                    except ValueError as error:
                        raise ValueError(f"--attention_pairs={config.attention_pairs}: {error}") from None
        return CTKD(
            student=student,
            scratch_teacher=scratch_teacher if self.scratch_teacher else None,
            expert_teacher=expert if self.expert else None,
            attention_pairs=pairs,
            preprocessing={
                role: layer
                for role, layer in (preprocessing or {}).items()
                if {"student": student, "scratch_teacher": scratch_teacher, "expert_teacher": expert}[role]
                is not None
            }
            or None,
            **{name: getattr(config, name) for name in CTKD_OPTIONS} | self._unused_options(),
        )

    def _unused_options(self):
        """The loss options of the teachers this method does not have, off."""
        unused = {}
        if not (self.scratch_teacher and self.expert):
            unused.update(attention_target="student", scratch_kd_weight=0.0)
        if not self.scratch_teacher:
            unused.update(hint_weight=None, hint_when_correct=False)
        if not self.expert:
            unused.update(attention_weight=None, expert_kd_weight=0.0)
        return unused

    def compile(self, model, optimizer, **options):
        """Compiles a model of this method (`options`: `jit_compile`, `steps_per_execution`)."""
        if self.distiller:  # the student's loss and metric, named as CTKD's
            options.update(
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="student_accuracy")],
            )
        model.compile(optimizer=optimizer, **options)
        return model


_METHODS = (
    Method(
        "ctkd",
        "CTKD: the scratch teacher's hint and the expert's attention",
        scratch_teacher=True,
        expert=True,
        searched=("hint_weight", "attention_weight", "attention_target"),
    ),
    Method("student", "the student alone", scratch_teacher=False, expert=False, searched=()),
    Method(
        "kd",
        "Hinton KD from the expert's logits (keras.distillation)",
        scratch_teacher=False,
        expert=True,
        searched=("kd_temperature", "kd_alpha"),
        distiller=True,
    ),
    Method(
        "at",
        "Attention Transfer from the expert",
        scratch_teacher=False,
        expert=True,
        searched=("attention_weight",),
    ),
    Method(
        "rl",
        "Rocket Launching: the scratch teacher's hint",
        scratch_teacher=True,
        expert=False,
        searched=("hint_weight",),
    ),
)
METHODS = {method.name: method for method in _METHODS}


def names():
    """The methods' names, CTKD first, then the baselines."""
    return tuple(METHODS)


def get(name):
    """The `Method` of a name.

    Raises:
        ValueError: for an unknown name.
    """
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}; known: {', '.join(METHODS)}.")
    return METHODS[name]
