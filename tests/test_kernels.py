"""Import order: oneDNN's kernels when ctkd_tf comes first, one clear warning when it comes too late."""

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


def test_tensorflow_first_warns_once_with_the_ways_out():
    out, err = run(f"import keras\nimport ctkd_tf\nimport ctkd_tf.models\n{REPORT}")
    assert "onednn False" in out
    assert err.count("PerformanceWarning") == 1
    assert "<string>:2" in err  # points at the user's import
    assert "import ctkd_tf before" in err and "TF_ENABLE_ONEDNN_OPTS=1" in err


@pytest.mark.parametrize("choice", ["0", "1"])
def test_a_users_choice_is_kept_without_warning(choice):
    out, err = run(f"import tensorflow\nimport ctkd_tf\n{REPORT}", TF_ENABLE_ONEDNN_OPTS=choice)
    assert f"onednn {choice == '1'}" in out
    assert "PerformanceWarning" not in err
