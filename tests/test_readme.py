"""The README's Keras example runs as written."""

import re
from pathlib import Path

import keras

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs_as_written(tmp_path, monkeypatch):
    text = README.read_text()
    block = re.search(r"<!-- quickstart.*?-->\n```python\n(.*?)```", text, re.S)
    assert block, "README lost its quickstart block"
    imports = re.findall(r"^import (\w+)", block[1], re.M)
    assert imports[0] == "ctkd_tf", "the quickstart must import ctkd_tf first (fast CPU kernels)"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(block[1], "README.md", "exec"), namespace)
    assert set(namespace["history"].history) >= {"loss", "val_student_accuracy", "hint_loss"}
    restored = keras.models.load_model(tmp_path / "student.keras")
    assert restored.count_params() == namespace["student"].count_params()
