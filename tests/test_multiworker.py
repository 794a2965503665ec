"""Multi-worker training: two worker processes on 127.0.0.1 equal one process, and resume."""

import dataclasses
import json
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np

from ctkd_tf import train

from conftest import tiny_train_config

WORKER = Path(__file__).with_name("multiworker.py")
TIMEOUT_S = 300


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ",".join(map(str, ports))


def start_workers(config, die_at=None):
    values = dataclasses.asdict(config)
    values.update(strategy="multi_worker", lr_boundaries=list(config.lr_boundaries), export=[])
    ports = free_ports(2)
    return [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                json.dumps(values),
                str(task),
                ports,
                *([str(die_at)] if die_at is not None and task == 1 else []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for task in range(2)
    ]


def wait(workers):
    codes = []
    for worker in workers:
        try:
            worker.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for w in workers:
                w.kill()
            raise
        codes.append(worker.returncode)
    return codes, [w.stdout.read() for w in workers]


def weights(path):
    return [w.numpy() for w in keras.models.load_model(path).weights]


def config_for(tmp_path, name):
    return tiny_train_config(
        tmp_path,
        name,
        images={"train": {"a": 8, "b": 8}, "test": {"a": 3, "b": 3}},
        seed=2,
        sync_batchnorm=True,  # batch statistics over the global batch, as in one process
        checkpoint_steps=1,
    )


def test_two_workers_equal_one_process_and_resume_after_a_kill(tmp_path):
    single = config_for(tmp_path, "single")
    train.train_and_evaluate(single)
    expected = weights(Path(single.model_dir) / "student.keras")

    # Worker 1 dies before the second step of epoch 1; the chief's collectives then
    # fail. Restarting both resumes from the chief's checkpoint of that epoch's first
    # step (every worker reads the chief's): the rest of the epoch, then epoch 2, in the
    # same process (nothing reread). The two workers end where the single process did.
    config = config_for(tmp_path, "workers")
    codes, logs = wait(start_workers(config, die_at="1:1"))
    assert codes[1] == 17 and codes[0] != 0, "\n".join(logs)
    chief = Path(config.model_dir)
    checkpoint = json.loads((chief / "checkpoints" / "training_metadata.json").read_text())
    assert (checkpoint["epoch"], checkpoint["batch"]) == (1, 1)
    codes, logs = wait(start_workers(config))
    assert codes == [0, 0], "\n".join(logs)
    other = chief / ".workers" / "worker_1"
    assert (chief / "checkpoints").exists() and not (other / "checkpoints").exists()
    assert (chief / "tensorboard").exists() and (chief / "results.json").exists()
    history = json.loads((chief / "results.json").read_text())["history"]
    assert history["epoch"] == [0.0, 1.0, 2.0]
    for path in (chief / "student.keras", other / "student.keras"):
        for a, b in zip(weights(path), expected, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
