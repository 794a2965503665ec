"""Networks by name: the zoo's CIFAR-style wide residual networks, Keras Applications, `.keras` files."""

import importlib
import os

import keras
import numpy as np

from ctkd_tf.batchnorm import FusedBatchNormalization
from ctkd_tf.pixels import Pixels

# Registry name -> (depth, width). Depth is 6n+4 with n basic blocks per group.
_WRN = {
    "wrn16_1": (16, 1),
    "wrn16_2": (16, 2),
    "wrn40_1": (40, 1),
    "wrn40_2": (40, 2),
    "wrn28_10": (28, 10),
}

# The batch norm's moving-average momentum of Keras Applications networks trained from random
# weights here, at most: Keras's MobileNets use 0.999, made for ImageNet's 10,000 steps an
# epoch; after a few hundred steps on a photo folder, their moving statistics are still
# mostly the initial ones, and the network's inference (an int8 export's calibration too)
# sees activations thousands of times too large.
BATCHNORM_MOMENTUM = 0.99

# The layer names of the residual groups' outputs: the attention matching points.
GROUP_OUTPUTS = ("group1", "group2", "group3")


def names():
    """Returns the registry names of the zoo's networks, sorted."""
    return sorted(_WRN)


def application_names():
    """The Keras Applications networks a name may give, sorted (`MobileNetV3Small`, ...)."""
    return sorted(
        name
        for name in dir(keras.applications)
        if name[0].isupper() and callable(getattr(keras.applications, name))
    )


def _application(identifier):
    name = identifier.removeprefix("keras.applications.")
    return getattr(keras.applications, name) if name in application_names() else None


def is_network(identifier):
    """Whether `identifier` names a network `get` can give: a zoo name, a Keras Applications name,
    or an existing `.keras` file."""
    return (
        identifier in _WRN
        or _application(identifier) is not None
        or (identifier.endswith(".keras") and os.path.isfile(identifier))
    )


NETWORK_NAMES = (
    f"one of the zoo's networks ({', '.join(sorted(_WRN))}), a Keras Applications name "
    "(MobileNetV3Small, EfficientNetB0, ...) or a .keras file"
)


def get(identifier, num_classes, input_shape=(32, 32, 3), mean=None, std=None, **kwargs):
    """Builds a network by name: the zoo's, a Keras Applications one, or a saved one.

    Args:
        identifier: a zoo name (`"wrn16_1"`, see `names()`), a Keras Applications name
            (`"MobileNetV3Small"` or `"keras.applications.MobileNetV3Small"`: built with
            `weights=None` for `num_classes` and `input_shape`, logits out, behind a
            frozen 1x1 convolution that maps images normalised with `mean` and `std` to
            the pixel values the network's own `preprocess_input` would give), or a
            `.keras` file (loaded as it is: it must predict `num_classes` classes and
            take `input_shape`).
        num_classes: number of output logits.
        input_shape: `(height, width, channels)` of the images.
        mean, std: per-channel statistics (0-255 scale) the images were normalised with;
            for Keras Applications networks (None: 0 and 1, images of 0-255 pixels).
        **kwargs: `weight_decay`, `name`, and for the zoo the rest of `wrn`'s options;
            weight decay becomes an L2 regulariser on every trainable weight.

    Returns:
        A `keras.Model` mapping images to logits.

    Raises:
        ValueError: for an unknown name, or a network that cannot take these images or
            predicts other classes.
    """
    if identifier in _WRN:
        depth, width = _WRN[identifier]
        kwargs.setdefault("name", identifier)
        return wrn(depth, width, num_classes, input_shape, **kwargs)
    weight_decay = kwargs.pop("weight_decay", 0.0)
    name = kwargs.pop("name", None)
    application = _application(identifier)
    if application is not None:
        net = _build_application(application, num_classes, input_shape, mean, std, name)
    elif identifier.endswith(".keras") and os.path.isfile(identifier):
        net = _load(identifier, num_classes, input_shape)
    else:
        raise ValueError(f"Unknown network {identifier!r}: expected {NETWORK_NAMES}.")
    if weight_decay:
        for variable in net.trainable_weights:
            variable.regularizer = keras.regularizers.L2(weight_decay / 2)
    return net


def pretrained(
    identifier,
    init,
    num_classes,
    input_shape=(32, 32, 3),
    mean=None,
    std=None,
    weight_decay=0.0,
    name=None,
    pixels="dataset",
    role="expert",
):
    """A pretrained backbone with a new classification head, to fine-tune to `num_classes` classes.

    Args:
        identifier: the network, a Keras Applications name, when `init` is `"imagenet"` or
            a weights file; ignored when `init` is a `.keras` file.
        init: `"imagenet"` (Keras's ImageNet weights: downloads), the weights file of the
            Applications network without its top (`.h5`/`.weights.h5`, as Keras's
            `*_notop.h5` files), or a `.keras` file of any network, whose last layer is
            replaced by the new head (the rest is the backbone).
        num_classes, input_shape, mean, std, weight_decay, name: as for `get`.
        pixels: for a `.keras` `init`, the pixel values it takes (`pixels.CONVENTIONS`):
            a `Pixels` layer before its backbone converts the normalised images to them.
        role: `"expert"`, `"student"` or `"scratch_teacher"`: which flags errors name
            (`--expert_init`, `--expert`).

    Returns:
        `(network, backbone)`: the network mapping images to logits, and its pretrained
        part (a layer of it), to freeze while the new head learns first.

    Raises:
        ValueError: naming `--<role>_init`, for weights that do not fit the network, a
            download that failed, or an `identifier` that is not a Keras Applications name.
    """
    flag = f"--{role}_init"
    inputs = keras.Input(tuple(input_shape), name="images")
    if init.endswith(".keras"):
        if not os.path.isfile(init):
            raise ValueError(f"{flag}={init}: no such file.")
        loaded = keras.models.load_model(init)
        if not getattr(loaded, "outputs", None) or len(loaded.layers) < 2:
            raise ValueError(
                f"{flag}={init}: a functional or Sequential network is needed, to cut off its head."
            )
        backbone = keras.Model(loaded.inputs, loaded.layers[-2].output, name="backbone")
        x = inputs if pixels == "dataset" else Pixels(pixels, mean, std, name="pixels")(inputs)
        try:
            features = backbone(x)
        except ValueError as error:
            raise ValueError(
                f"{flag}={init} takes inputs of shape {tuple(loaded.inputs[0].shape[1:])}, the data "
                f"set gives {tuple(input_shape)} ({error}); pass --image_size."
            ) from None
    else:
        application = _application(identifier)
        if application is None:
            raise ValueError(
                f"{flag}={init} needs a Keras Applications --{role} (MobileNetV3Small, ...), got "
                f"{identifier!r}; or give a .keras file as {flag}."
            )
        try:
            backbone = application(
                input_shape=tuple(input_shape), weights=init, include_top=False, pooling="avg"
            )
        except ValueError as error:
            raise ValueError(
                f"{flag}={init} does not fit keras.applications.{application.__name__}: {error}"
            ) from None
        except Exception as error:  # Keras's get_file: the download failed (offline?)
            raise ValueError(
                f"{flag}={init}: Keras could not download the ImageNet weights of "
                f"{application.__name__} ({error}). Offline? Download the file elsewhere "
                f"(keras.applications.{application.__name__}(weights='imagenet', include_top=False) "
                f"fetches it into ~/.keras/models/), then pass {flag}=<that file>."
            ) from None
        adapter = keras.layers.Conv2D(3, 1, trainable=False, name="pixels")
        features = backbone(adapter(inputs))
        adapter.set_weights(
            [part[None, None] if part.ndim == 2 else part for part in _pixel_map(application, mean, std)]
        )
    if len(features.shape) == 4:
        features = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="head")(features)
    net = keras.Model(inputs, logits, name=name or "expert")
    if weight_decay:
        for variable in net.trainable_weights:
            variable.regularizer = keras.regularizers.L2(weight_decay / 2)
    return net, backbone


def _all_layers(layer):
    """The layers inside `layer`, nested models entered, depth first."""
    for sub in getattr(layer, "layers", None) or []:
        yield sub
        yield from _all_layers(sub)


def freeze_batchnorm(network):
    """Freezes every batch-norm layer of `network` (nested ones too): Keras then runs them in
    inference mode, with their moving statistics, even when the network trains.

    What Keras's transfer-learning guide asks of a pretrained backbone being fine-tuned
    (its `base_model(x, training=False)` does not hold in Keras 3, where a model called
    with `training=True` passes it on to every layer).
    """
    for layer in _all_layers(network):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def _build_application(application, num_classes, input_shape, mean, std, name):
    try:
        body = application(
            input_shape=tuple(input_shape), weights=None, classes=num_classes, classifier_activation=None
        )
    except ValueError as error:
        raise ValueError(
            f"keras.applications.{application.__name__} cannot take "
            f"{'x'.join(map(str, input_shape[:2]))} images ({error}): resize them (--image_size) "
            "or choose another network."
        ) from None
    for layer in _all_layers(body):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = min(layer.momentum, BATCHNORM_MOMENTUM)
    inputs = keras.Input(tuple(input_shape), name="images")
    adapter = keras.layers.Conv2D(3, 1, trainable=False, name="pixels")
    outputs = body(adapter(inputs))
    kernel, bias = _pixel_map(application, mean, std)
    adapter.set_weights([kernel[None, None], bias])
    return keras.Model(inputs, outputs, name=name or body.name)


def _pixel_map(application, mean, std):
    """`(kernel (3, 3), bias (3,))`: normalised images to what `preprocess_input` makes of their pixels.

    Every Keras Applications `preprocess_input` is affine per pixel (a scale, a shift, for
    some a swap of RGB to BGR): measured on probes, composed with the un-normalisation.
    """
    preprocess = importlib.import_module(application.__module__).preprocess_input
    probes = np.array([[[[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [17, 130, 201]]]], "float32")
    out = np.asarray(preprocess(probes.copy()), np.float64)[0, 0]
    bias = out[0]
    matrix = (out[1:4] - bias) / 255.0  # row c: the outputs of input channel c per unit
    if not np.allclose(probes[0, 0, 4] @ matrix + bias, out[4], atol=1e-3):
        raise ValueError(f"keras.applications.{application.__name__}'s preprocess_input is not affine.")
    mean = np.zeros(3) if mean is None else np.asarray(mean, np.float64)
    std = np.ones(3) if std is None else np.asarray(std, np.float64)
    # raw = x * std + mean; out = raw @ matrix + bias
    return (std[:, None] * matrix).astype("float32"), (mean @ matrix + bias).astype("float32")


def _load(path, num_classes, input_shape):
    net = keras.models.load_model(path)
    classes = net.outputs[0].shape[-1] if getattr(net, "outputs", None) else None
    if classes is not None and classes != num_classes:
        raise ValueError(
            f"{path} predicts {classes} classes but the data set has {num_classes}: fine-tune it to "
            "these classes first (a new head), then give that file."
        )
    if getattr(net, "inputs", None):
        expected = tuple(net.inputs[0].shape[1:])
        if len(expected) != len(input_shape) or any(
            e is not None and e != i for e, i in zip(expected, input_shape, strict=True)
        ):
            raise ValueError(
                f"{path} takes images of shape {expected}, the data set gives {tuple(input_shape)}: "
                "pass --image_size to resize them."
            )
    return net


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
