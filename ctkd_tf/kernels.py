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
    """Whether the TensorFlow of this process runs oneDNN's CPU kernels (loads TensorFlow).

    Through a private module: no public API says (checked on TensorFlow 2.21.0).
    """
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


def sum_gradients_in_a_fixed_order():
    """Makes every gradient sum of this process independent of the order ops ran in.

    For `--deterministic`. A tensor used by several ops gets its gradient as one `AddN`
    of their contributions, and TensorFlow's CPU kernel for `AddN` puts first whichever
    input buffer it can reuse for its output, which depends on the order the ops happened
    to run in; with three or more inputs that changes the rounding. The order changes
    between processes (TensorFlow's graph passes number the nodes differently each time),
    so full-size CTKD runs drifted apart in the last bits from their first steps even on
    one thread: the student's logits take the gradients of three terms. Here gradients of
    more than two contributions are summed as `((g0 + g1) + g2) + ...`, two at a time
    (each sum of two is exact whatever the order), and Grappler's arithmetic optimizer,
    which would merge such sums back into one `AddN`, is turned off. Both apply to the
    whole process; they cost little (`docs/BENCHMARKS.md`). Through TensorFlow's private
    `backprop._aggregate_grads` and `pywrap_tfe`, which no public API replaces (checked on
    TensorFlow 2.21.0).

    Returns:
        Whether it took effect (False: this TensorFlow lacks the internals it replaces).
    """
    import tensorflow as tf

    from ctkd_tf.losses import fixed_order_sum

    try:
        from tensorflow.python import pywrap_tfe
        from tensorflow.python.eager import backprop

        default_aggregate = backprop._aggregate_grads
        vspace = backprop._default_vspace
    except (ImportError, AttributeError):
        return False

    def aggregate(gradients):
        if len(gradients) > 2 and all(isinstance(g, tf.Tensor) for g in gradients):
            return fixed_order_sum(gradients)
        return default_aggregate(gradients)  # one or two (exact), or sparse ones

    pywrap_tfe.TFE_Py_RegisterVSpace(vspace._replace(aggregate_fn=aggregate))
    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})
    return True
