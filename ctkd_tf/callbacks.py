"""Keras callbacks of the training loop: data epochs, hint warm-up, NaN guard, learning rate, images."""

import csv
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from ctkd_tf import losses
from ctkd_tf.ctkd import feature_tap


class DataEpoch(keras.callbacks.Callback):
    """Points a training pipeline at the epoch being run, so a resumed run replays it.

    Args:
        epoch: the `DatasetInfo.epoch` variable of a training pipeline.
    """

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def __deepcopy__(self, memo):
        # KerasTuner copies callbacks for each trial; the copy must still point at
        # the pipeline's variable, not at a copy of it.
        return DataEpoch(self.epoch)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch.assign(epoch)


class HintWarmup(keras.callbacks.Callback):
    """Ramps a `CTKD` model's hint weight linearly from 0 over the first epochs.

    Epoch `e` (counting from 0) trains with `weight * min(1, e / epochs)`: the
    student is not pulled toward the scratch teacher while that teacher is at its
    weakest. Set per epoch from the epoch's index, so a resumed run gets the same
    weights.

    Args:
        weight: the hint weight after the warm-up.
        epochs: length of the ramp, in epochs (>= 1).
    """

    def __init__(self, weight, epochs):
        super().__init__()
        if epochs < 1:
            raise ValueError(f"HintWarmup needs epochs >= 1, got {epochs}.")
        self.weight = weight
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        self.model.hint_weight = self.weight * min(1.0, epoch / self.epochs)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["hint_weight"] = self.model.hint_weight


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's `BackupAndRestore`, safe to kill at any moment, written by the chief only.

    Each checkpoint's weights go to a new file, `epoch<N>[_step<K>].weights.h5`; the
    checkpoint changes only when `training_metadata.json`, naming that file and the
    epoch, is replaced (an atomic rename). A process killed at any point, even with
    SIGKILL while writing, leaves the previous checkpoint whole, and a rerun resumes
    from it. The workers of a synchronous run hold the same weights; one backup is
    enough, and several processes writing one file would corrupt it.

    With `save_steps`, a checkpoint is also written every `save_steps` training steps
    within an epoch: `"batch"` in the metadata is then the steps of epoch `"epoch"`
    already trained, and `"metrics"` the values of the model's metric variables, so
    that the epoch's logged means come out as an uninterrupted epoch's. Keras's own
    callback restarts such an epoch from its first step; `train.Stage.fit` resumes it
    at the next one (`resume_step`), over the rest of the epoch's batches. Steps, not
    seconds: every worker of a synchronous run takes the same decision.

    The checkpoint also records `wall_time_s`, the seconds of `fit` it took to train
    its steps, summed over the processes that trained them: a run resumed five
    times reports what it cost, not what its last process took.

    Args:
        backup_dir: the backup folder, shared by the workers.
        chief: whether this process writes the backup.
        save_steps: also a checkpoint every this many steps of an epoch; 0 for none.
    """

    def __init__(self, backup_dir, chief=True, save_steps=0):
        super().__init__(backup_dir, delete_checkpoint=False)
        self.chief = chief
        self.save_steps = save_steps

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._started = time.monotonic()
        metadata = checkpoint_metadata(self.backup_dir)
        self._earlier = metadata.get("wall_time_s", 0.0)
        # A fit resuming an epoch begins `resume_step` steps into it, its metrics as they were.
        self._step_offset = resume_step(metadata)
        self._metrics = metadata.get("metrics") if self._step_offset else None

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch, self._done = epoch, self._step_offset  # completed epochs, steps of this one
        if self._metrics is not None:
            variables = self.model.metrics_variables
            if len(variables) != len(self._metrics):
                raise ValueError(
                    f"The checkpoint in {self.backup_dir} holds {len(self._metrics)} metric values, "
                    f"the model has {len(variables)}: it was written by another model."
                )
            for variable, value in zip(variables, self._metrics, strict=True):
                variable.assign(np.asarray(value, dtype=variable.dtype))
            self._metrics = None

    def on_train_batch_end(self, batch, logs=None):
        # `batch` is the last step of the call (several with `steps_per_execution`).
        before, self._done = self._done, self._step_offset + batch + 1
        last = batch + 1 == self.params.get("steps")  # the epoch's end saves it
        if self.save_steps and not last and self._done // self.save_steps > before // self.save_steps:
            metrics = [np.asarray(v).tolist() for v in self.model.metrics_variables]  # on every worker
            if self.chief:
                self._save_model(step=self._done, metrics=metrics)

    def on_epoch_end(self, epoch, logs=None):
        self._step_offset = 0
        if self.chief:
            super().on_epoch_end(epoch, logs)

    def _save_model(self, step=0, metrics=None):
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch{self._current_epoch}{f'_step{step}' if step else ''}.weights.h5"
        partial = os.path.join(self.backup_dir, f"partial.{name}")
        self.model.save_weights(partial, overwrite=True)
        os.replace(partial, os.path.join(self.backup_dir, name))
        metadata = {
            "epoch": self._current_epoch,
            "batch": step,
            "weights": name,
            "wall_time_s": round(self._earlier + time.monotonic() - self._started, 1),
        }
        if step:
            metadata["metrics"] = metrics
        with open(f"{self._training_metadata_path}.partial", "w") as file:
            json.dump(metadata, file)
        os.replace(f"{self._training_metadata_path}.partial", self._training_metadata_path)  # the commit
        for old in os.listdir(self.backup_dir):
            if old.endswith(".weights.h5") and old != name:
                os.remove(os.path.join(self.backup_dir, old))

    def _load_model(self):
        metadata = checkpoint_metadata(self.backup_dir)
        # Checkpoints written before the atomic scheme keep Keras's file name.
        self._weights_path = os.path.join(self.backup_dir, metadata.get("weights", "latest.weights.h5"))
        super()._load_model()


def checkpoint_metadata(backup_dir):
    """The committed checkpoint of `backup_dir`, or {}.

    `{"epoch": completed epochs, "batch": steps of the next epoch trained, "weights":
    file, "wall_time_s": seconds trained}`, with `"metrics"` when `"batch"` is not 0;
    checkpoints of older versions lack `wall_time_s`.
    """
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return {}
    with open(path) as file:
        return json.load(file)


def resume_step(metadata):
    """The steps of its next epoch a checkpoint's metadata has trained (0: none, or an epoch's end)."""
    return metadata.get("batch", 0) if "metrics" in metadata else 0


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
        with open(f"{path}.partial", "w", newline="") as file:
            csv.writer(file).writerows(kept)
        os.replace(f"{path}.partial", path)


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss, before anything is saved.

    Raising (rather than setting `stop_training`) skips the epoch's end, so the
    backup of the last completed epoch is not overwritten with broken weights.
    """

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise FloatingPointError(
                f"The loss became {float(loss)} at step {batch + 1} of this epoch. Training stopped; "
                "the checkpoint of the last completed epoch is kept. Lower --learning_rate or the "
                "loss weights, then rerun the same command to resume from it."
            )


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's current learning rate to the epoch logs (CSV, TensorBoard)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class AttentionImages(keras.callbacks.Callback):
    """Writes the attention maps of fixed images to TensorBoard at each epoch's end.

    For each matching point, the student's maps (and the expert's, when there is
    one) of the same few images, so that one can see what the expert teaches.

    Args:
        log_dir: where the summaries go (a TensorBoard run directory).
        images: a small batch of normalised images `(n, height, width, channels)`.
        student: the student network.
        student_layers: the student's layer names to draw.
        expert: the expert network, or None.
        expert_layers: the expert's layer names, paired with `student_layers`.
        display_images: the same images scaled to `[0, 1]`, shown once.
    """

    def __init__(
        self, log_dir, images, student, student_layers, expert=None, expert_layers=None, display_images=None
    ):
        super().__init__()
        self.images = tf.convert_to_tensor(images)
        self.layers = list(student_layers)
        self.student_tap = feature_tap(student, self.layers, "student", with_logits=False)
        self.expert_tap = None
        if expert is not None:
            self.expert_tap = feature_tap(expert, list(expert_layers), "expert_teacher", with_logits=False)
        self.writer = tf.summary.create_file_writer(log_dir)
        self.display_images = display_images

    def _maps(self, tap):
        features = tap(self.images, training=False)
        features = features if isinstance(features, (list, tuple)) else [features]
        maps = []
        for feature in features:
            flat = losses.attention_map(feature)
            height, width = feature.shape[1], feature.shape[2]
            spatial = tf.reshape(flat, (-1, height, width, 1))
            # Scale each map to [0, 1] for display, and to the input's size.
            low = tf.reduce_min(spatial, axis=(1, 2, 3), keepdims=True)
            high = tf.reduce_max(spatial, axis=(1, 2, 3), keepdims=True)
            spatial = (spatial - low) / tf.maximum(high - low, 1e-12)
            maps.append(tf.image.resize(spatial, self.images.shape[1:3], method="nearest"))
        return maps

    def on_epoch_end(self, epoch, logs=None):
        n = int(self.images.shape[0])
        with self.writer.as_default(step=epoch):
            if epoch == 0 and self.display_images is not None:
                tf.summary.image("attention/images", self.display_images, max_outputs=n)
            for name, spatial in zip(self.layers, self._maps(self.student_tap), strict=True):
                tf.summary.image(f"attention/student/{name}", spatial, max_outputs=n)
            if self.expert_tap is not None:
                for name, spatial in zip(self.layers, self._maps(self.expert_tap), strict=True):
                    tf.summary.image(f"attention/expert/{name}", spatial, max_outputs=n)
        self.writer.flush()


def display_images(images, mean, std):
    """Normalised images back to `[0, 1]` for display."""
    return np.clip((np.asarray(images) * np.asarray(std) + np.asarray(mean)) / 255.0, 0.0, 1.0)
