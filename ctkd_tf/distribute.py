"""Choosing a `tf.distribute` strategy by name."""

import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "one_device")


def make_strategy(name="auto", num_gpus=None):
    """Builds the distribution strategy of a run.

    Args:
        name: `"auto"` (MirroredStrategy over the GPUs when there are several, else
            the default strategy), `"default"`, `"mirrored"` (all visible GPUs, or the
            CPU without GPUs), `"multi_worker"` (MultiWorkerMirroredStrategy; reads
            `TF_CONFIG`) or `"one_device"`.
        num_gpus: use at most this many GPUs; None uses all.

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ValueError: for an unknown name.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; known: {', '.join(STRATEGIES)}.")
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")][:num_gpus]
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(gpus or None)
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0")
    return tf.distribute.MultiWorkerMirroredStrategy()
