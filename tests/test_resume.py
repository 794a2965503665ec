"""The checkpoint protocol's pieces: atomic writes, the log's trimming."""

import csv

import pytest

from ctkd_tf import resume


def test_a_write_that_fails_midway_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    resume.write_json(path, {"accuracy": 0.5})
    real_replace = resume.os.replace

    def killed(*args):
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(resume.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        resume.write_json(path, {"accuracy": 0.9})
    monkeypatch.setattr(resume.os, "replace", real_replace)
    assert path.read_text() == '{\n  "accuracy": 0.5\n}\n'
    resume.atomic_write(path, b"bytes too")
    assert path.read_bytes() == b"bytes too"


def test_trim_log_keeps_the_epochs_before_the_checkpoint(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("epoch,loss\n0,2.0\n1,1.5\n2,1.2\n")
    resume.trim_log(log, 2)
    assert list(csv.reader(log.open())) == [["epoch", "loss"], ["0", "2.0"], ["1", "1.5"]]
    resume.trim_log(tmp_path / "absent.csv", 1)  # nothing to trim
    assert resume.checkpoint_metadata(tmp_path) == {} and resume.wall_time(tmp_path) == 0.0
