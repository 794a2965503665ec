"""ctkd-tf: Collaborative Teaching Knowledge Distillation for Keras and TensorFlow.

`import ctkd_tf` loads Keras and TensorFlow; the modules that need TensorFlow Datasets
(`data`, `config`, `train`) or KerasTuner (`tune`) load when first used.
"""

import importlib
import os

from ctkd_tf import kernels

_ONEDNN_CHOICE = os.environ.get(kernels.ONEDNN_VARIABLE)
# Before anything imports TensorFlow: it reads the kernel choice once, when it loads.
_TENSORFLOW_FIRST = kernels.prefer_onednn()

from ctkd_tf import batchnorm, callbacks, distribute, experts, export, losses, methods, models, resume  # noqa: E402
from ctkd_tf.ctkd import CTKD  # noqa: E402
from ctkd_tf.distiller import Distiller, hinton_kd  # noqa: E402
from ctkd_tf.losses import AttentionTransfer, KnowledgeDistillation  # noqa: E402

if _TENSORFLOW_FIRST:
    kernels.warn_if_onednn_missing(_ONEDNN_CHOICE)

# Loaded on first use: name -> (module, attribute or None for the module itself).
_LAZY = {
    "config": ("ctkd_tf.config", None),
    "data": ("ctkd_tf.data", None),
    "train": ("ctkd_tf.train", None),
    "tune": ("ctkd_tf.tune", None),
    "CTKDHyperModel": ("ctkd_tf.tune", "CTKDHyperModel"),
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'ctkd_tf' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = importlib.import_module(module)
    return getattr(value, attribute) if attribute else value


__all__ = [
    "CTKD",
    "AttentionTransfer",
    "CTKDHyperModel",
    "Distiller",
    "KnowledgeDistillation",
    "batchnorm",
    "callbacks",
    "config",
    "data",
    "distribute",
    "experts",
    "export",
    "hinton_kd",
    "kernels",
    "losses",
    "methods",
    "models",
    "resume",
    "train",
    "tune",
]
__version__ = "0.1.0"
