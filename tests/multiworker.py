"""One worker of the multi-worker test: `python multiworker.py CONFIG_JSON TASK PORTS [DIE_AT]`.

DIE_AT `E:S`: worker 1 dies before step S of epoch E.

Not a test itself: tests/test_multiworker.py starts two of these on 127.0.0.1.
"""

import json
import os
import sys

config_json, task, ports = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
die_at = tuple(int(n) for n in sys.argv[4].split(":")) if len(sys.argv) > 4 else None
os.environ["TF_CONFIG"] = json.dumps(
    {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": task}}
)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from ctkd_tf import train  # noqa: E402


class Die(keras.callbacks.Callback):
    """A worker killed before a step of an epoch, as by a preemption."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == die_at:
            os._exit(17)


config = train.TrainConfig(**json.loads(config_json))
train.train_and_evaluate(config, callbacks=[Die()] if die_at is not None else [])
