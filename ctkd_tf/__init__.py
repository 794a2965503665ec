"""ctkd-tf: Collaborative Teaching Knowledge Distillation for Keras and TensorFlow."""

from ctkd_tf import callbacks, data, distribute, experts, export, losses, models, train, tune
from ctkd_tf.ctkd import CTKD
from ctkd_tf.distiller import Distiller, hinton_kd
from ctkd_tf.losses import AttentionTransfer, KnowledgeDistillation
from ctkd_tf.tune import CTKDHyperModel

__all__ = [
    "CTKD",
    "AttentionTransfer",
    "CTKDHyperModel",
    "Distiller",
    "KnowledgeDistillation",
    "callbacks",
    "data",
    "distribute",
    "experts",
    "export",
    "hinton_kd",
    "losses",
    "models",
    "train",
    "tune",
]
__version__ = "0.1.0"
