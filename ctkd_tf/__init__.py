"""ctkd-tf: Collaborative Teaching Knowledge Distillation for Keras and TensorFlow."""

from ctkd_tf import losses, models
from ctkd_tf.ctkd import CTKD
from ctkd_tf.losses import AttentionTransfer, KnowledgeDistillation

__all__ = ["CTKD", "AttentionTransfer", "KnowledgeDistillation", "losses", "models"]
__version__ = "0.1.0"
