"""Any Keras network as student, scratch teacher or expert: softmax outputs, layer paths, auto pairs,
maps of other sizes, subclassed networks, per-network inputs, one forward pass each."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import ctkd_tf
from ctkd_tf import losses, networks

import numpy_reference as ref
from conftest import IMAGE_SHAPE, NUM_CLASSES, tiny_cnn


def ending_in(kind, seed=0, sharp=1.0):
    """A tiny CNN whose output passes through a softmax of the given kind; and its logits model."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(IMAGE_SHAPE)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="feat1")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if kind == "dense":
        outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="predictions")(x)
    else:
        z = keras.layers.Dense(NUM_CLASSES, name="logits")(x)
        z = keras.layers.Rescaling(sharp)(z)
        layer = (
            keras.layers.Softmax(name="predictions")
            if kind == "layer"
            else keras.layers.Activation("softmax", name="predictions")
        )
        outputs = layer(z)
    net = keras.Model(inputs, outputs, name=f"softmax_{kind}")
    last = net.get_layer("predictions")
    if kind == "dense":
        dense_input = keras.Model(inputs, last.input)

        def logits(images):
            return keras.ops.convert_to_numpy(dense_input(images)) @ last.kernel.numpy() + last.bias.numpy()

    else:
        before = keras.Model(inputs, last.input)

        def logits(images):
            return keras.ops.convert_to_numpy(before(images))

    return net, logits


@pytest.mark.parametrize("kind", ["activation", "layer", "dense"])
def test_a_network_ending_in_a_softmax_is_trained_on_its_logits(batch, kind, tmp_path):
    x, y = batch
    student, logits = ending_in(kind, seed=1, sharp=20.0)
    probabilities = student.predict(x, verbose=0)
    model = ctkd_tf.CTKD(student)
    model.compile(optimizer="sgd")
    result = model.evaluate(x, y, return_dict=True, verbose=0)
    # The cross-entropy of the logits, not of the probabilities taken as logits.
    assert result["student_ce"] == pytest.approx(ref.cross_entropy(y, logits(x)).mean(), rel=1e-5)
    assert result["student_ce"] != pytest.approx(ref.cross_entropy(y, probabilities).mean(), rel=1e-2)
    # The network itself, and the saved student, still predict as it was built.
    np.testing.assert_allclose(model.student.predict(x, verbose=0), probabilities, rtol=1e-6)
    model.fit(x, y, epochs=1, verbose=0)
    model.student.save(tmp_path / "student.keras")
    restored = keras.models.load_model(tmp_path / "student.keras").predict(x, verbose=0)
    np.testing.assert_allclose(restored.sum(axis=1), 1.0, rtol=1e-5)


def test_keras_distiller_refuses_a_softmax_network():
    with pytest.raises(ValueError, match="ends in a softmax \\('predictions'\\).*classifier_activation=None"):
        ctkd_tf.hinton_kd(ending_in("dense")[0], tiny_cnn(5, seed=3))


class SoftmaxInside(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(NUM_CLASSES)

    def call(self, x):
        return keras.ops.softmax(self.dense(keras.ops.mean(x, axis=(1, 2))))


def test_a_softmax_inside_a_subclassed_call_is_refused_with_the_fix(batch):
    x, y = batch
    model = ctkd_tf.CTKD(SoftmaxInside())
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="outputs probabilities.*classifier_activation=None"):
        model.fit(x, y, epochs=1, verbose=0)


def nested(seed, name):
    """`Input -> backbone (a functional model) -> pooling -> Dense`, as fine-tuned networks are built."""
    backbone = tiny_cnn(4, seed=seed, name=f"{name}_backbone")
    backbone = keras.Model(backbone.input, backbone.get_layer("feat2").output, name="backbone")
    inputs = keras.Input(IMAGE_SHAPE)
    x = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    return keras.Model(inputs, keras.layers.Dense(NUM_CLASSES, name="head")(x), name=name)


def test_layer_paths_reach_into_nested_models_and_match_numpy(batch):
    x, y = batch
    student, expert = tiny_cnn(3, seed=1), nested(3, "expert")
    pairs = [("feat1", "backbone/feat1"), ("feat2", "backbone/feat2")]
    model = ctkd_tf.CTKD(student, expert_teacher=expert, attention_pairs=pairs, attention_weight=10.0)
    model.compile(optimizer="sgd")
    result = model.evaluate(x, y, return_dict=True, verbose=0)
    inner = expert.get_layer("backbone")
    expert_maps = keras.Model(inner.input, [inner.get_layer("feat1").output, inner.get_layer("feat2").output])
    student_maps = keras.Model(student.input, [student.get_layer(n).output for n in ("feat1", "feat2")])
    expected = ref.attention_transfer(
        [f.numpy() for f in student_maps(x)], [f.numpy() for f in expert_maps(x)]
    ).mean()
    assert result["attention_loss"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(
        ValueError, match="no layer 'nope' under 'backbone'.*The layers there: .*feat1, feat2"
    ):
        ctkd_tf.CTKD(student, expert_teacher=expert, attention_pairs=[("feat1", "backbone/nope")])


def test_auto_pairs_take_the_last_layer_of_each_shared_resolution():
    student, expert = tiny_cnn(3, seed=1), nested(3, "expert")
    model = ctkd_tf.CTKD(
        student, tiny_cnn(6, seed=2), expert, attention_pairs="auto", attention_target="both"
    )
    # 8x8: feat1 in both; 4x4: the student's ReLU after feat2, the backbone's feat2 (its last layer).
    (student_8, expert_8), (student_4, expert_4) = model.attention_pairs
    assert (student_8, expert_8, expert_4) == ("feat1", "backbone/feat1", "backbone/feat2")
    relu = networks.layer_at(student, student_4)
    assert isinstance(relu, keras.layers.ReLU) and networks.output_shape(relu)[1:3] == (4, 4)
    assert model.scratch_attention_pairs is not None and len(model.scratch_attention_pairs) == 2
    # Without named pairs, networks that are not the zoo's get the same.
    assert ctkd_tf.CTKD(student, expert_teacher=expert).attention_pairs == model.attention_pairs


def test_auto_pairs_on_keras_applications_networks(batch):
    shape = (64, 64, 3)
    student = keras.applications.MobileNetV3Small(
        input_shape=shape, weights=None, classes=NUM_CLASSES, include_preprocessing=False
    )
    expert = keras.applications.EfficientNetB0(input_shape=shape, weights=None, classes=NUM_CLASSES)
    model = ctkd_tf.CTKD(student, expert_teacher=expert, attention_pairs="auto")
    sizes = [
        networks.output_shape(networks.layer_at(net, path))[1:3]
        for trained, expert_path in model.attention_pairs
        for net, path in ((student, trained), (expert, expert_path))
    ]
    assert sizes[0::2] == sizes[1::2] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    assert model.student.layers[-1].name == "predictions"  # ends in a softmax, trained on logits
    images = np.random.default_rng(0).uniform(0, 255, size=(4, *shape)).astype("float32")
    model.compile(optimizer="sgd")
    logs = model.fit(images, np.arange(4) % NUM_CLASSES, epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][0]) and logs["attention_loss"][0] > 0


def test_maps_of_an_integer_ratio_are_pooled_as_numpy_does():
    rng = np.random.default_rng(0)
    large, small = rng.normal(size=(3, 8, 8, 4)), rng.normal(size=(3, 4, 4, 6))
    got = losses.attention_transfer([tf.constant(large, tf.float32)], [tf.constant(small, tf.float32)])
    expected = ref.attention_transfer([ref.average_pool(large, 2)], [small])
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    flipped = losses.attention_transfer([tf.constant(small, tf.float32)], [tf.constant(large, tf.float32)])
    np.testing.assert_allclose(flipped.numpy(), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="not an integer multiple"):
        losses.attention_transfer([tf.zeros((1, 6, 6, 2))], [tf.zeros((1, 4, 4, 2))])


def test_pairs_of_other_sizes_train_and_odd_ratios_fail_at_once(batch):
    x, y = batch
    student, expert = tiny_cnn(3, seed=1), tiny_cnn(5, seed=3)
    model = ctkd_tf.CTKD(student, expert_teacher=expert, attention_pairs=[("feat1", "feat2")])
    model.compile(optimizer="sgd")
    result = model.evaluate(x, y, return_dict=True, verbose=0)
    student_map = keras.Model(student.input, student.get_layer("feat1").output)(x).numpy()  # 8x8
    expert_map = keras.Model(expert.input, expert.get_layer("feat2").output)(x).numpy()  # 4x4
    expected = ref.attention_transfer([ref.average_pool(student_map, 2)], [expert_map]).mean()
    assert result["attention_loss"] == pytest.approx(expected, rel=1e-5)
    keras.utils.set_random_seed(0)
    inputs = keras.Input(IMAGE_SHAPE)
    odd = keras.layers.Conv2D(2, 3, padding="valid", name="odd")(inputs)  # 6x6
    expert = keras.Model(inputs, keras.layers.Dense(NUM_CLASSES)(keras.layers.Flatten()(odd)))
    with pytest.raises(ValueError, match="'feat2', 'odd'.*not an integer multiple"):
        ctkd_tf.CTKD(tiny_cnn(3, seed=1), expert_teacher=expert, attention_pairs=[("feat2", "odd")])


class SubclassedCNN(keras.Model):
    """A subclassed network: its layers, held as attributes, are named and tapped by name."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="feat1")
        self.conv2 = keras.layers.Conv2D(2 * channels, 3, strides=2, padding="same", name="feat2")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(NUM_CLASSES)

    def call(self, x):
        return self.head(self.pool(keras.ops.relu(self.conv2(self.conv1(x)))))


def test_no_taps_without_attention_so_any_network_serves(batch):
    x, y = batch
    for options in (dict(attention_weight=0.0), dict(attention_pairs=[])):
        model = ctkd_tf.CTKD(
            SubclassedCNN(3), SubclassedCNN(4), tiny_cnn(5, seed=3), expert_kd_weight=1.0, **options
        )
        assert model.attention_pairs is None and "attention_loss" not in [t.name for t in model.loss_terms]
        model.compile(optimizer="sgd")
        logs = model.fit(x, y, epochs=1, verbose=0).history
        assert np.isfinite(logs["expert_kd_loss"][0]) and "attention_loss" not in logs
    with pytest.raises(ValueError, match="no attention term"):
        model.attention_weight = 10.0


def test_a_subclassed_network_exposes_its_maps_by_layer_name(batch):
    x, y = batch
    student = SubclassedCNN(3)
    student(x)  # built
    expert = tiny_cnn(5, seed=3)
    model = ctkd_tf.CTKD(
        student, expert_teacher=expert, attention_pairs=[("feat1", "feat1"), ("feat2", "feat2")]
    )
    model.compile(optimizer="sgd")
    result = model.evaluate(x, y, return_dict=True, verbose=0)
    features = [student.conv1(x)]
    features.append(student.conv2(features[0]))
    expert_maps = keras.Model(expert.input, [expert.get_layer(n).output for n in ("feat1", "feat2")])
    expected = ref.attention_transfer([f.numpy() for f in features], [f.numpy() for f in expert_maps(x)])
    assert result["attention_loss"] == pytest.approx(expected.mean(), rel=1e-5)


def test_shapes_none_matches_any_size_and_other_classes_say_fine_tune():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="feat1")(inputs)
    student = keras.Model(inputs, keras.layers.Dense(NUM_CLASSES)(keras.layers.GlobalAveragePooling2D()(x)))
    ctkd_tf.CTKD(student, expert_teacher=tiny_cnn(5, seed=3), attention_pairs=[("feat1", "feat1")])
    imagenet = keras.Model(student.input, keras.layers.Dense(1000)(student.layers[-2].output))
    with pytest.raises(ValueError, match="predicts 1000 classes but the student 5.*fine-tune"):
        ctkd_tf.CTKD(student, expert_teacher=imagenet)


def test_each_network_sees_its_own_preprocessing(batch):
    x, y = batch
    student, expert = tiny_cnn(3, seed=1), tiny_cnn(5, seed=3)
    to_unit = keras.layers.Rescaling(1 / 255.0)
    model = ctkd_tf.CTKD(
        student,
        expert_teacher=expert,
        attention_pairs=[],
        expert_kd_weight=1.0,
        preprocessing={"expert_teacher": to_unit},
    )
    model.compile(optimizer="sgd")
    pixels = np.abs(x) * 100.0
    result = model.evaluate(pixels, y, return_dict=True, verbose=0)
    expected = ref.knowledge_distillation(expert(pixels / 255.0).numpy(), student(pixels).numpy(), 4.0).mean()
    assert result["expert_kd_loss"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="preprocessing keys"):
        ctkd_tf.CTKD(student, preprocessing={"teacher": to_unit})


def test_one_forward_pass_per_network_a_step(batch):
    x, y = batch
    nets = [tiny_cnn(3, seed=1), tiny_cnn(6, seed=2), nested(3, "expert")]
    calls = {}
    for net in nets:
        first = net
        while networks.sublayers(first):
            first = networks.sublayers(first)[1]  # the first layer after the input, nested models entered
        original = first.call

        def counted(*args, _original=original, _name=net.name, **kwargs):
            calls[_name] = calls.get(_name, 0) + 1
            return _original(*args, **kwargs)

        first.call = counted
    model = ctkd_tf.CTKD(
        *nets, attention_pairs=[("feat1", "backbone/feat1")], attention_target="both", expert_kd_weight=1.0
    )
    model.compile(optimizer="sgd", run_eagerly=True)
    model.train_on_batch(x, y)
    assert calls == {net.name: 1 for net in nets}


def test_the_networks_given_keep_their_layer_classes_and_calls(batch, tmp_path):
    """After CTKD(...), fit, evaluate and save, each network is as it was given: classes, calls, outputs."""
    x, y = batch
    inputs = keras.Input(IMAGE_SHAPE)
    h = keras.layers.Conv2D(4, 3, padding="same", name="feat1")(inputs)
    block = keras.Sequential(
        [keras.Input((*IMAGE_SHAPE[:2], 4)), keras.layers.BatchNormalization(), keras.layers.ReLU()],
        name="block",
    )
    h = keras.layers.GlobalAveragePooling2D()(block(h))
    student = keras.Model(
        inputs, keras.layers.Dense(NUM_CLASSES, activation="softmax", name="predictions")(h), name="student"
    )
    scratch = SubclassedCNN(4)
    scratch(x)
    nets = (student, scratch, nested(3, "expert"))

    def state(net):
        return [(layer.name, type(layer), "call" in vars(layer)) for layer in net._flatten_layers()]

    before = [state(net) for net in nets]
    model = ctkd_tf.CTKD(*nets, attention_pairs=[("feat1", "backbone/feat1")], attention_target="both")
    model.compile(optimizer="sgd")
    model.fit(x, y, epochs=1, verbose=0)
    model.evaluate(x, y, verbose=0)
    model.save_weights(tmp_path / "ctkd.weights.h5")  # the subclassed scratch teacher has no config
    student.save(tmp_path / "student.keras")
    assert [state(net) for net in nets] == before
    assert not any(before_call for net_state in before for _, _, before_call in net_state)
    np.testing.assert_allclose(student.predict(x, verbose=0).sum(axis=1), 1.0, rtol=1e-5)  # still a softmax
    loaded = keras.models.load_model(tmp_path / "student.keras")
    assert state(loaded) == state(student)
