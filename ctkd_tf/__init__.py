"""ctkd-tf: Collaborative Teaching Knowledge Distillation for Keras and TensorFlow."""

import os

from ctkd_tf import kernels

_ONEDNN_CHOICE = os.environ.get(kernels.ONEDNN_VARIABLE)
# Before anything imports TensorFlow: it reads the kernel choice once, when it loads.
_TENSORFLOW_FIRST = kernels.prefer_onednn()

from ctkd_tf import batchnorm, callbacks, data, distribute, experts, export, losses, models, train, tune  # noqa: E402
from ctkd_tf.ctkd import CTKD  # noqa: E402
from ctkd_tf.distiller import Distiller, hinton_kd  # noqa: E402
from ctkd_tf.losses import AttentionTransfer, KnowledgeDistillation  # noqa: E402
from ctkd_tf.tune import CTKDHyperModel  # noqa: E402

if _TENSORFLOW_FIRST:
    kernels.warn_if_onednn_missing(_ONEDNN_CHOICE)

__all__ = [
    "CTKD",
    "AttentionTransfer",
    "CTKDHyperModel",
    "Distiller",
    "KnowledgeDistillation",
    "batchnorm",
    "callbacks",
    "data",
    "distribute",
    "experts",
    "export",
    "hinton_kd",
    "kernels",
    "losses",
    "models",
    "train",
    "tune",
]
__version__ = "0.1.0"
