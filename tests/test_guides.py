"""The guides' code runs: docs/own_networks.md at tiny size (32-pixel images, one epoch, no download)."""

import json
import re
from pathlib import Path

import keras
import numpy as np

from ctkd_tf import export

from conftest import load_app, run_main, write_image_folder

DOCS = Path(__file__).resolve().parents[1] / "docs"


def guide_block(name):
    text = (DOCS / name).read_text()
    block = re.search(r"<!-- guide.*?-->\n```python\n(.*?)```", text, re.S)
    assert block, f"{name} lost its tested block"
    return block[1]


def test_own_networks_guide_runs_at_tiny_size(tmp_path, monkeypatch):
    code = guide_block("own_networks.md")
    assert re.findall(r"^import (\w+)", code, re.M)[0] == "ctkd_tf"
    tiny = re.sub(
        r"^head_epochs, fine_tune_epochs, epochs, batch = .*$",
        "head_epochs, fine_tune_epochs, epochs, batch = 1, 1, 1, 4",
        code,
        flags=re.M,
    )
    tiny = tiny.replace('weights="imagenet"', "weights=None")  # no download here
    # An expert of random weights after one epoch: checked, but held to no bar.
    tiny = tiny.replace("model.check_expert(test_ds)", "model.check_expert(test_ds, min_accuracy=0)")
    assert tiny.count("= 1, 1, 1, 4") == 1 and "imagenet" not in tiny and "min_accuracy=0" in tiny
    write_image_folder(
        tmp_path / "photos", {"train": {"cat": 4, "dog": 4}, "test": {"cat": 2, "dog": 2}}, size=(32, 32)
    )
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(tiny, "own_networks.md", "exec"), namespace)
    model = namespace["model"]
    assert len(model.attention_pairs) >= 2 and model.scratch_attention_pairs
    assert {"loss", "attention_loss", "hint_loss", "expert_kd_loss", "val_student_accuracy"} <= set(
        namespace["history"].history
    )
    student = keras.models.load_model(tmp_path / "student.keras")
    probabilities = student.predict(np.zeros((1, 32, 32, 3), "float32"), verbose=0)
    np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-5)  # as built: a softmax
    # The export predicts in LiteRT what the Keras student predicts (probabilities, float32 both).
    images = np.random.default_rng(0).uniform(0, 255, size=(4, 32, 32, 3)).astype("float32")
    got = export.litert_predict(tmp_path / "export" / "student.tflite", images)
    np.testing.assert_allclose(got, student.predict(images, verbose=0), rtol=1e-4, atol=1e-5)


def test_your_own_photos_tutorial_runs_at_tiny_size(tmp_path, monkeypatch):
    import shlex

    from PIL import Image
    from test_data import photo_folder

    root = Path(__file__).resolve().parents[1]
    text = (DOCS / "your_own_photos.md").read_text()
    command = re.search(r"<!-- guide-command.*?-->\n```sh\n(.*?)```", text, re.S)[1]
    args = shlex.split(command)
    assert args[:2] == ["python", "apps/train.py"]
    # Tiny: 32-pixel photos (64 for the expert), MobileNetV2s "pretrained" with weights=None, one
    # epoch a phase.
    photo_folder(tmp_path / "photos")
    backbone = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), weights=None, include_top=False, pooling="avg"
    )
    weights = tmp_path / "mobilenet_v2_notop.weights.h5"
    backbone.save_weights(weights)
    args = [a.replace("--expert_init=imagenet", f"--expert_init={weights}") for a in args]
    tiny = ["--image_size=32", "--expert_image_size=64", "--expert_epochs=2", "--expert_head_epochs=1"]
    tiny += ["--student_head_epochs=1", "--epochs=2", "--batch_size=4", f"--student_init={weights}"]
    tiny.append("--min_expert_accuracy=0")  # an expert of random weights: checked, held to no bar
    monkeypatch.chdir(root)
    run_main(
        load_app("train.py"),
        "train.py",
        *args[2:],
        f"--data_dir={tmp_path / 'photos'}",
        f"--model_dir={tmp_path / 'runs' / 'photos'}",
        *tiny,
        "--verbose=0",
    )
    export_dir = tmp_path / "runs" / "photos" / "export"
    card = json.loads((export_dir / "card.json").read_text())
    assert card["input"]["shape"] == [1, 32, 32, 3] and card["classes"] == ["cat", "dog"]
    assert set(card["accuracy"]) == {"keras", "tflite", "tflite_int8"}
    # The float export predicts in LiteRT what the saved Keras student predicts on the same pixels.
    student = keras.models.load_model(tmp_path / "runs" / "photos" / "student.keras")
    norm = card["normalisation"]
    pixels = np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    expected = keras.ops.convert_to_numpy(
        export.pixel_model(student, norm["mean"], norm["std"], norm["network_pixels"])(pixels)
    )
    got = export.litert_predict(export_dir / "student.tflite", pixels)
    # float32 in both, other kernels and summation orders: equal to a small fraction of the scale.
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())

    # The snippet, on a photo of another size and shape.
    Image.new("RGB", (50, 30), (200, 30, 30)).save(tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    snippet = guide_block("your_own_photos.md")
    printed = []
    exec(compile(snippet, "your_own_photos.md", "exec"), {"print": printed.append})
    assert printed and printed[0] in ("cat", "dog")
