"""Pixel conventions: the input values a network was trained on, and the layer that makes them.

The pipeline gives images normalised with the data set's per-channel mean and std
(`build_dataset`); a network read from a file may have been trained on other values:
0-255 pixels (a `Rescaling` layer inside), `[0, 1]`, `[-1, 1]`, ImageNet's mean and std,
or Caffe's BGR minus ImageNet's means. Each convention is affine per channel (Caffe's
also reverses the channels), so `Pixels` is one multiply-add.

    --expert_weights=expert.keras --expert_pixels=raw
    CTKD(..., preprocessing={"expert_teacher": Pixels("raw", mean, std)})
"""

import keras
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # of [0, 1] pixels, RGB
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN = (103.939, 116.779, 123.68)  # of 0-255 pixels, BGR

# name -> (scale, offset) per RGB channel of 0-255 pixels: value = pixel * scale + offset.
_AFFINE = {
    "raw": ((1.0,) * 3, (0.0,) * 3),
    "unit": ((1 / 255,) * 3, (0.0,) * 3),
    "symmetric": ((1 / 127.5,) * 3, (-1.0,) * 3),
    "imagenet": (
        tuple(1 / (255 * s) for s in IMAGENET_STD),
        tuple(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)),
    ),
    "caffe": ((1.0,) * 3, tuple(-m for m in reversed(CAFFE_MEAN))),  # in RGB order, before the swap
}
CONVENTIONS = ("dataset", *_AFFINE)
DESCRIPTIONS = {
    "dataset": "the data set's normalisation, (pixels - mean) / std (what this project's own networks take)",
    "raw": "0-255 pixels (a network with its own Rescaling inside)",
    "unit": "[0, 1] pixels",
    "symmetric": "[-1, 1] pixels (MobileNet's, Inception's preprocess_input)",
    "imagenet": "ImageNet's mean and std on [0, 1] pixels (torchvision, DenseNet)",
    "caffe": "BGR pixels minus ImageNet's means (ResNet50's, VGG's preprocess_input)",
}
FLAG_HELP = "; ".join(f"{name}: {text}" for name, text in DESCRIPTIONS.items())


def affine(convention, mean=None, std=None, source="dataset"):
    """`(scale, offset, reverse_channels)` mapping `source` images to `convention`'s values.

    Args:
        convention: one of `CONVENTIONS`.
        mean, std: the data set's per-channel normalisation (0-255 scale); needed when
            `source` or `convention` is `"dataset"`.
        source: `"dataset"` (the pipeline's normalised images) or `"raw"` (0-255 pixels).

    Returns:
        float64 arrays `scale`, `offset` of shape (3,) and a bool: the values are
        `x * scale + offset`, channels reversed afterwards when the bool is True.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"Unknown pixel convention {convention!r}; known: {', '.join(CONVENTIONS)}.")
    if source not in ("dataset", "raw"):
        raise ValueError(f"source must be 'dataset' or 'raw', got {source!r}.")
    needs_statistics = "dataset" in (convention, source)
    if needs_statistics and (mean is None or std is None):
        raise ValueError(
            f"The {convention!r} convention from {source!r} images needs the data set's mean and std."
        )
    mean = np.zeros(3) if mean is None else np.asarray(mean, np.float64)
    std = np.ones(3) if std is None else np.asarray(std, np.float64)
    # raw = x * in_scale + in_offset
    in_scale, in_offset = (std, mean) if source == "dataset" else (np.ones(3), np.zeros(3))
    if convention == "dataset":
        scale, offset = 1 / std, -mean / std
    else:
        scale, offset = (np.asarray(v, np.float64) for v in _AFFINE[convention])
    return in_scale * scale, in_offset * scale + offset, convention == "caffe"


@keras.saving.register_keras_serializable(package="ctkd_tf")
class Pixels(keras.layers.Layer):
    """Maps images of one convention to a network's: `x * scale + offset` per channel.

    Args:
        convention: the values the network takes, one of `CONVENTIONS`.
        mean, std: the data set's normalisation (0-255 scale), as `DatasetInfo` gives it.
        source: what the layer is given: `"dataset"`, the pipeline's normalised images
            (inside `CTKD`), or `"raw"`, 0-255 pixels (an exported model's input).
    """

    def __init__(self, convention, mean=None, std=None, source="dataset", **kwargs):
        super().__init__(**kwargs)
        scale, offset, self._reverse = affine(convention, mean, std, source)
        self.convention, self.source = convention, source
        self.mean = None if mean is None else [float(m) for m in mean]
        self.std = None if std is None else [float(s) for s in std]
        self._scale = scale.astype("float32")
        self._offset = offset.astype("float32")

    def call(self, images):
        x = keras.ops.cast(images, "float32") * self._scale + self._offset
        return keras.ops.flip(x, axis=-1) if self._reverse else x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(convention=self.convention, mean=self.mean, std=self.std, source=self.source)
        return config


def preprocessing(conventions, mean, std):
    """`CTKD`'s `preprocessing` for `{role: convention}`: a `Pixels` layer for each role not fed
    the data set's normalisation as it is."""
    return {
        role: Pixels(convention, mean, std, name=f"{role}_pixels")
        for role, convention in conventions.items()
        if convention != "dataset"
    }


def guess(network):
    """The convention a network's first layers suggest (`"raw"` for a `Rescaling(1/255)` or
    `Rescaling(1/127.5, -1)` right after its input), or None when they say nothing."""
    for layer in getattr(network, "layers", [])[:4]:
        if isinstance(layer, keras.layers.Rescaling):
            return "raw"
        if isinstance(layer, keras.Model):
            return guess(layer)
    return None
