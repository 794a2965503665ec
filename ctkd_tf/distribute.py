"""Choosing a `tf.distribute` strategy by name."""

import functools

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
        A `tf.distribute.Strategy`. A process gets one `MirroredStrategy` per set of
        devices: asked again (another run, a tuner's next trial), it returns that one.

    Raises:
        ValueError: for an unknown name.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; known: {', '.join(STRATEGIES)}.")
    if name == "multi_worker":  # before anything starts the runtime, as it requires
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")][:num_gpus]
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return _mirrored(tuple(gpus) or None)
    return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0")


@functools.cache
def _mirrored(devices):
    """One `MirroredStrategy` per set of devices in a process, shared by its runs: the
    collective ops of two such strategies over the same devices share instance keys, so
    a second one training another model collides with the first ("Shape mismatch in the
    collective instance")."""
    return tf.distribute.MirroredStrategy(devices)


def is_multi_worker(strategy):
    """Whether the strategy spans more than one worker process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver is not None and len(resolver.cluster_spec().as_dict().get("worker", ())) > 1


def is_chief(strategy):
    """Whether this process writes the run's outputs: always, but for non-chief workers."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def output_dir(model_dir, strategy):
    """Where this process writes: `model_dir` for the chief, a private folder for other workers.

    Other workers compute the same thing as the chief but must not overwrite its
    files; what they write goes to `model_dir/.workers/<type>_<id>`.
    """
    if is_chief(strategy):
        return model_dir
    resolver = strategy.cluster_resolver
    return f"{model_dir}/.workers/{resolver.task_type}_{resolver.task_id}"
