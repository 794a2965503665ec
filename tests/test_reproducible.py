"""Reruns as a user makes them: full-size networks in separate processes, and a SIGKILL mid-run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from ctkd_tf import resume

from conftest import write_image_folder

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {name: 10 for name in "abcdefghij"}  # ten classes, as the shipped CIFAR-10 expert predicts


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    write_image_folder(root, {"train": CLASSES, "test": {name: 1 for name in CLASSES}}, size=(32, 32))
    return root


def command(images, model_dir):
    """The main job's recipe at full size (WRN-16-1 student, WRN-40-1 teachers), 2 x 2 steps of 50."""
    return [
        sys.executable,
        str(ROOT / "apps" / "train.py"),
        "--flagfile=configs/cifar10.flags",
        "--dataset=image_folder",
        f"--data_dir={images}",
        "--expert_weights=cifar10_wrn40_1",
        "--min_expert_accuracy=0",  # the CIFAR-10 expert on random images: checked, held to no bar
        "--epochs=2",
        "--batch_size=50",
        "--lr_schedule=cosine",
        "--deterministic",
        "--verbose=0",
        f"--model_dir={model_dir}",
    ]


def start(images, model_dir):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    log = open(f"{model_dir}.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(command(images, model_dir), cwd=ROOT, env=env, stdout=log, stderr=log)


def weights(model_dir):
    return keras.models.load_model(Path(model_dir) / "student.keras").get_weights()


def test_full_size_reruns_agree_and_a_kill_9_resume_loses_nothing(images, tmp_path):
    # Two processes at once: the reference run, and one killed after its first epoch.
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    first, second = start(images, reference), start(images, killed)
    deadline = time.time() + 600
    while resume.checkpoint_metadata(killed / "checkpoints").get("epoch", 0) < 1:
        assert second.poll() is None, (Path(f"{killed}.log").read_text())[-3000:]
        assert time.time() < deadline, "no checkpoint of the first epoch"
        time.sleep(0.05)
    second.send_signal(signal.SIGKILL)
    second.wait()
    assert not (killed / "student.keras").exists()  # it died mid-run
    rows_before = (killed / "log.csv").read_text().splitlines()
    assert first.wait(timeout=600) == 0, Path(f"{reference}.log").read_text()[-3000:]

    rerun = start(images, killed)
    assert rerun.wait(timeout=600) == 0, Path(f"{killed}.log").read_text()[-3000:]
    rows = (killed / "log.csv").read_text().splitlines()
    reference_rows = (reference / "log.csv").read_text().splitlines()
    # Nothing lost or repeated: one row per epoch, the first one as it was written.
    assert len(rows) == 3 and rows[:2] == rows_before[:2]
    # Two processes, same command, and a resume: the same log and the same student, bit for bit.
    assert rows == reference_rows
    resumed, uninterrupted = weights(killed), weights(reference)
    assert len(resumed) == len(uninterrupted)
    for a, b in zip(resumed, uninterrupted, strict=True):
        np.testing.assert_array_equal(a, b)
