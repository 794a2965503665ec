"""TensorFlow's CPU kernels: oneDNN's where TensorFlow would not pick them, and a warning when too late.

This module must not import TensorFlow: `prefer_onednn` runs before it loads.
"""

import os
import platform
import sys
import warnings

# TensorFlow reads this once, when it loads.
ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


class PerformanceWarning(UserWarning):
    """Training will run slower than it could, and how to avoid it."""


def _x86():
    return platform.machine().lower() in ("x86_64", "amd64")


def prefer_onednn():
    """Asks for oneDNN's kernels on x86 unless the user chose; returns whether TensorFlow had loaded.

    TensorFlow turns them on by itself only on x86 CPUs with AVX-512 VNNI/BF16 or AMX.
    On the others (AVX2) its own convolution gradients make these networks'
    training steps 1.7-1.9x slower (docs/BENCHMARKS.md).
    """
    if _x86():
        os.environ.setdefault(ONEDNN_VARIABLE, "1")
    return "tensorflow" in sys.modules


def onednn_enabled():
    """Whether the TensorFlow of this process runs oneDNN's CPU kernels (loads TensorFlow)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def warn_if_onednn_missing(user_choice, stacklevel=3):
    """Warns once when TensorFlow loaded before us without oneDNN, unless the user chose that.

    Args:
        user_choice: the variable's value before `prefer_onednn` (None: unset).
        stacklevel: where the warning points (the `import ctkd_tf` line by default).
    """
    if not _x86() or user_choice is not None or onednn_enabled():
        return
    warnings.warn(
        "ctkd_tf was imported after TensorFlow (or Keras), which loaded without its oneDNN CPU "
        f"kernels: {ONEDNN_VARIABLE} is read once, when TensorFlow loads. Training steps here "
        "run about 1.7x slower than they could. To get the fast kernels, import ctkd_tf before "
        f"keras and tensorflow, or start Python with {ONEDNN_VARIABLE}=1 in the environment "
        f"({ONEDNN_VARIABLE}=0 keeps TensorFlow's own kernels and silences this warning).",
        PerformanceWarning,
        stacklevel=stacklevel,
    )


def pin_threads():
    """Runs each op on one thread, one op at a time, for `--deterministic`.

    With several threads, runs of the full-size CTKD networks drift apart (about 1e-4
    within two epochs; docs/RESULTS.md) although each op is deterministic; one thread
    per op removes most of that, not all, and costs about 40 % of the speed on 2 cores.
    TensorFlow takes these settings only before it starts its runtime.

    Returns:
        Whether TensorFlow now runs single-threaded (False: it had started already).
    """
    import tensorflow as tf

    threading = tf.config.threading
    try:
        threading.set_intra_op_parallelism_threads(1)
        threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    return threading.get_intra_op_parallelism_threads() == threading.get_inter_op_parallelism_threads() == 1
