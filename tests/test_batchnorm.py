"""The fused batch norm against Keras's own layer: outputs, gradients, moving statistics, saving."""

import json
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from ctkd_tf import models, networks
from ctkd_tf.batchnorm import FusedBatchNormalization

CONFIG = dict(momentum=0.9, epsilon=1e-5)


def pair(shape, **config):
    """A fused layer and a Keras layer built for `shape`, with the same random weights."""
    fused = FusedBatchNormalization(**{**CONFIG, **config})
    plain = keras.layers.BatchNormalization(**{**CONFIG, **config})
    rng = np.random.default_rng(1)
    for layer in (fused, plain):
        layer.build(shape)
    for f, p in zip(fused.weights, plain.weights, strict=True):
        value = rng.uniform(0.5, 1.5, size=f.shape).astype("float32")
        f.assign(value)
        p.assign(value)
    return fused, plain


def forward_and_gradients(layer, x, dy, training):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        objective = tf.reduce_sum(tf.cast(y, tf.float32) * dy)
    grads = tape.gradient(objective, [x, *layer.trainable_weights])
    return [y.numpy().astype("float32")] + [g.numpy() for g in grads]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("config", [{}, {"center": False}, {"scale": False}])
def test_matches_keras_layer(training, config):
    shape = (6, 5, 4, 3)
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=shape).astype("float32")
    dy = rng.normal(size=shape).astype("float32")
    fused, plain = pair(shape, **config)
    for _ in range(3):  # moving statistics over a few steps
        got = forward_and_gradients(fused, x, dy, training)
        want = forward_and_gradients(plain, x, dy, training)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
        x = x * 1.5 + 0.5
    for f, p in zip(fused.non_trainable_weights, plain.non_trainable_weights, strict=True):
        np.testing.assert_allclose(f.numpy(), p.numpy(), rtol=1e-5, atol=1e-6)
    if training:  # the moving statistics did move
        assert not np.allclose(fused.moving_mean.numpy(), 0.0)


def test_uses_the_fused_op_in_training():
    fused, _ = pair((2, 3, 3, 4))
    graph = tf.function(lambda x: fused(x, training=True)).get_concrete_function(tf.TensorSpec((2, 3, 3, 4)))
    op_types = {op.type for op in graph.graph.get_operations()}
    assert "FusedBatchNormV3" in op_types
    assert "Mean" not in op_types  # Keras's unfused moments


def test_inference_is_keras_bit_for_bit():
    """A saved model, loaded as Keras's layer, predicts exactly what the trained one did."""
    fused, plain = pair((2, 3, 3, 4))
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 4)).astype("float32")
    np.testing.assert_array_equal(fused(x, training=False), plain(x, training=False))


def test_falls_back_to_keras_for_other_ranks_and_frozen_layers():
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    fused, plain = pair((8, 5))
    np.testing.assert_allclose(fused(x, training=True), plain(x, training=True), rtol=1e-5, atol=1e-5)
    fused4, plain4 = pair((2, 3, 3, 4))
    fused4.trainable = plain4.trainable = False
    x4 = np.random.default_rng(1).normal(size=(2, 3, 3, 4)).astype("float32")
    np.testing.assert_allclose(fused4(x4, training=True), plain4(x4, training=True), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(fused4.moving_mean.numpy(), plain4.moving_mean.numpy())


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    shape = (4, 5, 5, 3)
    x = np.random.default_rng(0).normal(1.0, 2.0, size=shape).astype("float32")
    dy = np.random.default_rng(1).normal(size=shape).astype("float32")
    fused, plain = pair(shape, dtype=policy)
    got = forward_and_gradients(fused, x, dy, True)
    want = forward_and_gradients(plain, x, dy, True)
    assert fused(x, training=True).dtype == plain(x, training=True).dtype
    tolerance = 2e-2 if policy == "mixed_bfloat16" else 2e-3
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=tolerance, atol=tolerance)
    for f, p in zip(fused.non_trainable_weights, plain.non_trainable_weights, strict=True):
        assert f.dtype == p.dtype == "float32"
        np.testing.assert_allclose(f.numpy(), p.numpy(), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("shape", [(8, 4, 4, 3), (8, 3)], ids=["fused", "keras_fallback"])
def test_under_mirrored_strategy_replicas_share_the_mean_moving_statistics(shape, mirrored):
    """Two replicas: each normalises its half batch, as Keras's layer does; the moving
    statistics of both are the mean of each half's update (a NumPy reference), not each its own."""
    x = np.random.default_rng(0).normal(1.0, 2.0, size=shape).astype("float32")
    x[4:] = x[4:] * 3.0 - 1.0  # the halves' statistics differ
    strategy = mirrored
    with strategy.scope():
        fused = FusedBatchNormalization(**CONFIG)
        keras_layer = keras.layers.BatchNormalization(**CONFIG)
        for layer in (fused, keras_layer):
            layer.build(shape)
    dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(x).batch(8))

    @tf.function
    def step(batch):
        return strategy.run(lambda b: (fused(b, training=True), keras_layer(b, training=True)), args=(batch,))

    batch = next(iter(dataset))
    for _ in range(2):
        outputs = step(batch)
    got, want = (np.concatenate([t.numpy() for t in strategy.experimental_local_results(o)]) for o in outputs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # each half normalised by its own moments
    axes = tuple(range(len(shape) - 1))
    halves = (x[:4], x[4:])
    mean = np.mean([h.mean(axis=axes) for h in halves], axis=0)
    variance = np.mean([h.var(axis=axes) for h in halves], axis=0)
    expected = ((fused.moving_mean, mean, 0.0), (fused.moving_variance, variance, 1.0))
    for variable, batch_value, initial in expected:
        copies = [v.numpy() for v in strategy.experimental_local_results(variable.value)]
        np.testing.assert_array_equal(copies[0], copies[1])
        want = initial
        for _ in range(2):
            want = 0.9 * want + 0.1 * batch_value
        np.testing.assert_allclose(copies[0], want, rtol=1e-5, atol=1e-6)
    # Keras's own layer keeps each replica's: the copies differ (what the fused layer fixes).
    copies = [v.numpy() for v in strategy.experimental_local_results(keras_layer.moving_mean.value)]
    assert not np.allclose(copies[0], copies[1])


def test_zoo_uses_it_unless_synchronised_or_asked_not_to():
    def layer_types(**kwargs):
        net = models.wrn(10, 1, 3, (8, 8, 3), **kwargs)
        return {type(layer) for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)}

    assert layer_types() == {FusedBatchNormalization}
    assert layer_types(synchronized_batchnorm=True) == {keras.layers.BatchNormalization}
    assert layer_types(fused_batchnorm=False) == {keras.layers.BatchNormalization}


def test_the_extractor_fuses_keras_layers_in_nested_models_and_leaves_them_as_they_are():
    class OwnBatchNorm(keras.layers.BatchNormalization):
        pass

    inner = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.BatchNormalization(name="inner_bn")])
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.BatchNormalization(name="outer_bn")(inner(inputs))
    net = keras.Model(inputs, OwnBatchNorm(name="own_bn")(x))
    twin = keras.models.clone_model(net)
    twin.set_weights(net.get_weights())
    layers = {layer.name: layer for layer in net._flatten_layers()}
    before = {name: (type(layer), [id(w) for w in layer.weights]) for name, layer in layers.items()}
    config = net.get_config()
    fused = networks.extractor(net, fused_batchnorm=True)
    assert {name: (type(layer), [id(w) for w in layer.weights]) for name, layer in layers.items()} == before
    assert net.get_config() == config
    assert {id(w) for w in fused.weights} == {id(w) for w in net.weights}  # the network's own weights
    graph = tf.function(lambda x: fused(x, training=True)).get_concrete_function(tf.TensorSpec((2, 4, 4, 3)))
    assert sum(op.type == "FusedBatchNormV3" for op in graph.graph.get_operations()) == 2  # not own_bn
    # The same maths as the network's own training call, moving statistics included.
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(8, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(fused(x, training=True), twin(x, training=True), rtol=1e-5, atol=1e-5)
    for u, v in zip(net.weights, twin.weights, strict=True):
        np.testing.assert_allclose(u.numpy(), v.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(layers["inner_bn"].moving_mean.numpy(), 0.0)


def test_saved_network_loads_with_plain_keras(tmp_path):
    """Deployment: a saved zoo network loads, and predicts the same, without ctkd_tf."""
    keras.utils.set_random_seed(0)
    net = models.wrn(10, 1, 3, (8, 8, 3))
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    net(x, training=True)  # moving statistics away from their initial values
    path = tmp_path / "student.keras"
    net.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", net.predict(x, verbose=0))
    with zipfile.ZipFile(path) as archive:
        layers = json.loads(archive.read("config.json"))["config"]["layers"]
    assert {(layer["module"], layer["class_name"]) for layer in layers if "bn" in layer["name"]} == {
        ("keras.layers", "BatchNormalization")
    }
    script = (
        "import sys, keras, numpy as np\n"
        f"net = keras.models.load_model({str(path)!r})\n"
        f"y = net.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0)\n"
        f"np.testing.assert_allclose(y, np.load({str(tmp_path / 'y.npy')!r}), rtol=1e-5, atol=1e-5)\n"
        "assert 'ctkd_tf' not in sys.modules\n"
        "print(sorted({type(l).__module__ for l in net.layers if 'bn' in l.name}))\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "keras.src.layers.normalization.batch_normalization" in done.stdout
