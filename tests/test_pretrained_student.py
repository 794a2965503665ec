"""A pretrained student (--student_init) and an expert at its own resolution (--expert_image_size)."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from ctkd_tf import networks, train

from conftest import tiny_train_config


def pretrained_wrn(path, classes=7, size=8):
    keras.utils.set_random_seed(1)
    net = train.models.get("wrn16_1", num_classes=classes, input_shape=(size, size, 3))
    net.save(path)
    return net


def test_a_pretrained_student_fine_tunes_head_first_under_the_expert(tmp_path):
    pretrained = pretrained_wrn(tmp_path / "student.keras")
    config = tiny_train_config(
        tmp_path,
        method="ctkd",
        student_init=str(tmp_path / "student.keras"),
        student_head_epochs=1,
        epochs=2,
        export=("tflite",),
    )
    result = train.train_and_evaluate(config)
    run = Path(config.model_dir)
    assert len((run / "head" / "log.csv").read_text().splitlines()) == 2  # header + the head's epoch
    assert len((run / "log.csv").read_text().splitlines()) == 2  # the whole network's epoch
    student = keras.models.load_model(run / "student.keras")
    assert student.output_shape == (None, 2) and result["student_params"] == student.count_params()
    backbone = student.get_layer("backbone")
    # Started from the pretrained weights and fine-tuned: the convolutions moved, the batch
    # norm's statistics stayed ImageNet's (here: the pretrained file's).
    start, tuned = (
        pretrained.get_layer("stem_conv").kernel.numpy(),
        backbone.get_layer("stem_conv").kernel.numpy(),
    )
    assert not np.array_equal(start, tuned) and np.corrcoef(start.ravel(), tuned.ravel())[0, 1] > 0.9
    np.testing.assert_array_equal(
        pretrained.get_layer("head_bn").moving_mean.numpy(), backbone.get_layer("head_bn").moving_mean.numpy()
    )
    card = json.loads((run / "export" / "card.json").read_text())
    assert card["input"]["shape"] == [1, 8, 8, 3]


def test_the_expert_sees_larger_images_and_the_student_the_same_crop_resized(tmp_path):
    config = tiny_train_config(
        tmp_path, method="at", image_size=(8,), expert_image_size=(16,), epochs=1, export=("tflite",)
    )
    result = train.train_and_evaluate(config)
    run = Path(config.model_dir)
    expert = keras.models.load_model(run / "expert.keras")
    student = keras.models.load_model(run / "student.keras")
    assert expert.input_shape == (None, 16, 16, 3) and student.input_shape == (None, 8, 8, 3)
    assert "attention_loss" in result["history"]  # the zoo's group maps, 16 against 8: pooled by 2
    card = json.loads((run / "export" / "card.json").read_text())
    assert card["input"]["shape"] == [1, 8, 8, 3]  # the student's size, as it will run


def test_auto_pairs_scale_the_resolutions_of_an_expert_on_larger_images():
    student = train.models.get("MobileNetV3Small", 3, (32, 32, 3))
    expert = train.models.get("MobileNetV3Small", 3, (64, 64, 3))
    assert networks.input_ratio(student, expert) == 2
    pairs = networks.auto_pairs(student, expert)
    shapes = dict(networks.spatial_layers(student)) | {
        f"e:{p}": s for p, s in networks.spatial_layers(expert)
    }
    for trained, expert_layer in pairs:
        h, w = shapes[trained]
        assert shapes[f"e:{expert_layer}"] == (2 * h, 2 * w)
    # The same network twice: the finest pair is the same layer of each (at the same place).
    order = [p for p, _ in networks.spatial_layers(student)], [p for p, _ in networks.spatial_layers(expert)]
    assert order[0].index(pairs[0][0]) == order[1].index(pairs[0][1]) and len(pairs) >= 3


def test_bad_inits_and_ratios_are_clear_errors_naming_the_flag(tmp_path):
    with pytest.raises(
        ValueError, match="expert_image_size must be an integer multiple .* of --image_size=8"
    ):
        tiny_train_config(tmp_path, image_size=(8,), expert_image_size=(12,))
    with pytest.raises(ValueError, match="expert_image_size must be given with --image_size"):
        tiny_train_config(tmp_path, expert_image_size=(16,))
    with pytest.raises(ValueError, match="student_head_epochs must be fewer than --epochs=2"):
        tiny_train_config(tmp_path, student_init="imagenet", student_head_epochs=2, epochs=2)
    config = tiny_train_config(
        tmp_path, method="student", student_init="imagenet", epochs=2, student_head_epochs=1
    )
    with pytest.raises(ValueError, match="--student_init=imagenet needs a Keras Applications --student"):
        train.train_and_evaluate(config)
    pretrained_wrn(tmp_path / "wrong.keras", size=16)
    wrong = tiny_train_config(
        tmp_path,
        method="student",
        student_init=str(tmp_path / "wrong.keras"),
        epochs=2,
        student_head_epochs=1,
    )
    with pytest.raises(ValueError, match="--student_init=.*wrong.keras takes inputs of shape"):
        train.train_and_evaluate(wrong)
