"""Keras's `Distiller`, with the student's regularisation losses in its loss."""

import keras
import tensorflow as tf

from ctkd_tf import networks
from ctkd_tf.loss_options import DEFAULTS, LossOptions
from ctkd_tf.losses import KnowledgeDistillation, fixed_order_sum


class _ReplicaMean(keras.metrics.Mean):
    """A mean of losses that were scaled by 1 / replicas for the gradient; logs them unscaled."""

    def update_state(self, values, sample_weight=None):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return super().update_state(tf.cast(values, self.dtype) * replicas, sample_weight=sample_weight)


@keras.saving.register_keras_serializable(package="ctkd_tf")
class Distiller(keras.distillation.Distiller):
    """`keras.distillation.Distiller`, right under tf.distribute and with weight decay.

    Two fixes to Keras's own: its `compute_loss` leaves out `self.losses`, so weight
    decay given as kernel regularisers (the recipe's) would be ignored; and its
    trackers log the per-replica share of each loss, halved on two replicas. With
    `fused_batchnorm=True`, the student's batch norm trains with the fused kernel.
    """

    def __init__(self, *args, fused_batchnorm=False, **kwargs):
        super().__init__(*args, **kwargs)
        # The student, read through a model of its own layers (its batch norm fused);
        # a plain object, so that Keras does not track the same weights twice.
        self._student_view = networks.View(
            self.student, "student", strip_softmax=False, fused_batchnorm=fused_batchnorm
        )
        self.student_loss_tracker = _ReplicaMean(name="student_loss")
        self.distillation_loss_tracker = _ReplicaMean(name="distillation_loss")
        self.total_loss_tracker = _ReplicaMean(name="total_loss")

    def call(self, inputs, training=None, **kwargs):
        return self._student_view(inputs, training)[0]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        regularization = self.losses  # the frozen teacher's weights carry none here
        if regularization:
            loss += tf.nn.scale_regularization_loss(fixed_order_sum(regularization))
        return loss


def hinton_kd(
    student, teacher, temperature=DEFAULTS.kd_temperature, alpha=DEFAULTS.kd_alpha, fused_batchnorm=True
):
    """The KD baseline: `(1 - alpha) CE + alpha T^2 KL` from a frozen teacher.

    Args:
        student: the `keras.Model` to train.
        teacher: the pre-trained `keras.Model`, frozen.
        temperature: the softmax temperature `T`.
        alpha: the weight of the distillation term, in `[0, 1]`.
        fused_batchnorm: train the student's `keras.layers.BatchNormalization` layers
            with the fused kernel, the student left as it is (as `CTKD` does).

    Returns:
        A `Distiller`; compile it with the student's cross-entropy as `loss`.

    Raises:
        ValueError: for a network ending in a softmax layer (Keras's Distiller would take
            its probabilities as logits).
    """
    LossOptions(kd_temperature=temperature, kd_alpha=alpha)  # their checks
    for role, net in (("student", student), ("teacher", teacher)):
        softmax = networks.final_softmax(net)
        if softmax:
            raise ValueError(
                f"The {role} {net.name!r} ends in a softmax ({softmax!r}) and Keras's Distiller takes "
                "its outputs as logits: build it without (Keras Applications: "
                "classifier_activation=None), or use ctkd_tf.CTKD, which trains on the logits."
            )
    return Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=KnowledgeDistillation(temperature=temperature),
        student_loss_weight=1.0 - alpha,
        fused_batchnorm=fused_batchnorm,
    )
