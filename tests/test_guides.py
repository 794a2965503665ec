"""The guides' code runs: docs/own_networks.md at tiny size (32-pixel images, one epoch, no download)."""

import re
from pathlib import Path

import keras
import numpy as np

from conftest import write_image_folder

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
    assert tiny.count("= 1, 1, 1, 4") == 1 and "imagenet" not in tiny
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
    assert (tmp_path / "export" / "student.tflite").stat().st_size > 0
