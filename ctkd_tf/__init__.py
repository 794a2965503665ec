"""ctkd-tf: Collaborative Teaching Knowledge Distillation for Keras and TensorFlow."""

import os
import platform

# TensorFlow turns its oneDNN kernels on by default only on x86 CPUs with AVX-512
# VNNI/BF16 or AMX. On the others (AVX2) its own convolution gradients make these
# networks' training steps 1.7-1.9x slower (docs/BENCHMARKS.md). On unless the user
# chose otherwise; it takes effect when ctkd_tf is imported before TensorFlow.
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from ctkd_tf import callbacks, data, distribute, experts, export, losses, models, train, tune  # noqa: E402
from ctkd_tf.ctkd import CTKD  # noqa: E402
from ctkd_tf.distiller import Distiller, hinton_kd  # noqa: E402
from ctkd_tf.losses import AttentionTransfer, KnowledgeDistillation  # noqa: E402
from ctkd_tf.tune import CTKDHyperModel  # noqa: E402

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
