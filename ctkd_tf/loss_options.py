"""The loss options, each defined once: name, default, check and help.

`CTKD` takes them as arguments (defaults, checks and `get_config` from here),
`hinton_kd` its two, `TrainConfig` inherits them as fields (the flags of the same
names), the methods pass them on by name and the tuner searches them by name.
"""

import dataclasses

from ctkd_tf.options import at_least, check_fields, fraction, option, positive

ATTENTION_TARGETS = ("student", "scratch", "both")
# The hint: the squared logit difference (Rocket Launching, the paper) or the
# temperature-softened KL of online distillation (Zhang et al.'s mutual learning).
HINT_LOSSES = ("mse", "kl")


@dataclasses.dataclass(frozen=True)
class LossOptions:
    """The weights and settings of the loss terms (a weight of None: `CTKD`'s default for its teachers)."""

    attention_target: str = option(
        "student",
        "Network(s) the expert's attention guides: student (the paper), scratch (the reference code), both.",
        choices=ATTENTION_TARGETS,
    )
    # The paper's weights (its parents'): the Rocket Launching hint weight and the Attention
    # Transfer weight (with the per-point spatial mean).
    hint_weight: float = option(0.03, "Weight of the hint.", at_least(0))
    attention_weight: float = option(1000.0, "Attention weight.", at_least(0))
    hint_loss: str = option(
        "mse", "mse: the paper's squared logit difference; kl: T^2 KL.", choices=HINT_LOSSES
    )
    hint_temperature: float = option(4.0, "Softmax temperature of --hint_loss=kl.", positive)
    expert_kd_weight: float = option(
        0.0,
        "CTKD/AT: weight of an extra KD term from the expert's logits (at --kd_temperature); 0: the paper.",
        at_least(0),
    )
    kd_temperature: float = option(4.0, "KD softmax temperature.", positive)
    scratch_kd_weight: float = option(
        0.0,
        "CTKD: weight of a KD term from the expert's logits into the scratch teacher; 0: the paper.",
        at_least(0),
    )
    hint_when_correct: bool = option(
        False, "The hint only on examples the scratch teacher gets right; off: the paper."
    )
    kd_alpha: float = option(0.9, "KD (Keras's Distiller): the distillation term's weight.", fraction)

    def __post_init__(self):
        check_fields(self)


DEFAULTS = LossOptions()
# `CTKD`'s arguments among them (`kd_alpha` is the Distiller's).
CTKD_OPTIONS = tuple(f.name for f in dataclasses.fields(LossOptions) if f.name != "kd_alpha")
