"""The CTKD model: its training step, metrics, baselines, saving and errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import ctkd_tf

import numpy_reference as ref
from conftest import IMAGE_SHAPE, NUM_CLASSES, tiny_cnn, tiny_wrn

PAIRS = [("feat1", "feat1"), ("feat2", "feat2")]


def wrn_trio(**kwargs):
    """A fresh CTKD of tiny WRNs with fixed initial weights."""
    return ctkd_tf.CTKD(
        student=tiny_wrn(1, seed=1, name="student"),
        scratch_teacher=tiny_wrn(2, seed=2, name="scratch"),
        expert_teacher=tiny_wrn(2, seed=3, name="expert"),
        **kwargs,
    )


def one_step(model, x, y, learning_rate=0.1):
    model.compile(optimizer=keras.optimizers.SGD(learning_rate))
    history = model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    return {name: values[-1] for name, values in history.history.items()}


def weights(net):
    return [w.numpy().copy() for w in net.weights]


def assert_same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)


def assert_differ(a, b):
    assert any(not np.allclose(u, v) for u, v in zip(a, b))


def test_one_step_trains_student_and_scratch_and_freezes_expert(batch):
    model = wrn_trio()
    before = {
        role: weights(getattr(model, role)) for role in ("student", "scratch_teacher", "expert_teacher")
    }
    one_step(model, *batch)
    assert_differ(before["student"], weights(model.student))
    assert_differ(before["scratch_teacher"], weights(model.scratch_teacher))
    # All of the expert's weights, batch-norm moving statistics included.
    assert_same(before["expert_teacher"], weights(model.expert_teacher))
    trainable = {id(v) for v in model.trainable_variables}
    expected = model.student.trainable_variables + model.scratch_teacher.trainable_variables
    assert trainable == {id(v) for v in expected} and len(model.trainable_variables) == len(expected)


@pytest.mark.parametrize("attention_target", ["student", "both"])
@pytest.mark.parametrize("student_term", ["hint_weight", "expert_kd_weight"])
def test_student_terms_reach_the_student_only(batch, attention_target, student_term):
    # The hint and the expert's KD train the student alone: the scratch teacher's
    # weights come out of a step the same whatever their weights.
    runs = {}
    for weight in (0.0, 100.0):
        model = wrn_trio(attention_target=attention_target, **{student_term: weight})
        one_step(model, *batch)
        runs[weight] = model
    assert_same(weights(runs[0.0].scratch_teacher), weights(runs[100.0].scratch_teacher))
    assert_differ(weights(runs[0.0].student), weights(runs[100.0].student))


def test_scratch_kd_reaches_the_scratch_teacher_only(batch):
    # The expert's logits teach the scratch teacher; the student's step is the same whatever
    # the weight (one step: the student sees the scratch teacher's logits before its update).
    runs = {}
    for weight in (0.0, 100.0):
        model = wrn_trio(attention_target="student", scratch_kd_weight=weight)
        one_step(model, *batch)
        runs[weight] = model
    assert_same(weights(runs[0.0].student), weights(runs[100.0].student))
    assert_differ(weights(runs[0.0].scratch_teacher), weights(runs[100.0].scratch_teacher))


@pytest.mark.parametrize(
    "target, guided, unguided",
    [
        ("student", ["student"], ["scratch_teacher"]),
        ("scratch", ["scratch_teacher"], ["student"]),
        ("both", ["student", "scratch_teacher"], []),
    ],
)
def test_attention_gradient_reaches_the_target_only(batch, target, guided, unguided):
    runs = {}
    for attention_weight in (1e-3, 1e4):
        model = wrn_trio(attention_target=target, attention_weight=attention_weight)
        one_step(model, *batch)
        runs[attention_weight] = model
    for role in guided:
        assert_differ(weights(getattr(runs[1e-3], role)), weights(getattr(runs[1e4], role)))
    for role in unguided:
        assert_same(weights(getattr(runs[1e-3], role)), weights(getattr(runs[1e4], role)))


@pytest.mark.parametrize(
    "attention_target, hint_loss, expert_kd_weight, scratch_kd_weight, hint_when_correct",
    [
        ("student", "mse", 0.0, 0.0, False),
        ("scratch", "kl", 0.0, 0.0, False),
        ("both", "kl", 0.7, 0.0, False),
        ("student", "mse", 0.7, 0.0, False),
        ("both", "mse", 0.7, 0.4, True),
        ("student", "kl", 0.0, 0.0, True),
    ],
)
def test_metrics_of_a_one_batch_epoch_equal_numpy_losses(
    batch, attention_target, hint_loss, expert_kd_weight, scratch_kd_weight, hint_when_correct
):
    x, y = batch
    student = tiny_cnn(3, seed=1, l2=1e-3)
    scratch = tiny_cnn(6, seed=2, l2=1e-3)
    expert = tiny_cnn(5, seed=3, l2=1e-3)  # its regulariser must not count
    model = ctkd_tf.CTKD(
        student,
        scratch,
        expert,
        attention_pairs=PAIRS,
        attention_target=attention_target,
        hint_weight=0.5,
        attention_weight=100.0,
        hint_loss=hint_loss,
        hint_temperature=3.0,
        expert_kd_weight=expert_kd_weight,
        kd_temperature=2.0,
        scratch_kd_weight=scratch_kd_weight,
        hint_when_correct=hint_when_correct,
    )

    def forward(net):
        tap = keras.Model(
            net.input, [net.output, net.get_layer("feat1").output, net.get_layer("feat2").output]
        )
        return [o.numpy() for o in tap(x)]

    (zs, *fs), (zt, *ft), (ze, *fe) = forward(student), forward(scratch), forward(expert)
    if hint_when_correct:  # labels the scratch teacher gets right on every other example
        y = np.where(np.arange(len(y)) % 2 == 0, zt.argmax(1), y)
    hint = ref.hint(zt, zs) if hint_loss == "mse" else ref.knowledge_distillation(zt, zs, 3.0)
    if hint_when_correct:
        right = zt.argmax(1) == y
        assert 0 < right.sum() < len(y)  # the mask matters in this batch
        hint = np.where(right, hint, 0.0)
    guided = {"student": [fs], "scratch": [ft], "both": [fs, ft]}[attention_target]
    regularization = sum(float(v) for v in student.losses + scratch.losses)
    expected = {
        "student_ce": ref.cross_entropy(y, zs).mean(),
        "scratch_ce": ref.cross_entropy(y, zt).mean(),
        "hint_loss": hint.mean(),
        "attention_loss": sum(ref.attention_transfer(f, fe) for f in guided).mean(),
        "student_accuracy": np.mean(zs.argmax(1) == y),
        "scratch_accuracy": np.mean(zt.argmax(1) == y),
    }
    if expert_kd_weight:
        expected["expert_kd_loss"] = ref.knowledge_distillation(ze, zs, 2.0).mean()
    if scratch_kd_weight:
        expected["scratch_kd_loss"] = ref.knowledge_distillation(ze, zt, 2.0).mean()
    expected["loss"] = (
        expert_kd_weight * expected.get("expert_kd_loss", 0.0)
        + scratch_kd_weight * expected.get("scratch_kd_loss", 0.0)
        + expected["student_ce"]
        + expected["scratch_ce"]
        + 0.5 * expected["hint_loss"]
        + 100.0 * expected["attention_loss"]
        + regularization
    )
    logs = one_step(model, x, y)
    assert set(logs) == set(expected)
    for name, value in expected.items():
        assert logs[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


def test_loss_weights_can_change_between_steps_without_retracing(batch):
    x, y = batch
    model = wrn_trio(hint_weight=0.03, attention_weight=10.0)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = model.evaluate(x, y, batch_size=len(x), return_dict=True, verbose=0)
    model.hint_weight, model.attention_weight = 2.0, 0.0
    after = model.evaluate(x, y, batch_size=len(x), return_dict=True, verbose=0)
    expected = before["loss"] + (2.0 - 0.03) * before["hint_loss"] - 10.0 * before["attention_loss"]
    assert after["loss"] == pytest.approx(expected, rel=1e-5)
    assert (model.hint_weight, model.attention_weight) == (2.0, 0.0)
    with pytest.raises(ValueError, match="hint_weight=1.0 needs the scratch_teacher"):
        ctkd_tf.CTKD(tiny_wrn()).hint_weight = 1.0


def test_hint_warmup_ramps_the_weight_per_epoch(batch):
    x, y = batch
    model = wrn_trio(hint_weight=0.6)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    warmup = ctkd_tf.callbacks.HintWarmup(0.6, epochs=3)
    history = model.fit(x, y, batch_size=4, epochs=5, callbacks=[warmup], verbose=0)
    np.testing.assert_allclose(history.history["hint_weight"], [0.0, 0.2, 0.4, 0.6, 0.6], rtol=1e-6)
    with pytest.raises(ValueError, match="epochs >= 1"):
        ctkd_tf.callbacks.HintWarmup(0.6, epochs=0)


def test_baselines_come_from_the_same_model(batch):
    x, y = batch
    plain = ctkd_tf.CTKD(tiny_wrn(seed=1))
    assert set(one_step(plain, x, y)) == {"loss", "student_ce", "student_accuracy"}
    rocket = ctkd_tf.CTKD(tiny_wrn(seed=1), scratch_teacher=tiny_wrn(2, seed=2))
    assert set(one_step(rocket, x, y)) == {
        "loss",
        "student_ce",
        "scratch_ce",
        "hint_loss",
        "student_accuracy",
        "scratch_accuracy",
    }
    assert rocket.hint_weight == 0.03 and rocket.attention_weight == 0.0
    attention = ctkd_tf.CTKD(tiny_wrn(seed=1), expert_teacher=tiny_wrn(2, seed=3))
    assert set(one_step(attention, x, y)) == {"loss", "student_ce", "attention_loss", "student_accuracy"}
    assert attention.attention_weight == 1000.0


def test_user_sequential_models_with_validation(batch):
    x, y = batch

    def sequential(channels, seed):
        keras.utils.set_random_seed(seed)
        return keras.Sequential(
            [
                keras.Input(IMAGE_SHAPE),
                keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="conv"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(NUM_CLASSES),
            ]
        )

    model = ctkd_tf.CTKD(
        sequential(2, 1), sequential(4, 2), sequential(3, 3), attention_pairs=[("conv", "conv")]
    )
    model.compile(optimizer="sgd")
    history = model.fit(x, y, validation_data=(x, y), batch_size=4, epochs=2, verbose=0)
    assert {"val_loss", "val_student_accuracy", "val_attention_loss"} <= set(history.history)
    assert np.isfinite(history.history["loss"]).all()


def test_a_users_keras_batchnorm_trains_with_the_fused_kernel(batch):
    """Networks built with Keras's own batch norm train with the fused kernel (same step), unchanged."""

    def trio(fused_batchnorm):
        nets = [
            tiny_wrn(width, seed=seed, name=role, fused_batchnorm=False)
            for width, seed, role in ((1, 1, "student"), (2, 2, "scratch"), (2, 3, "expert"))
        ]
        return ctkd_tf.CTKD(*nets, fused_batchnorm=fused_batchnorm)

    def batchnorm_types(net):
        return {type(layer) for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)}

    def fused_ops(model):
        model.compile(optimizer="sgd")
        step = tf.function(model.train_step).get_concrete_function(
            (tf.TensorSpec((None, *batch[0].shape[1:])), tf.TensorSpec((None,), tf.int64))
        )
        return sum(op.type == "FusedBatchNormV3" for op in step.graph.get_operations())

    fused, plain = trio(True), trio(False)
    for model in (fused, plain):
        for role in ("student", "scratch_teacher", "expert_teacher"):
            assert batchnorm_types(getattr(model, role)) == {keras.layers.BatchNormalization}
    # WRN-10: 7 batch norms each in the student and the scratch teacher; the expert infers.
    assert (fused_ops(trio(True)), fused_ops(trio(False))) == (14, 0)
    metrics = [one_step(model, *batch) for model in (fused, plain)]
    for name, value in metrics[1].items():
        assert metrics[0][name] == pytest.approx(value, rel=1e-4, abs=1e-5), name
    for role in ("student", "scratch_teacher"):
        for u, v in zip(weights(getattr(fused, role)), weights(getattr(plain, role)), strict=True):
            np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)


def test_evaluate_and_predict_use_the_student_in_inference_mode(batch):
    x, y = batch
    model = wrn_trio()
    one_step(model, x, y)
    logits = model.student(x, training=False).numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), logits, rtol=1e-5, atol=1e-6)
    result = model.evaluate(x, y, verbose=0, return_dict=True)
    assert result["student_ce"] == pytest.approx(ref.cross_entropy(y, logits).mean(), rel=1e-4)


def test_save_and_load_round_trip(batch, tmp_path):
    x, y = batch
    model = wrn_trio(
        attention_target="both",
        hint_weight=0.1,
        attention_weight=50.0,
        hint_loss="kl",
        hint_temperature=2.0,
        expert_kd_weight=0.5,
        kd_temperature=3.0,
        scratch_kd_weight=0.25,
        hint_when_correct=True,
    )
    one_step(model, x, y)
    model.save(tmp_path / "ctkd.keras")
    restored = keras.models.load_model(tmp_path / "ctkd.keras")
    assert isinstance(restored, ctkd_tf.CTKD)
    restored_options = (restored.hint_weight, restored.attention_weight, restored.attention_target)
    assert restored_options == (0.1, 50.0, "both")
    assert (restored.hint_loss, restored.hint_temperature) == ("kl", 2.0)
    assert (restored.expert_kd_weight, restored.kd_temperature) == (0.5, 3.0)
    assert (restored.scratch_kd_weight, restored.hint_when_correct) == (0.25, True)
    assert_same(weights(model.scratch_teacher), weights(restored.scratch_teacher))
    assert_same(weights(model.expert_teacher), weights(restored.expert_teacher))
    np.testing.assert_allclose(restored.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert int(restored.optimizer.iterations) == 1
    assert restored.evaluate(x, y, verbose=0) == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-5)

    model.student.save(tmp_path / "student.keras")
    student = keras.models.load_model(tmp_path / "student.keras")
    np.testing.assert_allclose(student.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(NUM_CLASSES)

    def call(self, x):
        return self.dense(keras.ops.mean(x, axis=(1, 2)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(attention_pairs=[("feat1", "nope")]), "expert_teacher.*'nope'"),
        (dict(attention_pairs=[("nope", "feat1")]), "student.*'nope'"),
        (dict(attention_pairs=[("feat1", "logits")]), "must tap 4-D"),
        (dict(hint_weight=-1.0), "hint_weight must be >= 0"),
        (dict(attention_weight=-1.0), "attention_weight must be >= 0"),
        (dict(attention_target="teacher"), "attention_target"),
        (
            dict(expert_teacher=None, attention_weight=1000.0),
            "attention_weight=1000.0 needs the expert_teacher",
        ),
        (dict(scratch_teacher=None, hint_weight=0.1), "hint_weight=0.1 needs the scratch_teacher"),
        (dict(expert_teacher=None, attention_pairs=PAIRS), "no expert_teacher"),
        (dict(scratch_teacher=None, attention_target="scratch"), "needs a scratch_teacher"),
        (dict(scratch_teacher=None, attention_target="both"), "'both' needs a scratch_teacher"),
        (dict(hint_loss="l1"), "hint_loss must be one of"),
        (dict(hint_loss="kl", hint_temperature=0.0), "hint_temperature must be > 0"),
        (dict(expert_kd_weight=-0.5), "expert_kd_weight must be >= 0"),
        (dict(expert_teacher=None, expert_kd_weight=0.5), "expert_kd_weight=0.5 needs the expert_teacher"),
        (dict(kd_temperature=0.0), "kd_temperature must be > 0"),
        (dict(scratch_kd_weight=-1.0), "scratch_kd_weight must be >= 0"),
        (dict(expert_teacher=None, scratch_kd_weight=0.5), "scratch_kd_weight=0.5 needs the expert_teacher"),
        (
            dict(scratch_teacher=None, hint_weight=0.0, scratch_kd_weight=0.5),
            "scratch_kd_weight=0.5 needs the scratch_teacher",
        ),
        (dict(scratch_teacher=None, hint_weight=0.0, hint_when_correct=True), "hint_when_correct=True needs"),
        (dict(expert_teacher=Subclassed()), "subclassed"),
        (dict(scratch_teacher="wrn40_1"), "must be a keras.Model"),
    ],
)
def test_bad_construction_fails_at_once(kwargs, match):
    args = dict(
        student=tiny_cnn(3, seed=1),
        scratch_teacher=tiny_cnn(6, seed=2),
        expert_teacher=tiny_cnn(5, seed=3),
        attention_pairs=PAIRS,
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ctkd_tf.CTKD(**args)


def test_mismatched_networks_fail_at_once():
    student = tiny_wrn(seed=1)
    with pytest.raises(ValueError, match="predicts 7 classes but the student 5"):
        ctkd_tf.CTKD(student, scratch_teacher=ctkd_tf.models.wrn(10, 1, 7, IMAGE_SHAPE))
    with pytest.raises(ValueError, match="inputs of shape"):
        ctkd_tf.CTKD(student, expert_teacher=ctkd_tf.models.wrn(10, 1, NUM_CLASSES, (16, 16, 3)))
    with pytest.raises(ValueError, match="compile it without `loss`"):
        ctkd_tf.CTKD(student).compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="would ignore `metrics`.*student_accuracy.*model.student.compile"):
        ctkd_tf.CTKD(student).compile(optimizer="sgd", metrics=["accuracy"])
    with pytest.raises(ValueError, match="would ignore `weighted_metrics`"):
        ctkd_tf.CTKD(student).compile(optimizer="sgd", weighted_metrics=["accuracy"])
