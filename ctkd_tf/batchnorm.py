"""Batch normalisation with TensorFlow's fused training kernel, saved as Keras's own layer."""

import keras
import tensorflow as tf


class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computing training steps with one fused op.

    Keras 3 normalises a training batch with separate ops (`moments`, then
    `batch_normalization`), which cost about a fifth of these networks' training
    steps on CPUs. On the TensorFlow backend this layer uses `FusedBatchNormV3`
    instead (one op forward, one backward; oneDNN's kernel where it is on) for
    4-D channels-last inputs, with the same maths: batch statistics of the
    inputs, the biased variance, and Keras's moving-average update (equal to
    Keras's layer within float rounding, not bit for bit). Everything else
    (inference, masks, batch renormalisation, statistics synchronised
    across replicas, other ranks and axes, other backends) is Keras's own code.

    It saves as `keras.layers.BatchNormalization` (same configuration and
    weights), so a saved model loads, and runs for inference, with plain Keras:
    deployment needs no `ctkd_tf`.

    Under a `tf.distribute` strategy of several replicas (and without
    `synchronized`), every training call, fused or not, also sets all replicas'
    copies of the moving statistics to their mean, where Keras's layer lets each
    replica keep its own: what such a run evaluates is then what it saves.
    """

    def call(self, inputs, training=None, mask=None):
        return fused_call(self, inputs, training, mask)


# Saved models name the layer `keras.layers.BatchNormalization` (the class Keras
# resolves `module` + `class_name` to when loading): its configuration and weights
# are exactly those of Keras's layer, and only the training kernel differs.
FusedBatchNormalization.__module__ = "keras.layers"
FusedBatchNormalization.__name__ = "BatchNormalization"


class Fused(keras.layers.Layer):
    """A `keras.layers.BatchNormalization` layer run with the fused training kernel, the layer left as it is.

    `CTKD` reads the networks it trains through a model of their own layers
    (`networks.extractor`) in which each of their `keras.layers.BatchNormalization`
    layers is called through one of these: the same weights (the layer's own
    variables), the same maths as `FusedBatchNormalization`, and the network itself,
    its layers' classes and its saved file unchanged.
    """

    def __init__(self, layer, **kwargs):
        super().__init__(name=layer.name, dtype=layer.dtype_policy, **kwargs)
        self.layer = layer
        self.supports_masking = True

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, inputs, training=None, mask=None):
        return fused_call(self.layer, inputs, training, mask)


def fused_call(layer, inputs, training, mask):
    """What `layer` (a `keras.layers.BatchNormalization`) computes, training steps fused where possible."""
    if not _fusable(layer, inputs, training, mask):
        # Inference too: a saved model then predicts bit for bit what this one does.
        outputs = keras.layers.BatchNormalization.call(layer, inputs, training=training, mask=mask)
    else:
        outputs = _fused_training_call(layer, inputs)
    if training and layer.trainable and not layer.synchronized:
        _average_moving_statistics_over_replicas(layer)
    return outputs


def _fusable(layer, inputs, training, mask):
    return (
        training
        and layer.trainable
        and mask is None
        and not layer.synchronized
        and not layer.renorm
        and keras.backend.backend() == "tensorflow"
        and len(inputs.shape) == 4
        and layer.axis in (3, -1)
    )


def _average_moving_statistics_over_replicas(layer):
    """Sets every replica's copy of the moving statistics to their mean over the replicas.

    Keras 3 mirrors them without aggregation: each replica's update, from its own
    share of the batch, writes only its own copy, so the copies drift apart. A saved
    model (and a checkpoint) then holds the first replica's, while evaluation in the
    same process normalises each replica's share with its own: the accuracy a
    multi-replica run reports would not be that of the model it saves. Averaged after
    every update, the copies stay equal, at the values TF-Keras saved (the mean over
    replicas of each replica's moving average; the update is linear). One replica,
    the default strategy included: nothing to do, and nothing traced.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return
    variables = layer.non_trainable_variables
    means = context.all_reduce("mean", [tf.convert_to_tensor(v.value) for v in variables])
    for variable, mean in zip(variables, means, strict=True):
        variable.assign(mean)


def _fused_training_call(layer, inputs):
    channels = inputs.shape[-1]
    scale = layer.gamma if layer.scale else tf.ones([channels])
    offset = layer.beta if layer.center else tf.zeros([channels])
    # float16 and bfloat16 inputs are normalised in float32 inside the op.
    x = inputs if inputs.dtype in (tf.float16, tf.bfloat16) else tf.cast(inputs, tf.float32)
    outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
        x=x,
        scale=tf.cast(scale, tf.float32),
        offset=tf.cast(offset, tf.float32),
        mean=tf.zeros([0]),
        variance=tf.zeros([0]),
        epsilon=layer.epsilon,
        exponential_avg_factor=1.0,
        data_format="NHWC",
        is_training=True,
    )
    # The op returns the unbiased variance for running averages; Keras
    # averages the biased one, with which the batch was normalised.
    count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
    variance = variance * tf.maximum(count - 1.0, 0.0) / count
    momentum = layer.momentum
    layer.moving_mean.assign(layer.moving_mean * momentum + mean * (1.0 - momentum))
    layer.moving_variance.assign(layer.moving_variance * momentum + variance * (1.0 - momentum))
    return tf.cast(outputs, layer.compute_dtype)
