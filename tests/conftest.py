"""Shared fixtures: tiny networks and data, so that every test runs in seconds."""

import importlib.util
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# What importing ctkd_tf first does on x86 (see ctkd_tf/__init__.py): test what users run.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices, for the distribution tests; set before TF starts.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from ctkd_tf import models  # noqa: E402


@pytest.fixture(scope="session")
def mirrored():
    """MirroredStrategy over the two logical CPUs: the one the runs of this process use
    (`distribute.make_strategy` gives one per set of devices: see there why)."""
    from ctkd_tf import distribute

    strategy = distribute.make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    return strategy


APPS = Path(__file__).resolve().parents[1] / "apps"


def load_app(script):
    """An app of apps/ imported as a module, once (its flags join absl's global FLAGS)."""
    if str(APPS) not in sys.path:
        sys.path.insert(0, str(APPS))
    name = f"{Path(script).stem}_app"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, APPS / script)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def run_main(app, *argv):
    """`app.main` on these command-line arguments, parsed into absl's FLAGS, which are reset after."""
    from absl import flags

    flags.FLAGS.unparse_flags()
    try:
        app.main(flags.FLAGS([*argv]))
    finally:
        flags.FLAGS.unparse_flags()


NUM_CLASSES = 5
IMAGE_SHAPE = (8, 8, 3)


def tiny_wrn(width=1, seed=0, name=None, **kwargs):
    """A WRN-10 (one block per group) on 8x8 images: group maps 8, 4, 2."""
    keras.utils.set_random_seed(seed)
    return models.wrn(10, width, NUM_CLASSES, IMAGE_SHAPE, name=name, **kwargs)


def tiny_cnn(channels=4, seed=0, name=None, l2=None):
    """A network without batch-norm, with taps `feat1` (8x8) and `feat2` (4x4)."""
    keras.utils.set_random_seed(seed)
    reg = keras.regularizers.L2(l2) if l2 else None
    conv = dict(padding="same", kernel_regularizer=reg)
    inputs = keras.Input(IMAGE_SHAPE)
    x = keras.layers.Conv2D(channels, 3, activation="relu", name="feat1", **conv)(inputs)
    x = keras.layers.Conv2D(2 * channels, 3, strides=2, name="feat2", **conv)(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    logits = keras.layers.Dense(NUM_CLASSES, kernel_regularizer=reg, name="logits")(x)
    return keras.Model(inputs, logits, name=name)


def write_image_folder(root, splits=None, size=(6, 5), suffix=".png"):
    """Writes `root/<split>/<class>/<n><suffix>` images with known pixels; returns them.

    Args:
        root: the folder to write in.
        splits: `{split: {class: number of images}}`.
        size: `(width, height)` of every image.
        suffix: `.png` (lossless) or `.jpg`.

    Returns:
        `{split: [(pixels uint8 (height, width, 3), class index), ...]}` in file order.
    """
    from PIL import Image

    splits = splits or {"train": {"cat": 3, "dog": 2}, "test": {"cat": 1, "dog": 2}}
    rng = np.random.default_rng(0)
    written = {}
    for split, classes in splits.items():
        for label, (name, count) in enumerate(sorted(classes.items())):
            folder = root / split / name
            folder.mkdir(parents=True)
            for n in range(count):
                pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{n}{suffix}")
                written.setdefault(split, []).append((pixels, label))
    return written


def tiny_train_config(tmp_path, name="run", images=None, **overrides):
    """A `TrainConfig` of WRN-16-1s on a tiny 8x8 image folder under `tmp_path`, quick to run.

    Args:
        tmp_path: the folder holding the images (written once) and the run.
        name: the run's folder under `tmp_path`.
        images: `{split: {class: count}}` for `write_image_folder`.
        **overrides: `TrainConfig` fields.
    """
    from ctkd_tf import train

    if not (tmp_path / "images").exists():
        images = images or {"train": {"a": 8, "b": 8}, "test": {"a": 4, "b": 4}}
        write_image_folder(tmp_path / "images", images, size=(8, 8))
    values = dict(
        dataset="image_folder",
        data_dir=str(tmp_path / "images"),
        method="rl",
        student="wrn16_1",
        scratch_teacher="wrn16_1",
        expert="wrn16_1",
        expert_epochs=1,
        epochs=3,
        batch_size=8,
        lr_boundaries=(2,),
        model_dir=str(tmp_path / name),
        deterministic=True,
        verbose=0,
        seed=4,
        min_expert_accuracy=0.0,  # experts of a few random images: checked, held to no bar
    )
    values.update(overrides)
    return train.TrainConfig(**values)


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, *IMAGE_SHAPE)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=(8,)).astype("int64")
    return x, y


@pytest.fixture
def offline(monkeypatch):
    """Every HTTP request fails as on a machine without internet, at once; returns the URLs requested."""
    import requests

    requested = []

    def refuse(self, request, **kwargs):
        requested.append(request.url)
        raise requests.exceptions.ConnectionError(f"Failed to resolve {request.url.split('/')[2]!r}")

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", refuse)
    return requested
