"""Keras callbacks of the training loop: data epochs, hint warm-up, learning rate, attention images.

The checkpoints are `resume.Checkpoint`'s.
"""

import keras
import numpy as np
import tensorflow as tf

from ctkd_tf import losses, networks


class DataEpoch(keras.callbacks.Callback):
    """Points a training pipeline at the epoch being run, so a resumed run replays it.

    Args:
        epoch: the `DatasetInfo.epoch` variable of a training pipeline.
    """

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

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
        preprocessing: `CTKD`'s, by role: what each network is fed of the images.
    """

    def __init__(
        self,
        log_dir,
        images,
        student,
        student_layers,
        expert=None,
        expert_layers=None,
        display_images=None,
        preprocessing=None,
    ):
        super().__init__()
        self.images = tf.convert_to_tensor(images)
        self.layers = list(student_layers)
        self.student_tap = networks.View(student, "student", self.layers)
        self.expert_tap = None
        if expert is not None:
            self.expert_tap = networks.View(expert, "expert_teacher", list(expert_layers))
        self.writer = tf.summary.create_file_writer(log_dir)
        self.display_images = display_images
        self.preprocessing = dict(preprocessing or {})

    def _maps(self, tap):
        images = self.images
        if tap.role in self.preprocessing:
            images = self.preprocessing[tap.role](images)
        _, features = tap(images, training=False)
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
