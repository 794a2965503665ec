"""Pixel conventions (`ctkd_tf.pixels`) against Keras's own preprocess_input and NumPy."""

import importlib

import keras
import numpy as np
import pytest

from ctkd_tf import pixels

MEAN, STD = (120.0, 110.0, 100.0), (60.0, 55.0, 50.0)
RAW = np.random.default_rng(0).integers(0, 256, size=(2, 4, 4, 3)).astype("float32")


def keras_preprocess(module):
    return importlib.import_module(f"keras.applications.{module}").preprocess_input(RAW.copy())


@pytest.mark.parametrize(
    "convention, reference",
    [
        ("raw", lambda: RAW),
        ("unit", lambda: RAW / 255),
        ("symmetric", lambda: keras_preprocess("mobilenet_v2")),  # [-1, 1]
        ("imagenet", lambda: keras_preprocess("densenet")),  # torch mode: ImageNet mean and std
        ("caffe", lambda: keras_preprocess("resnet50")),  # BGR minus the means
        ("dataset", lambda: (RAW - np.asarray(MEAN)) / np.asarray(STD)),
    ],
)
def test_each_convention_gives_what_its_preprocessing_does(convention, reference):
    normalised = (RAW - np.asarray(MEAN)) / np.asarray(STD)  # what the pipeline gives
    from_pipeline = pixels.Pixels(convention, MEAN, STD)(normalised)
    from_raw = pixels.Pixels(convention, MEAN, STD, source="raw")(RAW)
    # Values up to about 255: float32 rounding of an affine map, a few ulps of 255.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(from_pipeline), reference(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(from_raw), reference(), rtol=0, atol=1e-4)


def test_the_layer_saves_and_loads(tmp_path):
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, pixels.Pixels("caffe", MEAN, STD, source="raw")(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.predict(RAW, verbose=0), model.predict(RAW, verbose=0))


def test_bad_conventions_and_missing_statistics_are_refused():
    with pytest.raises(ValueError, match="Unknown pixel convention 'bgr'"):
        pixels.Pixels("bgr", MEAN, STD)
    with pytest.raises(ValueError, match="needs the data set's mean and std"):
        pixels.Pixels("raw")
    assert pixels.preprocessing({"student": "dataset", "expert_teacher": "raw"}, MEAN, STD).keys() == {
        "expert_teacher"
    }


def test_a_rescaling_layer_near_the_input_suggests_raw_pixels():
    inputs = keras.Input((8, 8, 3))
    inner = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 127.5, -1)])
    x = keras.layers.GlobalAveragePooling2D()(inner(inputs))
    assert pixels.guess(keras.Model(inputs, keras.layers.Dense(2)(x))) == "raw"
    plain = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inputs)))
    assert pixels.guess(plain) is None
