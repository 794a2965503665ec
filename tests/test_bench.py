"""The benchmarks' recipes and the budget study's bookkeeping (the runs themselves are benchmarks)."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ctkd_tf import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import budget_study  # noqa: E402

import common  # noqa: E402


@pytest.mark.parametrize("name", sorted(common.VARIANTS))
def test_every_recipe_is_a_valid_config(name):
    config = train.TrainConfig(**common.VARIANTS[name])
    assert config.method in train.METHODS


def test_the_study_runs_the_first_seed_everywhere_before_the_other_seeds():
    args = SimpleNamespace(
        train_examples="500,5000",
        methods="student,at_kd,both_kd",
        seeds="0,1",
        all_seeds_methods="both_kd,at_kd",
    )
    assert budget_study.queue(args) == [
        ("student", 500, 0),
        ("at_kd", 500, 0),
        ("both_kd", 500, 0),
        ("student", 5000, 0),
        ("at_kd", 5000, 0),
        ("both_kd", 5000, 0),
        ("at_kd", 500, 1),
        ("both_kd", 500, 1),
        ("at_kd", 5000, 1),
        ("both_kd", 5000, 1),
    ]


def test_the_gain_pairs_the_recipe_and_at_kd_by_seed(tmp_path):
    accuracies = {("both_kd", 0): 0.70, ("both_kd", 1): 0.69, ("at_kd", 0): 0.68, ("at_kd", 2): 0.5}
    for (method, seed), accuracy in accuracies.items():
        result = dict(method=method, seed=seed, train_examples=100, epochs=10, student_accuracy=accuracy)
        (tmp_path / f"{method}_n100_e10_seed{seed}.json").write_text(json.dumps(result))
    runs = budget_study.load(tmp_path)
    assert sorted(runs) == ["at_kd", "both_kd"] and list(runs["at_kd"]) == [1000]
    assert budget_study.gains(runs, 1000) == pytest.approx([2.0])  # seed 0 only: the others are unpaired


def test_the_rewritten_convolution_gradients_equal_tensorflows():
    import profile_step

    kernels = {name: fn().numpy() for name, fn in profile_step.conv_kernel_functions(2).items()}
    for rewrite, reference in (
        ("input gradient as forward conv", "input gradient"),
        ("kernel gradient as forward conv", "kernel gradient"),
        ("kernel gradient as im2col matmul", "kernel gradient"),
    ):
        np.testing.assert_allclose(kernels[rewrite], kernels[reference], rtol=1e-4, atol=1e-4)
