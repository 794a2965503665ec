"""The expert is checked before it teaches, fed the pixels it was trained on; numerically safe to the end."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from ctkd_tf import CTKD, experts, export, networks, pixels, train

from conftest import load_app, run_main, tiny_train_config, tiny_wrn


def brightness_folder(root, per_class=(8, 4)):
    """`root/{train,test}/{dark,light}/*.png`: dark photos (pixels 0-90) and light ones (165-255)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in zip(("train", "test"), per_class, strict=True):
        for name, (low, high) in (("dark", (0, 90)), ("light", (165, 255))):
            folder = root / split / name
            folder.mkdir(parents=True)
            for n in range(count):
                Image.fromarray(rng.integers(low, high, size=(8, 8, 3), dtype=np.uint8)).save(
                    folder / f"{n}.png"
                )


def brightness_expert(path):
    """A user's expert that takes 0-255 pixels (a Rescaling inside) and tells dark from light
    photos perfectly: logits `10 * (brightness - 0.5) * (-1, 1)` of the mean of [0, 1] pixels."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros", name="mean")(x)
    logits = keras.layers.Dense(2, name="logits")(x)
    model = keras.Model(inputs, logits, name="own_expert")
    model.get_layer("mean").set_weights([np.full((3, 1), 1 / 3, "float32"), np.zeros(1, "float32")])
    model.get_layer("logits").set_weights(
        [np.array([[-10.0, 10.0]], "float32"), np.array([5.0, -5.0], "float32")]
    )
    model.save(path)
    return path


def expert_run(tmp_path, **overrides):
    brightness_folder(tmp_path / "images")
    expert = brightness_expert(tmp_path / "expert.keras")
    options = dict(
        method="at",
        expert_weights=str(expert),
        attention_weight=0.0,
        expert_kd_weight=1.0,
        epochs=1,
        min_expert_accuracy=None,  # the default bar
    )
    return tiny_train_config(tmp_path, **{**options, **overrides})


def test_an_expert_fed_the_wrong_pixels_stops_the_run_before_stage_two(tmp_path):
    config = expert_run(tmp_path)
    with pytest.raises(experts.ExpertCheckError) as raised:
        train.train_and_evaluate(config)
    message = str(raised.value)
    assert "scores 50.0 % top-1" in message and "below 60.0 %" in message  # the majority's 50 % + 10
    assert "--expert_pixels=dataset" in message and "raw is likely" in message
    assert "class order" in message and "--min_expert_accuracy" in message
    run = Path(config.model_dir)
    assert not (run / "log.csv").exists() and not (run / "results.json").exists()  # stage 2 never ran


def test_told_its_pixels_the_same_expert_passes_and_teaches(tmp_path):
    config = expert_run(tmp_path, expert_pixels="raw")
    result = train.train_and_evaluate(config)
    assert result["expert_accuracy"] == 1.0
    check = json.loads((Path(config.model_dir) / "expert_check.json").read_text())
    assert check["passed"] and check["majority_share"] == 0.5 and check["min_accuracy"] == pytest.approx(0.6)


def test_min_expert_accuracy_sets_the_bar_and_zero_turns_it_off(tmp_path):
    config = expert_run(tmp_path, min_expert_accuracy=0.0)
    assert train.train_and_evaluate(config)["expert_accuracy"] == 0.5
    strict = expert_run(tmp_path / "strict", expert_pixels="raw", min_expert_accuracy=1.0)
    assert train.train_and_evaluate(strict)["expert_accuracy"] == 1.0


def test_the_app_stops_with_the_message_and_no_traceback(tmp_path, capsys):
    config = expert_run(tmp_path)
    app = load_app("train.py")
    with pytest.raises(SystemExit) as exited:
        run_main(
            app,
            "train.py",
            "--dataset=image_folder",
            f"--data_dir={config.data_dir}",
            "--method=at",
            "--student=wrn16_1",
            f"--expert_weights={config.expert_weights}",
            "--attention_weight=0",
            "--epochs=1",
            "--batch_size=8",
            f"--model_dir={config.model_dir}",
            "--verbose=0",
        )
    assert str(exited.value.code).startswith("Error: The expert scores 50.0 %")


def test_an_expert_with_non_finite_outputs_always_stops(tmp_path):
    config = expert_run(tmp_path, min_expert_accuracy=0.0)
    broken = keras.models.load_model(config.expert_weights)
    broken.get_layer("logits").set_weights([np.array([[np.inf, 1.0]], "float32"), np.zeros(2, "float32")])
    broken.save(config.expert_weights)
    with pytest.raises(experts.ExpertCheckError, match="non-finite scores"):
        train.train_and_evaluate(config)


def test_ctkd_in_python_checks_its_expert(tmp_path):
    brightness_folder(tmp_path / "images")
    expert = keras.models.load_model(brightness_expert(tmp_path / "expert.keras"))
    from ctkd_tf import data

    ds, info = data.build_dataset("image_folder", "test", 4, False, str(tmp_path / "images"))
    student = tiny_wrn(name="student")
    student = keras.Model(student.inputs, student.outputs)  # 5 classes: a 2-class one below
    student = train.models.get("wrn16_1", 2, (8, 8, 3))
    model = CTKD(student, expert_teacher=expert, attention_pairs=[])
    with pytest.raises(experts.ExpertCheckError, match=r"ctkd_tf\.pixels\.Pixels"):
        model.check_expert(ds)
    fed = CTKD(
        student,
        expert_teacher=expert,
        attention_pairs=[],
        preprocessing={"expert_teacher": pixels.Pixels("raw", info.mean, info.std)},
    )
    assert fed.check_expert(ds)["accuracy"] == 1.0


def test_pixel_flags_need_a_network_read_from_a_file(tmp_path):
    with pytest.raises(
        ValueError, match=r"student_pixels must be dataset unless --student \(or --student_init\)"
    ):
        tiny_train_config(tmp_path, student_pixels="raw")
    with pytest.raises(ValueError, match="expert_pixels must be dataset unless the expert's file"):
        tiny_train_config(tmp_path, method="at", expert_pixels="symmetric")
    with pytest.raises(
        ValueError, match="--method=kd.*--method=at --attention_weight=0 --expert_kd_weight=1"
    ):
        train.train_and_evaluate(expert_run(tmp_path / "kd", method="kd", expert_pixels="raw"))


def test_a_student_read_from_a_file_trains_and_exports_on_its_own_pixels(tmp_path):
    brightness_folder(tmp_path / "images")
    student = brightness_expert(tmp_path / "student.keras")  # any network taking 0-255 pixels
    config = tiny_train_config(
        tmp_path, method="student", student=str(student), student_pixels="raw", epochs=1, export=("tflite",)
    )
    config = type(config)(**{**config.__dict__, "learning_rate": 1e-4})
    result = train.train_and_evaluate(config)
    assert result["student_accuracy"] == 1.0  # fed raw pixels: still right
    card = json.loads((Path(config.model_dir) / "export" / "card.json").read_text())
    assert card["accuracy"]["keras"] == 1.0 and card["accuracy"]["tflite"] == 1.0
    assert card["normalisation"]["network_pixels"] == "raw"


def test_auto_pairs_never_pair_the_image_itself():
    # The frozen adapter in front of a Keras Applications network gives the image at its full size.
    student = train.models.get("MobileNetV3Small", 3, (32, 32, 3))
    expert = train.models.get("EfficientNetB0", 3, (32, 32, 3))
    pairs = networks.auto_pairs(student, expert)
    assert pairs and all("pixels" not in path for pair in pairs for path in pair)
    images = {path for path, _ in networks.spatial_layers(student)}
    assert "pixels" not in images


def test_applications_built_here_keep_moving_statistics_that_settle():
    net = train.models.get("MobileNetV3Small", 3, (32, 32, 3))
    momenta = [
        layer.momentum for layer in net.get_layer("MobileNetV3Small").layers if hasattr(layer, "moving_mean")
    ]
    assert momenta and max(momenta) <= train.models.BATCHNORM_MOMENTUM


def test_stage_one_keeps_batch_norm_frozen_and_the_head_when_fine_tuning_loses(tmp_path, monkeypatch):
    keras.utils.set_random_seed(1)
    pretrained = train.models.get("wrn16_1", num_classes=7, input_shape=(8, 8, 3))
    pretrained.save(tmp_path / "pretrained.keras")
    scores = iter([0.9, 0.4])  # the head phase's accuracy, then the whole network's
    monkeypatch.setattr(train, "accuracy", lambda model, dataset: next(scores))
    config = tiny_train_config(
        tmp_path,
        method="at",
        expert_init=str(tmp_path / "pretrained.keras"),
        expert_epochs=2,
        expert_head_epochs=1,
        epochs=1,
        min_expert_accuracy=0.0,
        finetune_learning_rate=0.05,
    )
    train.train_and_evaluate(config)
    run = Path(config.model_dir)
    assert json.loads((run / "expert" / "finetune.json").read_text()) == {
        "head_accuracy": 0.9,
        "whole_accuracy": 0.4,
        "kept": "head",
    }
    expert = keras.models.load_model(run / "expert.keras")
    backbone = expert.get_layer("backbone")
    # The head phase's expert: the backbone as pretrained, batch norm statistics included.
    for layer in pretrained.layers:
        if layer.weights and layer.name != "logits":
            for a, b in zip(layer.get_weights(), backbone.get_layer(layer.name).get_weights(), strict=True):
                np.testing.assert_array_equal(a, b)


def test_whole_network_phase_trains_the_backbone_but_not_its_batch_norm_statistics(tmp_path):
    keras.utils.set_random_seed(1)
    pretrained = train.models.get("wrn16_1", num_classes=7, input_shape=(8, 8, 3))
    pretrained.save(tmp_path / "pretrained.keras")
    config = tiny_train_config(
        tmp_path,
        method="at",
        expert_init=str(tmp_path / "pretrained.keras"),
        expert_epochs=2,
        expert_head_epochs=1,
        epochs=1,
        min_expert_accuracy=0.0,
        finetune_learning_rate=0.05,
        finetune_lr_factor=1.0,
    )
    train.train_and_evaluate(config)
    run = Path(config.model_dir)
    kept = json.loads((run / "expert" / "finetune.json").read_text())["kept"]
    backbone = keras.models.load_model(run / "expert.keras").get_layer("backbone")
    bn = pretrained.get_layer("head_bn")
    tuned = backbone.get_layer("head_bn")
    np.testing.assert_array_equal(bn.moving_mean.numpy(), tuned.moving_mean.numpy())
    np.testing.assert_array_equal(bn.moving_variance.numpy(), tuned.moving_variance.numpy())
    if kept == "whole":
        conv = pretrained.get_layer("stem_conv").kernel.numpy()
        assert not np.array_equal(conv, backbone.get_layer("stem_conv").kernel.numpy())


def test_the_card_names_a_model_litert_refuses_or_that_collapsed(tmp_path, monkeypatch):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    constant = keras.Model(
        inputs, keras.layers.Dense(2, kernel_initializer="zeros", bias_initializer="ones")(x)
    )
    mean, std = (100.0,) * 3, (50.0,) * 3
    images = np.random.default_rng(0).integers(0, 256, size=(6, 8, 8, 3)).astype(np.uint8)
    paths = export.export_student(constant, tmp_path, ("tflite",), images, mean, std)
    card = export.card(paths, constant, mean, std, ("a", "b"), images, np.zeros(6, int), "test")
    assert "collapsed" in card["problems"]["tflite_int8"][0]
    original = export.litert_predict

    def refusing(path, pixels, default_delegates=True):
        if default_delegates:
            raise RuntimeError("failed to create XNNPACK runtime")
        return original(path, pixels, default_delegates)

    monkeypatch.setattr(export, "litert_predict", refusing)
    card = export.card(paths, constant, mean, std, ("a", "b"), images, np.zeros(6, int), "test")
    assert card["accuracy"]["tflite"] == 1.0  # scored all the same, without the delegate
    assert (
        "XNNPACK" in card["problems"]["tflite"][0]
        and "without the default delegate" in card["problems"]["tflite"][1]
    )


def test_attention_and_kd_terms_stay_finite_for_huge_activations_and_logits():
    from ctkd_tf import losses

    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 4, 4, 8)).astype("float32")
    reference = losses.attention_map(features).numpy()
    for dtype in (tf.float32, tf.bfloat16, tf.float16):
        scale = 1e30 if dtype != tf.float16 else 6e3  # squares overflow float32 / float16
        huge = tf.cast(features * scale, dtype)
        result = losses.attention_map(huge).numpy()
        assert np.all(np.isfinite(result))
        # bfloat16 keeps 8 bits of the activations: the map within a few of its ulps.
        np.testing.assert_allclose(result, reference, atol=3e-2 if dtype == tf.bfloat16 else 1e-3)
    logits = tf.constant([[1e38, -1e38, 0.0]])
    for temperature in (0.5, 1.0, 4.0):
        value = losses.knowledge_distillation(logits, logits, temperature)
        assert np.all(np.isfinite(value.numpy())) and float(value[0]) == 0.0
    with tf.GradientTape() as tape:
        student = tf.Variable([[3e37, -3e37, 1.0]])
        value = losses.knowledge_distillation(logits, student, 0.5)
    assert np.all(np.isfinite(tape.gradient(value, student).numpy()))


def test_a_failed_export_is_named_and_the_run_still_ends_with_its_results(tmp_path, monkeypatch):
    def failing(*args, **kwargs):
        raise RuntimeError("the converter gave up")

    monkeypatch.setattr(export, "export_student", failing)
    config = tiny_train_config(tmp_path, method="student", epochs=1, export=("tflite",))
    result = train.train_and_evaluate(config)
    assert result["export_error"] == "RuntimeError: the converter gave up"
    saved = json.loads((Path(config.model_dir) / "results.json").read_text())
    assert (
        saved["export_error"] == result["export_error"]
        and (Path(config.model_dir) / "student.keras").exists()
    )
