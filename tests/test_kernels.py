"""Import order: oneDNN's kernels when ctkd_tf comes first, one clear warning when it comes too late."""

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN is chosen on x86 only"
)

REPORT = "from ctkd_tf import kernels; print('onednn', kernels.onednn_enabled())"


def run(code, **env):
    environment = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    environment.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="default", **env)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=True
    )
    return done.stdout, done.stderr


def test_ctkd_tf_first_turns_onednn_on_silently():
    out, err = run(f"import ctkd_tf\nimport keras\n{REPORT}")
    assert "onednn True" in out
    assert "PerformanceWarning" not in err


def tensorflow_turns_onednn_on_by_itself():
    """TensorFlow's own choice on this CPU: on for AVX-512 VNNI/BF16 or AMX, off on AVX2 alone."""
    out, _ = run(f"import tensorflow\n{REPORT}")
    return "onednn True" in out


def test_tensorflow_first_warns_once_with_the_ways_out():
    out, err = run(f"import keras\nimport ctkd_tf\nimport ctkd_tf.models\n{REPORT}")
    if tensorflow_turns_onednn_on_by_itself():  # nothing lost by the order: no warning
        assert "onednn True" in out
        assert "PerformanceWarning" not in err
        return
    assert "onednn False" in out
    assert err.count("PerformanceWarning") == 1
    assert "<string>:2" in err  # points at the user's import
    assert "import ctkd_tf before" in err and "TF_ENABLE_ONEDNN_OPTS=1" in err


@pytest.mark.parametrize("choice", ["0", "1"])
def test_a_users_choice_is_kept_without_warning(choice):
    out, err = run(f"import tensorflow\nimport ctkd_tf\n{REPORT}", TF_ENABLE_ONEDNN_OPTS=choice)
    assert f"onednn {choice == '1'}" in out
    assert "PerformanceWarning" not in err


GRADIENT_SUMS = """
import json
import tensorflow as tf
from ctkd_tf import kernels

def widest_gradient_sum():
    x = tf.Variable(tf.ones([4, 3]))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            y = x * 2.0  # four contributions to its gradient (y * y counts twice)
            loss = tf.reduce_sum(tf.sin(y)) + tf.reduce_sum(tf.exp(y)) + tf.reduce_sum(y * y)
        return tape.gradient(loss, x)

    graph = step.get_concrete_function().graph
    return max([len(op.inputs) for op in graph.get_operations() if op.type == "AddN"] + [0])

before = widest_gradient_sum()
took = kernels.sum_gradients_in_a_fixed_order()
print(json.dumps([before, took, widest_gradient_sum()]))
"""


def test_deterministic_mode_sums_gradients_two_at_a_time():
    # TensorFlow's AddN reorders its inputs at run time; with three or more that changes
    # the rounding between processes. In a fresh process: the global setting stays there.
    out, _ = run(GRADIENT_SUMS)
    before, took, after = json.loads(out.strip().splitlines()[-1])
    assert before >= 3 and took and after == 0
