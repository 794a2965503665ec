"""The shipped experts: registry, sha256 check, and the shipped file's claimed accuracy."""

import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from ctkd_tf import data, experts, models, train

from conftest import NUM_CLASSES, tiny_train_config, tiny_wrn

CIFAR_ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.zip"


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A registry folder holding one tiny expert, `tiny`, with a correct card."""
    monkeypatch.setattr(experts, "WEIGHTS_DIR", tmp_path)
    path = tmp_path / "tiny.keras"
    tiny_wrn(name="tiny").save(path)
    (tmp_path / "tiny.json").write_text(json.dumps({"sha256": experts.sha256(path)}))
    return tmp_path


def test_resolve_by_name_by_path_and_errors(registry, tmp_path):
    assert experts.names() == ["tiny"]
    assert experts.resolve("tiny") == str(registry / "tiny.keras")
    assert experts.load("tiny").output_shape == (None, NUM_CLASSES)
    other = tmp_path / "elsewhere.keras"
    other.write_bytes(b"x")
    assert experts.resolve(str(other)) == str(other)
    with pytest.raises(FileNotFoundError, match="neither a file nor a shipped expert \\(tiny\\)"):
        experts.resolve("cifar10_wrn99")
    with pytest.raises(ValueError, match="Unknown expert 'nope'"):
        experts.card("nope")


def test_a_corrupted_shipped_file_is_refused(registry):
    with open(registry / "tiny.keras", "ab") as file:
        file.write(b"\0")
    with pytest.raises(ValueError, match="does not match the sha256"):
        experts.resolve("tiny")


def test_a_run_takes_its_expert_by_registry_name(tmp_path, monkeypatch):
    monkeypatch.setattr(experts, "WEIGHTS_DIR", tmp_path)
    expert = models.get("wrn16_1", 2, (8, 8, 3), name="expert")
    expert.save(tmp_path / "tiny8.keras")
    (tmp_path / "tiny8.json").write_text(json.dumps({"sha256": experts.sha256(tmp_path / "tiny8.keras")}))
    config = tiny_train_config(tmp_path, method="at", epochs=1, expert_weights="tiny8")
    result = train.train_and_evaluate(config)
    assert not (tmp_path / "run" / "expert").exists()  # no expert stage: the shipped one is used
    # The run scored the shipped file's network, unchanged.
    eval_ds, _ = data.build_dataset("image_folder", "test", 8, False, data_dir=config.data_dir)
    assert result["expert_accuracy"] == pytest.approx(train.accuracy(experts.load("tiny8"), eval_ds))


def test_ship_registers_a_trained_run(tmp_path):
    run = tiny_train_config(tmp_path, method="student", epochs=1)
    result = train.train_and_evaluate(run)
    card = experts.ship(run.model_dir, "mine", "tiny images", weights_dir=tmp_path / "weights")
    shipped = tmp_path / "weights" / "mine.keras"
    assert card["sha256"] == experts.sha256(shipped)
    assert json.loads((tmp_path / "weights" / "mine.json").read_text()) == card
    assert card["test_accuracy"] == result["student_accuracy"] and card["class_names"] == ["a", "b"]
    assert card["recipe"]["epochs"] == 1 and card["flags"] is None  # flags.txt comes from apps/train.py
    assert card["per_epoch"] == {
        "learning_rate": result["history"]["learning_rate"],
        "test_accuracy": result["history"]["val_student_accuracy"],
    }
    assert len(card["per_epoch"]["learning_rate"]) == 1 and "note" not in card
    (tmp_path / "run" / "flags.txt").write_text(
        f"--data_dir={run.data_dir}\n--model_dir={run.model_dir}\n--epochs=1\n"
    )
    card = experts.ship(
        run.model_dir, "mine", "tiny images", weights_dir=tmp_path / "weights", note="resumed"
    )
    assert card["note"] == "resumed"
    assert card["flags"] == ["--data_dir=<data_dir>", "--model_dir=runs/mine", "--epochs=1"]
    assert card["command"] == "python apps/train.py " + " ".join(card["flags"])
    assert experts.sha256(shipped) == experts.sha256(tmp_path / "run" / "student.keras")
    (tmp_path / "rl").mkdir()
    (tmp_path / "rl" / "config.json").write_text(json.dumps({"method": "rl"}))
    (tmp_path / "rl" / "results.json").write_text("{}")
    with pytest.raises(ValueError, match="is a --method=rl run"):
        experts.ship(tmp_path / "rl", "x", weights_dir=tmp_path / "w")


@pytest.mark.parametrize("name", experts.names())
def test_shipped_cards_hold_no_paths_of_the_machine_they_were_made_on(name):
    text = json.dumps(experts.card(name))
    for path in ("/tmp", "/work", "/home", "/root", "../shared"):
        assert path not in text, f"{name}'s card names {path}"
    assert experts.card(name)["command"].startswith("python apps/train.py ")


CIFAR10_EXPERTS = [name for name in experts.names() if name.startswith("cifar10_")]


@pytest.mark.parametrize("name", CIFAR10_EXPERTS)
def test_shipped_cifar10_expert_matches_its_card(name):
    card = experts.card(name)
    model = experts.load(name)  # checks the sha256
    assert model.output_shape == (None, 10) and model.input_shape == (None, 32, 32, 3)
    assert model.count_params() == card["parameters"]
    assert len(card["class_names"]) == 10 and 0.8 < card["test_accuracy"] < 1.0


@pytest.mark.skipif(not CIFAR_ZIP.exists(), reason=f"the real CIFAR-10 archive is not at {CIFAR_ZIP}")
@pytest.mark.parametrize("name", CIFAR10_EXPERTS)
def test_shipped_cifar10_expert_is_as_accurate_as_its_card_says(name):
    from PIL import Image

    card = experts.card(name)
    images, labels = [], []
    with zipfile.ZipFile(CIFAR_ZIP) as archive:
        for member in archive.namelist():
            path = Path(member)
            # The first 50 test images of each class: 500 in all.
            if path.suffix == ".jpg" and path.parent.parent.name == "test" and int(path.stem) < 50:
                with archive.open(member) as file:
                    images.append(np.asarray(Image.open(file).convert("RGB"), np.float32))
                labels.append(card["class_names"].index(path.parent.name))
    assert len(images) == 500
    x = (np.stack(images) - np.array(card["mean"])) / np.array(card["std"])
    logits = experts.load(name).predict(x, batch_size=100, verbose=0)
    accuracy = float(np.mean(np.argmax(logits, axis=1) == np.array(labels)))
    # 500 images estimate the accuracy to about +-2 points (2 sigma).
    assert accuracy > card["test_accuracy"] - 0.05
    keras.backend.clear_session()
