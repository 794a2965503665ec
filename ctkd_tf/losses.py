"""CTKD loss terms: per-example functions on tensors, and Keras distillation losses.

Each function returns one value per example, shape `(batch,)`, in float32; the
reduction over the (global) batch happens once, in the training step.
"""

import functools

import keras
import tensorflow as tf


def cross_entropy(labels, logits):
    """Softmax cross-entropy of integer labels against logits, per example."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(tf.reshape(labels, [-1]), tf.int32),
        logits=tf.cast(logits, tf.float32),
    )


def fixed_order_sum(values):
    """`((v0 + v1) + v2) + ...`: unlike `tf.add_n`, the same rounding whatever order ops run in."""
    return functools.reduce(tf.add, values)


def correct(labels, logits):
    """1.0 where the top class of `logits` is the integer label, else 0.0, per example (float32)."""
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    return tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32)


def attention_map(features):
    """The spatial attention map `a(A)` of Zagoruyko & Komodakis (2017).

    Args:
        features: activations `(batch, height, width, channels)`.

    Returns:
        `(batch, height * width)`: the channel mean of the squared activations,
        flattened and L2-normalised per example.

    The map does not change with the activations' scale, so each example's activations are
    first divided by a power of two near their largest magnitude (`power_of_two_scale`):
    exact in floating point, the same map, and finite squares for any finite activations
    (1e20 squared overflows float32).
    """
    features = tf.cast(features, tf.float32)
    features *= power_of_two_scale(features)
    energy = tf.reduce_mean(tf.square(features), axis=-1)
    return tf.math.l2_normalize(tf.reshape(energy, [tf.shape(energy)[0], -1]), axis=-1)


def power_of_two_scale(features):
    """Per example, `2^-k` with `2^k <= max |features| < 2^(k+1)`: `(batch, 1, ..., 1)` float32, a
    constant for the gradient. Multiplying by a power of two only moves the exponent: no rounding."""
    peak = tf.reduce_max(tf.abs(features), axis=list(range(1, features.shape.rank)), keepdims=True)
    exponent = tf.bitwise.bitwise_and(tf.bitwise.right_shift(tf.bitcast(peak, tf.int32), 23), 0xFF)
    # 2^-(exponent - 127) has the biased exponent 254 - exponent; kept normal (1..254).
    scale = tf.bitcast(tf.bitwise.left_shift(tf.clip_by_value(254 - exponent, 1, 254), 23), tf.float32)
    return tf.stop_gradient(scale)


def pooling_factor(size, target_size):
    """`(factor, which)`: the integer factor by which one `(height, width)` is the other's, and
    which is larger (0: `size`, 1: `target_size`; factor 1: equal sizes).

    Raises:
        ValueError: when the sizes are not equal or an integer multiple of each other in both
            dimensions by the same factor.
    """
    size, target_size = tuple(size), tuple(target_size)
    for which, (large, small) in enumerate(((size, target_size), (target_size, size))):
        factor = large[0] // small[0] if small[0] else 0
        if factor >= 1 and large == (small[0] * factor, small[1] * factor):
            return factor, which
    raise ValueError(
        f"maps of spatial sizes {size} and {target_size}, which are not an integer multiple of "
        "each other; pair layers of equal sizes, or sizes in a ratio of 2, 4, ..."
    )


def match_sizes(features, target_features):
    """Both activations at the smaller one's spatial size: the larger average-pooled by the integer
    factor between them (as RepDistiller's Attention Transfer does)."""
    factor, which = pooling_factor(features.shape[1:3], target_features.shape[1:3])
    if factor == 1:
        return features, target_features
    pool = functools.partial(tf.nn.avg_pool2d, ksize=factor, strides=factor, padding="VALID")
    if which == 0:
        return pool(tf.cast(features, tf.float32)), target_features
    return features, pool(tf.cast(target_features, tf.float32))


def attention_transfer(features, target_features):
    """The attention transfer term, per example.

    `sum_j mean_hw (a(A_j) - a(T_j))^2` over the matching points `j`; maps of sizes
    that differ by an integer factor are first matched (`match_sizes`).

    Args:
        features: list of activations of the trained network, one per point.
        target_features: list of activations of the expert, one per point.

    Returns:
        `(batch,)` float32.
    """
    terms = []
    for a, t in zip(features, target_features, strict=True):
        a, t = match_sizes(a, t)
        terms.append(tf.reduce_mean(tf.square(attention_map(a) - attention_map(t)), axis=-1))
    return fixed_order_sum(terms)


def hint(teacher_logits, student_logits):
    """The Rocket Launching hint, per example: `sum_c (stop_grad(z_t) - z_s)^2`.

    The gradient is blocked toward the teacher: this term trains only the student.
    """
    teacher_logits = tf.stop_gradient(tf.cast(teacher_logits, tf.float32))
    return tf.reduce_sum(tf.square(teacher_logits - tf.cast(student_logits, tf.float32)), -1)


def knowledge_distillation(teacher_logits, student_logits, temperature):
    """Hinton et al.'s KD term, per example: `T^2 KL(softmax(z_t/T) || softmax(z_s/T))`.

    Computed from `log_softmax` (no clipped probabilities); the teacher is a constant.
    Classes the teacher gives probability 0 (logits far below its top one) add 0, also
    where the student's log-probability underflows to -inf (`0 * inf` would be NaN).
    """
    t = tf.stop_gradient(tf.cast(teacher_logits, tf.float32)) / temperature
    s = tf.cast(student_logits, tf.float32) / temperature
    log_p_t = tf.nn.log_softmax(t, axis=-1)
    log_p_s = tf.nn.log_softmax(s, axis=-1)
    p_t = tf.exp(log_p_t)
    taken = p_t > 0
    # Both branches finite before the select, so that its gradient is too.
    gap = tf.where(taken, log_p_t, 0.0) - tf.where(taken, log_p_s, 0.0)
    kl = tf.reduce_sum(tf.where(taken, p_t * gap, 0.0), axis=-1)
    return temperature**2 * kl


def _global_batch_mean(per_example):
    # Keras's distillation losses return a scalar per replica; dividing by the
    # global batch, as Keras's own losses do, keeps the summed gradients right
    # under a tf.distribute strategy.
    return tf.nn.compute_average_loss(per_example)


@keras.saving.register_keras_serializable(package="ctkd_tf")
class AttentionTransfer(keras.distillation.FeatureDistillation):
    """Attention transfer at one matching point, for `keras.distillation.Distiller`.

    Use one instance per matching point (their sum is `attention_transfer`), each
    with the method's `attention_weight` as its distillation loss weight.

    Args:
        teacher_layer_name: the teacher's layer whose output is the target map.
        student_layer_name: the student's layer; defaults to the teacher's name.
    """

    def __init__(self, teacher_layer_name, student_layer_name=None):
        super().__init__(
            loss="mse",  # unused: only satisfies the parent's output-structure check
            teacher_layer_name=teacher_layer_name,
            student_layer_name=student_layer_name or teacher_layer_name,
        )

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        return _global_batch_mean(attention_transfer([student_outputs], [teacher_outputs]))

    def get_config(self):
        return {
            "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="ctkd_tf")
class KnowledgeDistillation(keras.distillation.LogitsDistillation):
    """Hinton KD from logits for `keras.distillation.Distiller`: `T^2` times the KL.

    Keras's own `LogitsDistillation` computes the KL from clipped probabilities;
    this one uses `log_softmax`. With `Distiller(student_loss_weight=1 - alpha)` the
    total is `(1 - alpha) CE + alpha T^2 KL`, the paper's KD baseline (Hinton et al.).

    Args:
        temperature: the softmax temperature `T` (> 0).
    """

    def __init__(self, temperature=4.0):
        super().__init__(temperature=temperature)

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        return _global_batch_mean(knowledge_distillation(teacher_outputs, student_outputs, self.temperature))

    def get_config(self):
        return {"temperature": self.temperature}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
