"""The checkpoint protocol: nothing a run writes is ever half written, and a rerun resumes it.

Every output goes through `atomic_write` (or `save_model`): written beside its place,
then renamed over it, so a process killed at any moment, even with SIGKILL, leaves the
previous version whole. A checkpoint is a weights file (`epoch<N>[_step<K>].weights.h5`,
the model's and the optimizer's variables) and `training_metadata.json`, which names it;
replacing the metadata commits the checkpoint:

    {"epoch": completed epochs, "batch": steps of the next epoch trained (0 at an epoch's
     end), "weights": file, "wall_time_s": seconds of training so far, all processes,
     "metrics": the metric variables, when "batch" is not 0}

`fit` resumes from it with Keras's public API: `load_weights` (after `optimizer.build`),
then `fit(initial_epoch=...)`; a checkpoint inside an epoch first trains that epoch's
remaining batches (those an uninterrupted run would have seen) as a `fit` of their own,
its metrics restored so that the epoch's logged means are an uninterrupted epoch's
(Keras's own `BackupAndRestore` restarts such an epoch from its first step).
"""

import csv
import io
import json
import os
import time

import keras
import numpy as np
from absl import logging

from ctkd_tf import distribute

METADATA = "training_metadata.json"


def atomic_write(path, text):
    """Writes `text` (str or bytes) to `path` through a rename: a reader sees the old file or the new."""
    partial = f"{path}.partial"
    binary = isinstance(text, bytes)
    with open(partial, "wb" if binary else "w", **({} if binary else {"newline": ""})) as file:
        file.write(text)
    os.replace(partial, path)


def write_json(path, value):
    atomic_write(path, json.dumps(value, indent=2) + "\n")


def save_model(model, path):
    """`model.save(path)` through a rename (Keras names the format by the file's suffix)."""
    partial = os.path.join(os.path.dirname(path), f"partial.{os.path.basename(path)}")
    model.save(partial)
    os.replace(partial, path)


def checkpoint_metadata(backup_dir):
    """The committed checkpoint of `backup_dir` (see the module's docstring), or {}."""
    path = os.path.join(backup_dir, METADATA)
    if not os.path.exists(path):
        return {}
    with open(path) as file:
        return json.load(file)


def resume_step(metadata):
    """The steps of its next epoch a checkpoint has trained (0: none, or an epoch's end)."""
    return metadata.get("batch", 0) if "metrics" in metadata else 0


def wall_time(backup_dir):
    """The seconds of training the checkpoint of `backup_dir` records (0 without one)."""
    return checkpoint_metadata(backup_dir).get("wall_time_s", 0.0)


def trim_log(path, epochs):
    """Keeps the rows of the first `epochs` epochs of a `CSVLogger` file, dropping those a resume redoes."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    if not rows:
        return
    epoch = rows[0].index("epoch")
    kept = [rows[0], *(row for row in rows[1:] if row and int(row[epoch]) < epochs)]
    if len(kept) < len(rows):
        text = io.StringIO()
        csv.writer(text).writerows(kept)
        atomic_write(path, text.getvalue())


class Checkpoint(keras.callbacks.Callback):
    """Commits a checkpoint at each epoch's end and every `save_steps` steps within an epoch.

    Steps, not seconds: every worker of a synchronous run takes the same decision. The
    workers hold the same weights; the chief alone writes (several processes writing one
    file would corrupt it), every worker reads the metric values it saves. Put it last
    among a fit's callbacks: a step or an epoch is committed once everything else
    (`CSVLogger` included) has recorded it.

    Args:
        backup_dir: the checkpoint folder, shared by the workers.
        chief: whether this process writes.
        save_steps: also a checkpoint every this many steps of an epoch; 0 for none.
        earlier_wall_time_s: the seconds the processes before this one trained.
    """

    def __init__(self, backup_dir, chief=True, save_steps=0, earlier_wall_time_s=0.0):
        super().__init__()
        self.backup_dir = backup_dir
        self.chief = chief
        self.save_steps = save_steps
        self._earlier = earlier_wall_time_s
        self._started = None
        self._resume = None  # (steps already trained, metric values) of the epoch a fit resumes

    def resume_within_epoch(self, step, metrics):
        """Makes the next fit's first epoch begin `step` steps in, its metrics at `metrics`."""
        self._resume = (step, metrics)

    def on_train_begin(self, logs=None):
        if self._started is None:  # the first fit of this process
            self._started = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._offset = epoch, 0
        if self._resume is not None:
            self._offset, values = self._resume
            self._resume = None
            variables = self.model.metrics_variables
            if len(variables) != len(values):
                raise ValueError(
                    f"The checkpoint in {self.backup_dir} holds {len(values)} metric values, "
                    f"the model has {len(variables)}: it was written by another model."
                )
            for variable, value in zip(variables, values, strict=True):
                variable.assign(np.asarray(value, dtype=variable.dtype))
        self._done = self._offset

    def on_train_batch_end(self, batch, logs=None):
        # `batch` is the last step of the call (several with `steps_per_execution`).
        before, self._done = self._done, self._offset + batch + 1
        last = batch + 1 == self.params.get("steps")  # the epoch's end saves it
        if self.save_steps and not last and self._done // self.save_steps > before // self.save_steps:
            metrics = [np.asarray(v).tolist() for v in self.model.metrics_variables]  # on every worker
            self._save(self._epoch, self._done, metrics)

    def on_epoch_end(self, epoch, logs=None):
        self._save(epoch + 1, 0, None)

    def _save(self, epoch, step, metrics):
        if not self.chief:
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch{epoch}{f'_step{step}' if step else ''}.weights.h5"
        partial = os.path.join(self.backup_dir, f"partial.{name}")
        self.model.save_weights(partial, overwrite=True)
        os.replace(partial, os.path.join(self.backup_dir, name))
        metadata = {
            "epoch": epoch,
            "batch": step,
            "weights": name,
            "wall_time_s": round(self._earlier + time.monotonic() - self._started, 1),
        }
        if step:
            metadata["metrics"] = metrics
        write_json(os.path.join(self.backup_dir, METADATA), metadata)  # the commit
        for old in os.listdir(self.backup_dir):
            if old.endswith(".weights.h5") and old != name:
                os.remove(os.path.join(self.backup_dir, old))


def restore(model, backup_dir):
    """Loads the committed checkpoint of `backup_dir` into `model` (weights and optimizer).

    Returns:
        Its metadata, or {} when there is none (the model is left as it is).
    """
    metadata = checkpoint_metadata(backup_dir)
    if metadata:
        if model.optimizer is not None and not model.optimizer.built:
            with model.distribute_strategy.scope():  # its variables exist before loading
                model.optimizer.build(model.trainable_variables)
        # Checkpoints of older versions keep Keras's own file name.
        model.load_weights(os.path.join(backup_dir, metadata.get("weights", "latest.weights.h5")))
    return metadata


def fit(
    model, dataset, epochs, backup_dir, log, strategy, save_steps=0, callbacks=(), initial_epoch=0, **options
):
    """`model.fit(dataset, epochs=epochs, ...)`, resumed from and checkpointed to `backup_dir`.

    Args:
        model: a compiled, built model.
        dataset: the training pipeline, `steps` batches a pass (a pass is an epoch).
        epochs: the epochs in all, those of earlier processes included.
        backup_dir: the checkpoint folder (shared by the workers of a multi-worker run).
        log: the run's `CSVLogger` file, whose rows after the checkpoint are dropped (the
            resume writes them again).
        strategy: the run's strategy (the chief writes the checkpoints).
        save_steps: also a checkpoint every this many steps within an epoch.
        callbacks: the fit's other callbacks (a `CSVLogger` of `log` among them).
        initial_epoch: the first epoch when there is no checkpoint.
        **options: for `fit` (`validation_data`, `verbose`, ...).

    Returns:
        The last fit's `History`.
    """
    metadata = restore(model, backup_dir)
    epoch, step = metadata.get("epoch", initial_epoch), resume_step(metadata)
    steps = int(dataset.cardinality())
    if metadata:
        logging.info(
            "Resuming from the checkpoint of epoch %d of %d, step %d (%.0f s of training so far)",
            epoch + bool(step),
            epochs,
            step or steps,
            metadata.get("wall_time_s", 0.0),
        )
    trim_log(log, epoch)
    checkpoint = Checkpoint(
        backup_dir, distribute.is_chief(strategy), save_steps, metadata.get("wall_time_s", 0.0)
    )
    callbacks = [*callbacks, checkpoint]
    if step:  # the rest of the interrupted epoch first, over the batches it had left
        checkpoint.resume_within_epoch(step, metadata["metrics"])
        model.fit(dataset.skip(step), initial_epoch=epoch, epochs=epoch + 1, callbacks=callbacks, **options)
        epoch += 1
    return model.fit(dataset, initial_epoch=epoch, epochs=epochs, callbacks=callbacks, **options)
