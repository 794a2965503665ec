"""Independent NumPy versions of the loss terms, for the tests."""

import numpy as np


def log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def cross_entropy(labels, logits):
    return -log_softmax(logits)[np.arange(len(labels)), labels]


def attention_map(a):
    energy = (np.asarray(a, np.float64) ** 2).mean(axis=-1).reshape(a.shape[0], -1)
    return energy / np.linalg.norm(energy, axis=1, keepdims=True)


def attention_transfer(features, targets):
    return sum(((attention_map(a) - attention_map(t)) ** 2).mean(axis=1) for a, t in zip(features, targets))


def hint(teacher_logits, student_logits):
    return ((np.asarray(teacher_logits, np.float64) - student_logits) ** 2).sum(axis=1)


def knowledge_distillation(teacher_logits, student_logits, temperature):
    log_p = log_softmax(np.asarray(teacher_logits) / temperature)
    log_q = log_softmax(np.asarray(student_logits) / temperature)
    return temperature**2 * (np.exp(log_p) * (log_p - log_q)).sum(axis=1)


def average_pool(a, factor):
    """`(b, h, w, c)` averaged over `factor x factor` blocks."""
    b, h, w, c = a.shape
    return np.asarray(a, np.float64).reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))
