"""The KerasTuner search: the HyperModel, the search pipeline, resuming, bad ranges."""

import csv
import dataclasses
import json
import os
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import pytest

import ctkd_tf
from ctkd_tf import tune

from conftest import tiny_cnn, tiny_train_config


def trial_scores(project):
    scores = {}
    for path in Path(project).glob("trial_*/trial.json"):
        trial = json.loads(path.read_text())
        scores[trial["trial_id"]] = trial["score"]
    return scores


def tiny_search(tmp_path, name, hint_warmup_epochs=0, **search):
    """A tiny CTKD run's config and a random search over 60 % of its training photos."""
    config = tiny_train_config(
        tmp_path,
        name,
        images={"train": {"a": 10, "b": 10}, "test": {"a": 2, "b": 2}},
        method="ctkd",
        batch_size=4,
        lr_boundaries=(),
        deterministic=False,
        hint_warmup_epochs=hint_warmup_epochs,
    )
    options = dict(tuner="random", tune_epochs=1, tune_split="train[:60%]", val_split="train[60%:]")
    return config, tune.SearchConfig(**{**options, **search})


def test_search_writes_the_best_values_and_a_rerun_continues(tmp_path):
    config, search = tiny_search(
        tmp_path, "search", max_trials=2, hint_weight_range=(0.01, 0.1), attention_weight_range=(10.0, 100.0)
    )
    result = tune.tune_and_evaluate(config, search)
    out = Path(config.model_dir)
    best = json.loads((out / "best_hparams.json").read_text())
    assert set(best) == {"hint_weight", "attention_weight"}
    assert 0.01 <= best["hint_weight"] <= 0.1 and 10.0 <= best["attention_weight"] <= 100.0
    scores = trial_scores(out / "tuner")
    assert len(scores) == 2
    assert result["trials"][0]["val_student_accuracy"] == max(scores.values())
    assert result["trials"][0]["hparams"] == best
    # The expert, trained once on the tuning split, then shared by the trials.
    assert len((out / "expert" / "log.csv").read_text().strip().splitlines()) == 2  # header + 1 epoch
    expert_mtime = os.path.getmtime(out / "expert.keras")
    # One TensorBoard run per trial, under one log dir.
    assert len(list((out / "tensorboard").iterdir())) == 2

    more = tune.tune_and_evaluate(config, tune.SearchConfig(**{**search.__dict__, "max_trials": 3}))
    again = trial_scores(out / "tuner")
    assert len(again) == 3 and {k: again[k] for k in scores} == scores  # nothing rerun
    assert len(more["trials"]) == 3
    assert os.path.getmtime(out / "expert.keras") == expert_mtime


def test_hypermodel_from_user_code_with_a_kerastuner_tuner(tmp_path, batch):
    x, y = batch
    expert = tiny_cnn(5, seed=3)
    drawn = []

    def build(hint_weight, attention_weight, attention_target):
        drawn.append((hint_weight, attention_weight, attention_target))
        model = ctkd_tf.CTKD(
            tiny_cnn(3, seed=1),
            tiny_cnn(6, seed=2),
            expert,
            attention_pairs=[("feat1", "feat1"), ("feat2", "feat2")],
            attention_target=attention_target,
            hint_weight=hint_weight,
            attention_weight=attention_weight,
        )
        model.compile(optimizer=keras.optimizers.SGD(0.05))
        return model

    hypermodel = tune.CTKDHyperModel(build, attention_target=["student", "scratch"])
    tuner = keras_tuner.RandomSearch(
        hypermodel, objective=tune.OBJECTIVE, max_trials=2, directory=tmp_path, seed=1
    )
    tuner.search(x, y, validation_data=(x, y), epochs=1, batch_size=4, verbose=0)
    assert len(drawn) >= 2  # KerasTuner also builds once with the defaults
    for hint_weight, attention_weight, target in drawn:
        assert (
            1e-3 <= hint_weight <= 1.0
            and 10.0 <= attention_weight <= 1e4
            and target in ("student", "scratch")
        )
    best = tuner.get_best_hyperparameters()[0].values
    assert np.isfinite(tuner.oracle.get_best_trials()[0].score) and set(best) == {
        "hint_weight",
        "attention_weight",
        "attention_target",
    }


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(hint_weight=(1.0, 0.1)), "hint_weight has min 1.0 > max 0.1"),
        (dict(attention_weight=(0.0, 10.0)), "attention_weight is searched on a log scale"),
        (dict(learning_rate=(-1, 0.1)), "learning_rate is searched on a log scale"),
        (dict(kd_alpha=(0.5, 1.5)), r"The range of kd_alpha: kd_alpha must be in \[0, 1\], got 1.5"),
        (dict(hint_weight=(1.0,)), "must be \\(min, max\\)"),
        (dict(attention_target=["expert"]), "attention_target choices"),
    ],
)
def test_bad_ranges_fail_clearly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tune.CTKDHyperModel(lambda **values: None, **kwargs)


def test_tune_app_rejects_a_bad_range_before_any_work(tmp_path):
    import importlib.util
    import sys

    from absl import app, flags

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "apps"))
    spec = importlib.util.spec_from_file_location("tune_app", root / "apps" / "tune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    flags.FLAGS.unparse_flags()
    argv = flags.FLAGS(["tune.py", f"--model_dir={tmp_path / 'run'}", "--hint_weight_range=1,0.1"])
    with pytest.raises(app.UsageError, match="hint_weight has min 1.0 > max 0.1"):
        module.main(argv)
    flags.FLAGS.unparse_flags()
    assert not (tmp_path / "run").exists()


def test_trials_train_as_apps_train_does_hint_warm_up_and_nan_stop_included(tmp_path):
    config, search = tiny_search(
        tmp_path,
        "warmup",
        hint_warmup_epochs=2,
        max_trials=1,
        tune_epochs=2,
        hint_weight_range=(0.1, 0.2),
        attention_weight_range=None,
    )
    best = tune.tune_and_evaluate(config, search)["best_hparams"]
    (log,) = Path(config.model_dir).glob("trials/*/log.csv")
    rows = list(csv.DictReader(log.open()))
    # The warm-up of apps/train.py: epoch e trains with weight * e / 2.
    assert [float(row["hint_weight"]) for row in rows] == pytest.approx([0.0, best["hint_weight"] / 2])
    assert all(float(row["learning_rate"]) > 0 for row in rows)
    nan = dataclasses.replace(config, model_dir=str(tmp_path / "nan"))
    with pytest.raises(RuntimeError, match="No trial of the search ended with a score(.|\n)*nan or inf"):
        tune.tune_and_evaluate(nan, dataclasses.replace(search, learning_rate_range=(1e30, 2e30)))
