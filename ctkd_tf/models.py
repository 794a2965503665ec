"""Model zoo: CIFAR-style pre-activation wide residual networks, by registry name."""

import keras

from ctkd_tf.batchnorm import FusedBatchNormalization

# Registry name -> (depth, width). Depth is 6n+4 with n basic blocks per group.
_WRN = {
    "wrn16_1": (16, 1),
    "wrn16_2": (16, 2),
    "wrn40_1": (40, 1),
    "wrn40_2": (40, 2),
    "wrn28_10": (28, 10),
}

# The layer names of the residual groups' outputs: the attention matching points.
GROUP_OUTPUTS = ("group1", "group2", "group3")


def names():
    """Returns the registry names of the zoo's networks, sorted."""
    return sorted(_WRN)


def get(identifier, num_classes, input_shape=(32, 32, 3), **kwargs):
    """Builds a zoo network by registry name.

    Args:
        identifier: a registry name, for example `"wrn16_1"` (see `names()`).
        num_classes: number of output logits.
        input_shape: `(height, width, channels)` of the images.
        **kwargs: passed on to `wrn` (`weight_decay`, `name`, ...).

    Returns:
        A functional `keras.Model` mapping images to logits.

    Raises:
        ValueError: if `identifier` is not in the registry.
    """
    if identifier not in _WRN:
        raise ValueError(f"Unknown model {identifier!r}; the zoo has: {', '.join(names())}.")
    depth, width = _WRN[identifier]
    kwargs.setdefault("name", identifier)
    return wrn(depth, width, num_classes, input_shape, **kwargs)


def wrn(
    depth,
    width,
    num_classes,
    input_shape=(32, 32, 3),
    weight_decay=0.0,
    synchronized_batchnorm=False,
    fused_batchnorm=True,
    name=None,
):
    """A pre-activation wide residual network (Zagoruyko & Komodakis, 2016).

    The layout of the Attention Transfer and CTKD reference code: a 3x3 stem of 16
    channels, three groups of `(depth - 4) / 6` basic blocks of widths 16k, 32k,
    64k with strides 1, 2, 2, then BN-ReLU, global average pooling and a dense
    layer. The output of group `g` is the layer named `group{g}`.

    Args:
        depth: total depth, `6 n + 4`.
        width: the widening factor `k`.
        num_classes: number of output logits.
        input_shape: `(height, width, channels)`; any spatial size.
        weight_decay: the coefficient of PyTorch-style SGD weight decay on all
            weights, realised as an L2 term `weight_decay / 2 * ||w||^2` so that its
            gradient is `weight_decay * w`.
        synchronized_batchnorm: synchronise batch-norm statistics across replicas
            (Keras's own layer, which computes cross-replica moments).
        fused_batchnorm: batch norm with TensorFlow's fused kernel
            (`batchnorm.FusedBatchNormalization`: the same maths, faster, saved as
            Keras's layer); False uses `keras.layers.BatchNormalization` as it is.
        name: the model's name; defaults to `wrn{depth}_{width}`.

    Returns:
        A functional `keras.Model` mapping images to logits (float32).

    Raises:
        ValueError: if `depth` is not of the form `6 n + 4`, or `width < 1`.
    """
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"WRN depth must be 6n+4 with n >= 1, got {depth}.")
    if width < 1:
        raise ValueError(f"WRN width must be >= 1, got {width}.")
    blocks = (depth - 4) // 6
    reg = keras.regularizers.L2(weight_decay / 2) if weight_decay else None

    def conv(filters, kernel, stride, label):
        return keras.layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding="same",
            use_bias=False,
            kernel_initializer="he_normal",
            kernel_regularizer=reg,
            name=label,
        )

    def bn_relu(x, label):
        # PyTorch's BatchNorm defaults (momentum 0.1, eps 1e-5), as in the reference.
        fused = fused_batchnorm and not synchronized_batchnorm
        batchnorm = FusedBatchNormalization if fused else keras.layers.BatchNormalization
        x = batchnorm(
            momentum=0.9,
            epsilon=1e-5,
            gamma_regularizer=reg,
            beta_regularizer=reg,
            synchronized=synchronized_batchnorm,
            name=f"{label}_bn",
        )(x)
        return keras.layers.ReLU(name=f"{label}_relu")(x)

    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = conv(16, 3, 1, "stem_conv")(inputs)
    channels = 16
    for g, (filters, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
        filters *= width
        for b in range(blocks):
            label = f"group{g}_block{b + 1}"
            s = stride if b == 0 else 1
            o = bn_relu(x, f"{label}_pre")
            y = conv(filters, 3, s, f"{label}_conv1")(o)
            y = bn_relu(y, f"{label}_mid")
            y = conv(filters, 3, 1, f"{label}_conv2")(y)
            # The projection shortcut takes the pre-activated input, as in the reference.
            shortcut = x if channels == filters and s == 1 else conv(filters, 1, s, f"{label}_shortcut")(o)
            x = keras.layers.Add(name=f"group{g}" if b == blocks - 1 else f"{label}_add")([y, shortcut])
            channels = filters
    x = bn_relu(x, "head")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = keras.layers.Dense(
        num_classes,
        kernel_regularizer=reg,
        bias_regularizer=reg,
        dtype="float32",
        name="logits",
    )(x)
    return keras.Model(inputs, logits, name=name or f"wrn{depth}_{width}")
