"""Each loss term against an independent NumPy reference."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ctkd_tf import losses

import numpy_reference as ref
from conftest import tiny_cnn

RNG = np.random.default_rng(42)


def test_cross_entropy_matches_numpy():
    logits = RNG.normal(size=(6, 7)).astype("float32") * 3
    labels = RNG.integers(0, 7, size=6)
    expected = ref.cross_entropy(labels, logits)
    np.testing.assert_allclose(losses.cross_entropy(labels, logits), expected, rtol=1e-5)


def test_attention_map_matches_numpy():
    a = RNG.normal(size=(3, 5, 4, 6)).astype("float32")
    got = losses.attention_map(a).numpy()
    np.testing.assert_allclose(got, ref.attention_map(a), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)


def test_attention_transfer_matches_numpy_with_different_channels():
    student = [RNG.normal(size=(4, 8, 8, 3)), RNG.normal(size=(4, 4, 4, 5))]
    expert = [RNG.normal(size=(4, 8, 8, 7)), RNG.normal(size=(4, 4, 4, 2))]
    student = [s.astype("float32") for s in student]
    expert = [e.astype("float32") for e in expert]
    expected = ref.attention_transfer(student, expert)
    got = losses.attention_transfer(student, expert)
    assert got.shape == (4,)
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_attention_transfer_is_zero_for_scaled_copies():
    a = RNG.normal(size=(2, 4, 4, 3)).astype("float32")
    # The maps are normalised, so a scaled copy carries the same attention.
    np.testing.assert_allclose(losses.attention_transfer([a], [5.0 * a]), 0.0, atol=1e-7)


def test_hint_matches_numpy_and_blocks_the_teacher_gradient():
    teacher = tf.Variable(RNG.normal(size=(5, 10)).astype("float32"))
    student = tf.Variable(RNG.normal(size=(5, 10)).astype("float32"))
    with tf.GradientTape() as tape:
        value = losses.hint(teacher, student)
    expected = ref.hint(teacher.numpy(), student.numpy())
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    grad_teacher, grad_student = tape.gradient(value, [teacher, student])
    assert grad_teacher is None
    np.testing.assert_allclose(grad_student, 2 * (student.numpy() - teacher.numpy()), rtol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_knowledge_distillation_matches_numpy(temperature):
    teacher = RNG.normal(size=(6, 10)).astype("float32") * 5
    student = RNG.normal(size=(6, 10)).astype("float32") * 5
    expected = ref.knowledge_distillation(teacher, student, temperature)
    got = losses.knowledge_distillation(teacher, student, temperature)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_knowledge_distillation_is_finite_for_extreme_logits():
    # Clipped probabilities would saturate here; log_softmax stays exact.
    teacher = np.array([[200.0, -200.0, 0.0]], dtype="float32")
    student = np.array([[-200.0, 200.0, 0.0]], dtype="float32")
    got = losses.knowledge_distillation(teacher, student, 1.0).numpy()
    np.testing.assert_allclose(got, [400.0], rtol=1e-4)


def test_distillation_losses_plug_into_keras_distiller(batch):
    x, y = batch
    teacher, student = tiny_cnn(seed=1), tiny_cnn(channels=3, seed=2)
    distiller = keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=[
            losses.KnowledgeDistillation(temperature=4.0),
            losses.AttentionTransfer("feat1"),
            losses.AttentionTransfer("feat2"),
        ],
        distillation_loss_weights=[1.0, 1000.0, 1000.0],
        student_loss_weight=0.1,
    )
    distiller.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    taps = [
        keras.Model(m.input, [m.output, m.get_layer("feat1").output, m.get_layer("feat2").output])
        for m in (teacher, student)
    ]
    (zt, t1, t2), (zs, s1, s2) = [[o.numpy() for o in tap(x)] for tap in taps]
    ce = ref.cross_entropy(y, zs).mean()
    kd = ref.knowledge_distillation(zt, zs, 4.0).mean()
    at = ref.attention_transfer([s1, s2], [t1, t2]).mean()
    expected = 0.1 * ce + 0.9 * (kd + 1000 * at)
    got = distiller.compute_loss(x=x, y=y, y_pred=student(x))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_distillation_losses_serialise():
    for loss in (losses.KnowledgeDistillation(temperature=3.0), losses.AttentionTransfer("a", "b")):
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
        assert type(restored) is type(loss)
        assert restored.get_config() == loss.get_config()


def test_attention_transfer_names_a_missing_layer():
    teacher, student = tiny_cnn(seed=1), tiny_cnn(seed=2)
    with pytest.raises(ValueError, match="nope"):
        keras.distillation.Distiller(
            teacher=teacher, student=student, distillation_losses=losses.AttentionTransfer("nope")
        )
