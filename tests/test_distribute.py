"""Distributed training equals one device: MirroredStrategy over 2 logical CPUs, mixed precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import ctkd_tf
from ctkd_tf import distribute
from ctkd_tf.distiller import hinton_kd

from conftest import tiny_cnn, tiny_wrn

PAIRS = [("feat1", "feat1"), ("feat2", "feat2")]


def dataset():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 5, size=32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(8)  # global batch 8


def ctkd_model():
    return ctkd_tf.CTKD(
        tiny_cnn(3, seed=1, l2=1e-3),
        tiny_cnn(6, seed=2, l2=1e-3),
        tiny_cnn(5, seed=3),
        attention_pairs=PAIRS,
        hint_weight=0.5,
        attention_weight=100.0,
    )


def softmax_model():
    """Networks with synchronised batch norm (the global batch's moments: the replicas reduce
    inside the forward pass, where their threads take turns) ending in softmax layers, which
    CTKD skips, and tapped layers, which it records, in each replica's thread."""

    def net(seed, dense):
        wrn = tiny_wrn(seed=seed, synchronized_batchnorm=True)
        if dense:
            outputs = keras.layers.Dense(5, activation="softmax", name="predictions")(
                wrn.get_layer("pool").output
            )
        else:
            outputs = keras.layers.Activation("softmax", name="predictions")(wrn.output)
        return keras.Model(wrn.input, outputs, name=f"net{seed}")

    return ctkd_tf.CTKD(
        net(1, True), net(2, False), net(3, True), attention_target="both", expert_kd_weight=1.0
    )


def kd_model():
    model = hinton_kd(tiny_cnn(3, seed=1, l2=1e-3), tiny_cnn(5, seed=3), temperature=4.0, alpha=0.9)
    return model


def train(build, strategy, **compile_args):
    with strategy.scope():
        model = build()
        extra = {}
        if not isinstance(model, ctkd_tf.CTKD):
            extra = dict(
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="student_accuracy")],
            )
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), **extra, **compile_args)
    history = model.fit(dataset(), epochs=2, verbose=0, shuffle=False)
    evaluation = model.evaluate(dataset(), verbose=0, return_dict=True)
    return history.history, evaluation, [w.numpy() for w in model.weights]


@pytest.mark.parametrize(
    "build, weights_tolerance",
    # Synchronised batch norm sums its moments over the replicas: the weights agree to 1e-4.
    [(ctkd_model, 1e-5), (softmax_model, 1e-4), (kd_model, 1e-5)],
    ids=["ctkd", "softmax", "kd"],
)
def test_mirrored_on_two_devices_equals_one_device(build, weights_tolerance, mirrored):
    one = train(build, tf.distribute.get_strategy())
    two = train(build, mirrored)
    history_one, history_two = one[0], two[0]
    assert set(history_one) == set(history_two)
    for name in history_one:  # every loss term and metric, unscaled on both
        np.testing.assert_allclose(history_two[name], history_one[name], rtol=1e-5, atol=1e-6, err_msg=name)
    for name in one[1]:
        np.testing.assert_allclose(two[1][name], one[1][name], rtol=1e-5, atol=1e-6, err_msg=name)
    for a, b in zip(one[2], two[2], strict=True):
        # Sums in another order round differently, by amounts relative to the tensor's scale (its
        # largest entries), not to each entry: a weight near 0 beside ones of 10 differs by ~1e-5.
        scale = max(float(np.abs(a).max()), 1.0)
        np.testing.assert_allclose(b, a, rtol=weights_tolerance, atol=weights_tolerance / 10 * scale)


def test_mixed_bfloat16_mirrored_equals_one_device(mirrored):
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        initial = [w.numpy() for w in ctkd_model().weights]
        one = train(ctkd_model, tf.distribute.get_strategy())
        two = train(ctkd_model, mirrored)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    for name in one[0]:
        assert np.isfinite(one[0][name]).all()
        np.testing.assert_allclose(two[0][name], one[0][name], rtol=2e-2, atol=2e-3, err_msg=name)
    # bfloat16 keeps 8 bits of mantissa, and two replicas sum in another order:
    # the runs may drift apart a little, but far less than training moved them.
    drift = np.sqrt(sum(np.sum((b - a) ** 2) for a, b in zip(one[2], two[2], strict=True)))
    moved = np.sqrt(sum(np.sum((a - w) ** 2) for a, w in zip(one[2], initial, strict=True)))
    print(f"bfloat16 drift {drift:.4f}, moved {moved:.4f}")
    assert drift < 0.05 * moved


def test_mixed_float16_scales_the_loss_and_trains():
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        with tf.distribute.get_strategy().scope():
            model = ctkd_model()
            model.compile(optimizer=keras.optimizers.SGD(0.1))
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        before = [w.numpy() for w in model.student.trainable_weights]
        history = model.fit(dataset(), epochs=1, verbose=0, shuffle=False).history
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert all(np.isfinite(v).all() for v in history.values())
    assert any(not np.allclose(a, w.numpy()) for a, w in zip(before, model.student.trainable_weights))


def test_strategy_names():
    assert isinstance(distribute.make_strategy("auto"), type(tf.distribute.get_strategy()))
    assert isinstance(distribute.make_strategy("one_device"), tf.distribute.OneDeviceStrategy)
    assert isinstance(distribute.make_strategy("mirrored"), tf.distribute.MirroredStrategy)
    assert distribute.make_strategy("mirrored") is distribute.make_strategy("mirrored")  # one per process
    with pytest.raises(ValueError, match="Unknown strategy 'tpu'"):
        distribute.make_strategy("tpu")
