"""apps/train.py and train_and_evaluate: end to end, resume, NaN guard, export, flag checks."""

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags
from tensorboard.backend.event_processing import event_accumulator

from ctkd_tf import export, methods, resume, train

from conftest import load_app, run_main, tiny_train_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def app():
    """apps/train.py, imported once (its flags live in the global absl FLAGS)."""
    yield load_app("train.py")
    flags.FLAGS.unparse_flags()


def run_app(app, *args):
    flags.FLAGS.unparse_flags()
    argv = flags.FLAGS(["train.py", "--flagfile=configs/smoke.flags", "--verbose=0", *args])
    app.main(argv)


def tags(run_dir, kind):
    tags = set()
    for events in Path(run_dir).glob("events.out.tfevents.*"):
        accumulator = event_accumulator.EventAccumulator(
            str(events), size_guidance={"tensors": 0, "images": 0}
        )
        accumulator.Reload()
        tags |= set(accumulator.Tags()[kind])
    return tags


def test_offline_data_set_exits_with_the_message_alone(app, tmp_path, monkeypatch, offline):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exited:
        run_app(app, f"--model_dir={tmp_path / 'run'}", "--dataset=cifar10", f"--data_dir={tmp_path}")
    message = str(exited.value.code)  # a string code: printed to stderr, exit status 1
    assert message.startswith("Error: TFDS could not download the cifar10 data set")
    assert "--dataset=image_folder" in message and "manual directory" in message


def test_help_lists_the_apps_own_flags_with_defaults():
    for script, flag in (("train.py", "--hint_weight"), ("tune.py", "--max_trials")):
        done = subprocess.run(
            [sys.executable, str(ROOT / "apps" / script), "--help"],
            capture_output=True,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            check=False,
        )
        # absl's --help exits with status 1 after printing.
        assert f"{flag}:" in done.stdout, done.stderr[-2000:]
        assert "(default: " in done.stdout
        assert "--attention_weight:" in done.stdout  # the shared training flags, in tune.py too
        assert "--tfds_" not in done.stdout and "--xla_" not in done.stdout  # not every library's


def test_smoke_config_end_to_end_for_every_method(app, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    first = tmp_path / "ctkd"
    with tfds.testing.mock_data(num_examples=64):
        run_app(app, f"--model_dir={first}", "--method=ctkd")
        expert = first / "expert.keras"
        for method in ("student", "kd", "at", "rl"):
            run_app(
                app,
                f"--model_dir={tmp_path / method}",
                f"--method={method}",
                f"--expert_weights={expert}",
                "--export=",
            )
    results = {m: json.loads((tmp_path / m / "results.json").read_text()) for m in methods.names()}
    for method, result in results.items():
        assert result["method"] == method and result["dataset"] == "cifar10"
        # The final score is the last epoch's: the same student on the same split.
        assert result["student_accuracy"] == pytest.approx(result["history"]["val_student_accuracy"][-1])
        assert result["epochs"] == 1 and result["student_params"] == 175994 and result["wall_time_s"] > 0
        assert ("scratch_accuracy" in result) == (method in ("ctkd", "rl"))
        assert ("expert_accuracy" in result) == (method in ("ctkd", "kd", "at"))
        assert len(result["history"]["val_student_accuracy"]) == 1
        student = keras.models.load_model(tmp_path / method / "student.keras")
        assert student.output.shape == (None, 10)
    # The expert was trained once, in stage 1 of the first run, and reused.
    assert (first / "expert" / "log.csv").exists() and not (tmp_path / "kd" / "expert").exists()
    assert results["kd"]["expert_accuracy"] == results["ctkd"]["expert_accuracy"]
    assert "--method=ctkd" in (first / "flags.txt").read_text()

    scalars = tags(first / "tensorboard" / "train", "tensors")
    assert {
        "epoch_loss",
        "epoch_student_ce",
        "epoch_scratch_ce",
        "epoch_hint_loss",
        "epoch_attention_loss",
        "epoch_expert_kd_loss",
        "epoch_student_accuracy",
        "epoch_scratch_accuracy",
        "epoch_learning_rate",
    } <= scalars
    assert "epoch_student_accuracy" in tags(first / "tensorboard" / "validation", "tensors")
    images = tags(first / "tensorboard" / "attention", "tensors")
    assert {"attention/student/group1", "attention/expert/group3", "attention/images"} <= images
    assert (first / "export" / "saved_model" / "saved_model.pb").exists()
    assert (first / "export" / "student.tflite").exists()
    card = json.loads((first / "export" / "card.json").read_text())
    assert card["input"]["dtype"] == "uint8" and len(card["classes"]) == 10
    assert card["eval_examples"] == results["ctkd"]["eval_examples"]
    # The Keras student on the pixels scores as the run's own evaluation did.
    assert card["accuracy"]["keras"] == pytest.approx(
        results["ctkd"]["student_accuracy"], abs=1.01 / card["eval_examples"]
    )
    assert (first / "export" / "labels.txt").read_text().split() == card["classes"]


class Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt("simulated interruption")


def student_weights(run_dir):
    return [w.numpy() for w in keras.models.load_model(Path(run_dir) / "student.keras").weights]


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path):
    # rl with a hint warm-up over 2 epochs: the weight is part of what must resume.
    # Two steps an epoch, a checkpoint after the first of each.
    options = dict(hint_warmup_epochs=2, hint_weight=0.5, checkpoint_steps=1)
    straight = tiny_train_config(tmp_path / "a", **options)
    expected = train.train_and_evaluate(straight)

    # Stopped before the second step of the second epoch: resumed at that step, the
    # run's weights and every logged value, the interrupted epoch's means included,
    # are the uninterrupted run's.
    mid = tiny_train_config(tmp_path / "mid", **options)
    assert_resumes_from_a_step(mid, expected, straight)

    resumed = tiny_train_config(tmp_path / "b", **options)
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(resumed, callbacks=[Interrupt()])
    assert not (Path(resumed.model_dir) / "student.keras").exists()
    backup = Path(resumed.model_dir) / "checkpoints"
    interrupted = resume.checkpoint_metadata(backup)
    assert interrupted["epoch"] == 2 and interrupted["wall_time_s"] > 0
    began = time.monotonic()
    result = train.train_and_evaluate(resumed)
    # The time reported is the whole run's: the interrupted process's epochs and this one.
    assert result["wall_time_s"] == pytest.approx(
        interrupted["wall_time_s"] + time.monotonic() - began, abs=0.5
    )
    assert resume.checkpoint_metadata(backup)["wall_time_s"] > interrupted["wall_time_s"]
    assert result["history"]["epoch"] == [0.0, 1.0, 2.0]
    # The step schedule went on from the restored optimizer: 0.1, 0.1, then 0.02.
    np.testing.assert_allclose(result["history"]["learning_rate"], [0.1, 0.1, 0.02], rtol=1e-6)
    np.testing.assert_allclose(result["history"]["hint_weight"], [0.0, 0.25, 0.5], rtol=1e-6)
    for a, b in zip(student_weights(straight.model_dir), student_weights(resumed.model_dir), strict=True):
        np.testing.assert_array_equal(a, b)
    # A finished run, rerun, trains no more and reports the same.
    again = train.train_and_evaluate(resumed)
    assert again["history"] == result["history"] and again["student_accuracy"] == result["student_accuracy"]


class InterruptMidEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == 1 and batch == 1:
            raise KeyboardInterrupt("simulated interruption")


def assert_resumes_from_a_step(config, expected, straight):
    """Interrupts `config`'s run before the second step of epoch 1, reruns it, compares with `straight`'s."""
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(config, callbacks=[InterruptMidEpoch()])
    backup = Path(config.model_dir) / "checkpoints"
    checkpoint = resume.checkpoint_metadata(backup)
    assert (checkpoint["epoch"], checkpoint["batch"]) == (1, 1) and checkpoint["metrics"]
    assert [p.name for p in backup.glob("*.weights.h5")] == ["epoch1_step1.weights.h5"]
    result = train.train_and_evaluate(config)
    assert result["history"] == expected["history"]
    assert len(result["history"]["epoch"]) == config.epochs
    assert result["student_accuracy"] == expected["student_accuracy"]
    for a, b in zip(student_weights(straight.model_dir), student_weights(config.model_dir), strict=True):
        np.testing.assert_array_equal(a, b)
    assert resume.checkpoint_metadata(backup)["batch"] == 0  # the last: an epoch's end


def test_resume_in_the_middle_of_an_epoch_under_mirrored_strategy(tmp_path):
    # The metric variables restored are a strategy's; three steps an epoch, the last
    # two of the last epoch resumed.
    options = dict(
        images={"train": {"a": 12, "b": 12}, "test": {"a": 4, "b": 4}},
        method="student",
        epochs=2,
        strategy="mirrored",
        checkpoint_steps=1,
    )
    straight = tiny_train_config(tmp_path, name="straight", **options)
    expected = train.train_and_evaluate(straight)
    # Validation values too: every replica holds the same batch-norm moving statistics
    # (batchnorm.FusedBatchNormalization averages them), so the run resumed from the
    # checkpoint's one copy scores as the uninterrupted run does.
    assert_resumes_from_a_step(tiny_train_config(tmp_path, name="resumed", **options), expected, straight)


def test_without_validation_every_epoch_the_run_trains_the_same_and_scores_once(tmp_path):
    validated = tiny_train_config(tmp_path, name="validated", epochs=2, method="student")
    once = dataclasses.replace(validated, model_dir=str(tmp_path / "once"), validate_every_epoch=False)
    results = [train.train_and_evaluate(config) for config in (validated, once)]
    assert "val_student_accuracy" in results[0]["history"]
    assert not any(key.startswith("val_") for key in results[1]["history"])
    assert results[1]["history"]["epoch"] == [0.0, 1.0]
    assert results[1]["student_accuracy"] == results[0]["student_accuracy"]
    for a, b in zip(student_weights(validated.model_dir), student_weights(once.model_dir), strict=True):
        np.testing.assert_array_equal(a, b)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path, caplog):
    caplog.set_level("INFO", logger="absl")
    config = tiny_train_config(tmp_path, epochs=1, method="student")
    train.train_and_evaluate(config)
    backup = Path(config.model_dir) / "checkpoints"
    checkpoint = backup / resume.checkpoint_metadata(backup)["weights"]
    saved = checkpoint.read_bytes()
    diverging = dataclasses.replace(config, epochs=2, learning_rate=1e30, lr_boundaries=())
    with pytest.raises(FloatingPointError, match="loss became (nan|inf).*last completed epoch is kept"):
        train.train_and_evaluate(diverging)
    assert checkpoint.read_bytes() == saved
    # The resume with other settings said so, naming each change.
    warnings = [r.getMessage() for r in caplog.records if "started with other settings" in r.getMessage()]
    assert len(warnings) == 1
    for change in ("epochs: 1 -> 2", "learning_rate: 0.1 -> 1e+30", "lr_boundaries: ["):
        assert change in warnings[0]
    assert "Resuming from the checkpoint of epoch 1 of 2" in caplog.text


def test_tflite_export_agrees_with_the_keras_student_in_litert(tmp_path):
    keras.utils.set_random_seed(0)
    student = train.models.get("wrn16_1", num_classes=4, input_shape=(16, 16, 3))
    images = np.random.default_rng(0).normal(size=(6, 16, 16, 3)).astype("float32")
    paths = export.export_student(student, tmp_path, ("tflite",), representative_images=images)
    expected = student(images, training=False).numpy()
    np.testing.assert_allclose(export.litert_predict(paths["tflite"], images), expected, atol=1e-4, rtol=1e-4)
    int8 = export.litert_predict(paths["tflite_int8"], images)  # close, not equal
    assert int8.shape == expected.shape and np.abs(int8 - expected).max() < 0.5 * np.abs(expected).max() + 0.1
    assert Path(paths["tflite_int8"]).stat().st_size < Path(paths["tflite"]).stat().st_size


def test_pixel_exports_take_uint8_rgb_and_their_card_scores_them_in_litert(tmp_path):
    keras.utils.set_random_seed(0)
    student = train.models.get("wrn16_1", num_classes=3, input_shape=(16, 16, 3))
    mean, std = (120.0, 110.0, 100.0), (60.0, 55.0, 50.0)
    pixels = np.random.default_rng(1).integers(0, 256, size=(12, 16, 16, 3), dtype=np.uint8)
    paths = export.export_student(student, tmp_path, ("tflite", "saved_model"), pixels, mean, std)
    normalised = (pixels.astype(np.float32) - np.array(mean, np.float32)) / np.array(std, np.float32)
    expected = student(normalised, training=False).numpy()
    np.testing.assert_allclose(export.litert_predict(paths["tflite"], pixels), expected, atol=1e-4, rtol=1e-4)
    labels = expected.argmax(axis=1)  # the Keras student is right on every image
    card = export.card(paths, student, mean, std, ("a", "b", "c"), pixels, labels, "test")
    assert card["input"] == {"shape": [1, 16, 16, 3], "dtype": "uint8", "pixels": "RGB, 0-255"}
    assert card["accuracy"]["keras"] == 1.0 and card["accuracy"]["tflite"] == 1.0
    int8_top = export.litert_predict(paths["tflite_int8"], pixels).argmax(axis=1)
    assert card["accuracy"]["tflite_int8"] == card["int8_agrees_with_keras"] == np.mean(int8_top == labels)
    assert card["files"]["tflite_int8"]["bytes"] < card["files"]["tflite"]["bytes"]
    assert (tmp_path / "saved_model" / "saved_model.pb").exists()


@pytest.mark.parametrize(
    "argument",
    [
        "--dataset=imagenet",
        "--method=distill",
        "--student=resnet18",
        "--attention_target=expert",
        "--hint_weight=-1",
        "--attention_weight=-0.5",
        "--kd_temperature=0",
        "--kd_alpha=1.5",
        "--epochs=0",
        "--expert_epochs=0",
        "--batch_size=0",
        "--learning_rate=0",
        "--lr_boundaries=120,60",
        "--lr_boundaries=a,b",
        "--lr_decay=0",
        "--lr_schedule=linear",
        "--momentum=1.5",
        "--weight_decay=-1",
        "--strategy=tpu",
        "--export=onnx",
        "--expert_weights=/nonexistent/expert.keras",
    ],
)
def test_each_flag_rejects_a_bad_value(app, argument):
    flags.FLAGS.unparse_flags()
    name = argument.split("=")[0].lstrip("-")
    with pytest.raises(flags.IllegalFlagValueError, match=name):
        flags.FLAGS(["train.py", argument])


@pytest.mark.parametrize("flagfile", sorted(p.name for p in (ROOT / "configs").glob("*.flags")))
def test_every_config_gives_a_valid_run(app, flagfile, monkeypatch):
    monkeypatch.chdir(ROOT)
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train.py", f"--flagfile=configs/{flagfile}"])
    config = app.train_flags.config_from_flags()
    if flagfile == "photos.flags":  # a pretrained student, taught by an expert at twice its size
        assert (config.student_init, config.expert_image_size) == ("imagenet", (2 * config.image_size[0],))
    else:
        assert config.epochs == config.expert_epochs
    assert (config.epochs == 1) == (flagfile == "smoke.flags")
    flags.FLAGS.unparse_flags()


def config_of(app, *flagfiles):
    """The app's `TrainConfig` from these flagfiles of configs/, in order."""
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train.py", *(f"--flagfile=configs/{name}" for name in flagfiles)])
    config = app.train_flags.config_from_flags()
    flags.FLAGS.unparse_flags()
    return config


def test_configs_carry_the_recipe_and_the_paper_is_one_flagfile_away(app, monkeypatch):
    monkeypatch.chdir(ROOT)
    loss_options = ("attention_target", "hint_loss", "hint_weight", "attention_weight", "expert_kd_weight")
    recipe, paper = config_of(app, "cifar10.flags"), config_of(app, "cifar10.flags", "paper.flags")
    assert (recipe.attention_target, recipe.expert_kd_weight) == ("both", 1.0)
    paper_defaults = train.TrainConfig()  # the library's defaults are the paper's
    assert {k: getattr(paper, k) for k in loss_options} == {
        k: getattr(paper_defaults, k) for k in loss_options
    }
    assert dataclasses.replace(paper, **{k: getattr(recipe, k) for k in loss_options}) == recipe


def test_at_kd_is_one_flagfile_away_from_any_config(app, monkeypatch):
    monkeypatch.chdir(ROOT)
    for name in ("cifar10.flags", "svhn.flags", "tiny_imagenet.flags"):
        config, at_kd = config_of(app, name), config_of(app, name, "at_kd.flags")
        assert (at_kd.method, at_kd.expert_kd_weight) == ("at", 1.0)
        back = dict(method=config.method, expert_kd_weight=config.expert_kd_weight)
        assert dataclasses.replace(at_kd, **back) == config  # and nothing else changed


def test_expert_weights_takes_a_shipped_name(app):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train.py", "--expert_weights=cifar10_wrn40_1"])
    assert flags.FLAGS.expert_weights == "cifar10_wrn40_1"
    flags.FLAGS.unparse_flags()


def test_config_rejects_what_flags_cannot_see():
    with pytest.raises(ValueError, match="student must be one of"):
        train.TrainConfig(student="wrn99_1")
    with pytest.raises(ValueError, match="hint_loss must be one of"):
        train.TrainConfig(hint_loss="l2")


def test_a_folder_of_photos_of_mixed_sizes_trains_with_image_size(tmp_path):
    from test_data import photo_folder

    photo_folder(tmp_path / "photos")
    config = tiny_train_config(
        tmp_path,
        data_dir=str(tmp_path / "photos"),
        method="student",
        epochs=1,
        batch_size=2,
        image_size=(8,),
        augment="imagenet",
        validate_every_epoch=False,
    )
    result = train.train_and_evaluate(config)
    assert result["train_examples"] == 5 and result["eval_examples"] == 2
    assert (Path(config.model_dir) / "labels.txt").read_text() == "cat\ndog\n"
    assert keras.models.load_model(Path(config.model_dir) / "student.keras").input_shape == (None, 8, 8, 3)
    with pytest.raises(ValueError, match="--image_size"):
        train.train_and_evaluate(
            dataclasses.replace(config, image_size=(), model_dir=str(tmp_path / "other"))
        )


def test_keras_applications_and_keras_files_from_the_command_line(tmp_path):
    # A MobileNetV3Small student (by its Keras Applications name) guided by a WRN expert trained in
    # stage 1, the attention pairs found by resolution across the nested network.
    images = {"train": {"a": 4, "b": 4}, "test": {"a": 2, "b": 2}}
    config = tiny_train_config(
        tmp_path,
        images=images,
        method="at",
        student="MobileNetV3Small",
        expert="wrn16_1",
        attention_pairs="auto",
        image_size=(32,),
        epochs=1,
        batch_size=4,
        validate_every_epoch=False,
    )
    result = train.train_and_evaluate(config)
    assert result["student_params"] > 10_000
    eval_ds, _ = train.data.build_dataset(
        "image_folder", "test", 4, False, config.data_dir, image_size=(32, 32), num_classes=2
    )
    saved = keras.models.load_model(Path(config.model_dir) / "student.keras")
    assert result["student_accuracy"] == pytest.approx(train.accuracy(saved, eval_ds))  # what it saved
    assert "attention_loss" in result["history"]
    # The trained expert, as a .keras file, serves as --expert and as --student.
    expert_file = str(Path(config.model_dir) / "expert.keras")
    again = dataclasses.replace(
        config, model_dir=str(tmp_path / "again"), student=expert_file, expert=expert_file
    )
    assert (
        train.train_and_evaluate(again)["student_params"]
        == keras.models.load_model(expert_file).count_params()
    )
    with pytest.raises(ValueError, match="cannot take 8x8 images.*--image_size"):
        train.train_and_evaluate(dataclasses.replace(again, student="MobileNetV3Small", image_size=()))
    with pytest.raises(ValueError, match="student must be one of the zoo's networks.*Keras Applications"):
        dataclasses.replace(config, student="NoSuchNet")


def test_stage_one_fine_tunes_a_pretrained_expert_head_first(tmp_path):
    # "Pretrained": a WRN of 7 classes saved as .keras; fine-tuned to the folder's 2 classes.
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
    )
    result = train.train_and_evaluate(config)
    run = Path(config.model_dir)
    assert len((run / "expert" / "head" / "log.csv").read_text().splitlines()) == 2  # header + 1 epoch
    assert len((run / "expert" / "log.csv").read_text().splitlines()) == 2
    expert = keras.models.load_model(run / "expert.keras")
    assert expert.output_shape == (None, 2)
    eval_ds, _ = train.data.build_dataset("image_folder", "test", 8, False, config.data_dir)
    assert result["expert_accuracy"] == pytest.approx(train.accuracy(expert, eval_ds))  # the saved expert
    head = json.loads((run / "expert" / "head" / "checkpoints" / "training_metadata.json").read_text())
    assert head["epoch"] == 1
    # The pretrained weights were the start: the first convolution's, changed by the second phase.
    start = pretrained.get_layer("stem_conv").kernel.numpy()
    tuned = expert.get_layer("backbone").get_layer("stem_conv").kernel.numpy()
    assert start.shape == tuned.shape and not np.array_equal(start, tuned)
    assert np.corrcoef(start.ravel(), tuned.ravel())[0, 1] > 0.9  # fine-tuned, not trained anew
    with pytest.raises(ValueError, match="expert_head_epochs must be fewer than --expert_epochs=2"):
        dataclasses.replace(config, expert_head_epochs=2)


def test_expert_init_errors_name_the_flag(tmp_path, monkeypatch):
    from keras.src.utils import file_utils

    info = dict(num_classes=2, input_shape=(32, 32, 3))

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: [Errno -3] name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(
        ValueError, match="--expert_init=imagenet: Keras could not download.*--expert_init=<that file>"
    ):
        train.models.pretrained("MobileNetV3Small", "imagenet", **info)
    with pytest.raises(ValueError, match="needs a Keras Applications --expert"):
        train.models.pretrained("wrn16_1", "imagenet", **info)
    other = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, include_top=False, pooling="avg"
    )
    other.save_weights(tmp_path / "small_notop.weights.h5")
    with pytest.raises(
        ValueError,
        match="--expert_init=.*small_notop.weights.h5 does not fit keras.applications.EfficientNetB0",
    ):
        train.models.pretrained("EfficientNetB0", str(tmp_path / "small_notop.weights.h5"), **info)
    net, backbone = train.models.pretrained(
        "MobileNetV3Small", str(tmp_path / "small_notop.weights.h5"), **info
    )
    for a, b in zip(backbone.weights, other.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert net.output_shape == (None, 2)


def test_an_attention_pair_that_does_not_exist_names_the_flag(tmp_path):
    config = tiny_train_config(tmp_path, method="at", epochs=1, attention_pairs="group1:group1,nope:group3")
    with pytest.raises(
        ValueError, match="--attention_pairs=group1:group1,nope:group3: The student .* no layer 'nope'"
    ):
        train.train_and_evaluate(config)
    with pytest.raises(ValueError, match="attention_pairs must be auto or comma-separated"):
        dataclasses.replace(config, attention_pairs="group1")


def test_the_smoke_app_runs_offline_on_images_it_makes(app, tmp_path, monkeypatch, offline, capsys):
    smoke = load_app("smoke.py")
    monkeypatch.chdir(ROOT)
    run_main(
        smoke,
        "smoke.py",
        "--flagfile=configs/smoke.flags",
        f"--model_dir={tmp_path}",
        "--verbose=0",
        "--export=",
    )
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["dataset"] == "image_folder" and result["train_examples"] == smoke.CLASSES * smoke.TRAIN
    assert (tmp_path / "labels.txt").read_text().split() == [f"class_{k}" for k in range(smoke.CLASSES)]
    assert "generated images (no download)" in capsys.readouterr().out
