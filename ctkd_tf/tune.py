"""KerasTuner search over the CTKD loss weights: a HyperModel and the search pipeline."""

import dataclasses
import json
import os

import keras
import keras_tuner
from absl import logging

from ctkd_tf import callbacks as ctkd_callbacks
from ctkd_tf.ctkd import ATTENTION_TARGETS
from ctkd_tf.train import TEACHERS, Stage, dtype_policy, train_and_evaluate

OBJECTIVE = keras_tuner.Objective("val_student_accuracy", direction="max")
TUNERS = {
    "bayesian": keras_tuner.BayesianOptimization,
    "hyperband": keras_tuner.Hyperband,
    "random": keras_tuner.RandomSearch,
}


def _check_range(name, bounds, log):
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"The range of {name} must be (min, max), got {bounds!r}.") from None
    if low > high:
        raise ValueError(f"The range of {name} has min {low} > max {high}.")
    if log and low <= 0:
        raise ValueError(f"{name} is searched on a log scale: its min must be > 0, got {low}.")
    return low, high, log


class CTKDHyperModel(keras_tuner.HyperModel):
    """The search space of the CTKD loss weights, for any KerasTuner tuner.

    Each trial draws values and calls `build_model` with them as keyword arguments
    named like `CTKD`'s and the training flags (`hint_weight`, `attention_weight`,
    ...). Its objective is `OBJECTIVE`, `val_student_accuracy` (max).

        def build(hint_weight, attention_weight):
            model = ctkd_tf.CTKD(make_student(), make_scratch(), expert,
                                 hint_weight=hint_weight, attention_weight=attention_weight)
            model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
            return model

        tuner = keras_tuner.RandomSearch(CTKDHyperModel(build), objective=OBJECTIVE, max_trials=8)

    Args:
        build_model: returns a compiled model (fresh student and scratch teacher)
            from the drawn values.
        hint_weight: `(min, max)`, searched on a log scale; None: not searched.
        attention_weight: `(min, max)`, log scale; None: not searched.
        attention_target: choices among `ATTENTION_TARGETS`; None: not searched.
        kd_temperature: `(min, max)`, linear; None: not searched.
        kd_alpha: `(min, max)` within `[0, 1]`, linear; None: not searched.
        learning_rate: `(min, max)`, log scale; None: not searched.

    Raises:
        ValueError: for a range with min > max or a non-positive bound on a log scale.
    """

    def __init__(
        self,
        build_model,
        hint_weight=(1e-3, 1.0),
        attention_weight=(10.0, 1e4),
        attention_target=None,
        kd_temperature=None,
        kd_alpha=None,
        learning_rate=None,
        name="ctkd",
    ):
        super().__init__(name=name)
        self.build_model = build_model
        self.ranges = {
            name: _check_range(name, bounds, log)
            for name, bounds, log in (
                ("hint_weight", hint_weight, True),
                ("attention_weight", attention_weight, True),
                ("kd_temperature", kd_temperature, False),
                ("kd_alpha", kd_alpha, False),
                ("learning_rate", learning_rate, True),
            )
            if bounds is not None
        }
        if kd_alpha is not None and not 0 <= self.ranges["kd_alpha"][0] <= self.ranges["kd_alpha"][1] <= 1:
            raise ValueError(f"The range of kd_alpha must lie in [0, 1], got {kd_alpha}.")
        self.attention_target = list(attention_target) if attention_target else None
        if self.attention_target and not set(self.attention_target) <= set(ATTENTION_TARGETS):
            raise ValueError(
                f"attention_target choices must be among {', '.join(ATTENTION_TARGETS)}, "
                f"got {attention_target}."
            )

    def build(self, hp):
        values = {
            name: hp.Float(name, low, high, sampling="log" if log else "linear")
            for name, (low, high, log) in self.ranges.items()
        }
        if self.attention_target:
            values["attention_target"] = hp.Choice("attention_target", self.attention_target)
        return self.build_model(**values)


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """How to search; the run itself is a `TrainConfig`.

    Attributes mirror the flags of `apps/tune.py`.
    """

    tuner: str = "bayesian"
    max_trials: int = 12
    tune_epochs: int = 15
    tune_split: str = "train[:90%]"
    val_split: str = "train[90%:]"
    hint_weight_range: tuple | None = (1e-3, 1.0)
    attention_weight_range: tuple | None = (10.0, 1e4)
    tune_attention_target: bool = False
    kd_temperature_range: tuple | None = (1.0, 8.0)
    kd_alpha_range: tuple | None = (0.5, 0.99)
    learning_rate_range: tuple | None = None
    final_train: bool = False

    def __post_init__(self):
        for name in ("hint_weight", "attention_weight", "kd_temperature", "kd_alpha", "learning_rate"):
            bounds = getattr(self, f"{name}_range")
            if bounds is not None:
                _check_range(name, bounds, log=name not in ("kd_temperature", "kd_alpha"))
        if self.tuner not in TUNERS:
            raise ValueError(f"tuner must be one of {', '.join(TUNERS)}, got {self.tuner!r}.")
        if self.max_trials < 1 or self.tune_epochs < 1:
            raise ValueError("max_trials and tune_epochs must be >= 1.")


def search_space(config, search):
    """The `CTKDHyperModel` ranges that apply to `config.method`."""
    uses_scratch, uses_expert = TEACHERS[config.method]
    kd = config.method == "kd"
    return dict(
        hint_weight=search.hint_weight_range if uses_scratch else None,
        attention_weight=search.attention_weight_range if uses_expert and not kd else None,
        attention_target=list(ATTENTION_TARGETS)
        if search.tune_attention_target and config.method == "ctkd"
        else None,
        kd_temperature=search.kd_temperature_range if kd else None,
        kd_alpha=search.kd_alpha_range if kd else None,
        learning_rate=search.learning_rate_range,
    )


def tune_and_evaluate(config, search):
    """Searches the loss weights; optionally retrains with the best on the full data.

    The expert is trained (or loaded) once, on `search.tune_split`, and shared by
    all trials. Trials train on `search.tune_split` and are scored on
    `search.val_split`, both carved from the training set. Everything goes under
    `config.model_dir`: the tuner's project (`tuner/`; a rerun continues the
    search), `tensorboard/` (one run per trial, with the HParams view),
    `best_hparams.json`, `trials.json`, and with `final_train` the final run in
    `final/`.

    Args:
        config: the `TrainConfig` of the runs (method, networks, recipe).
        search: a `SearchConfig`.

    Returns:
        `{"best_hparams": ..., "trials": [...], "final": results or None}`.
    """
    with dtype_policy(config.mixed_precision):
        return _tune_and_evaluate(config, search)


def _tune_and_evaluate(config, search):
    trial_config = dataclasses.replace(config, epochs=search.tune_epochs)
    stage = Stage(trial_config, train_split=search.tune_split, eval_split=search.val_split)
    expert = stage.expert() if TEACHERS[config.method][1] else None
    hypermodel = CTKDHyperModel(
        lambda **values: stage.model(dataclasses.replace(trial_config, **values), expert),
        **search_space(config, search),
    )
    options = dict(
        objective=OBJECTIVE,
        directory=stage.out,
        project_name="tuner",
        overwrite=False,  # a rerun continues the search
        seed=config.seed,
        distribution_strategy=stage.strategy,
    )
    if search.tuner == "hyperband":
        tuner = keras_tuner.Hyperband(hypermodel, max_epochs=search.tune_epochs, **options)
    else:
        tuner = TUNERS[search.tuner](hypermodel, max_trials=search.max_trials, **options)
    tuner.search(
        stage.train_ds,
        validation_data=stage.eval_ds,
        epochs=search.tune_epochs,
        shuffle=False,
        verbose=config.verbose,
        callbacks=[
            # Every trial sees the same epochs of data: a fair comparison.
            ctkd_callbacks.DataEpoch(stage.train_info.epoch),
            keras.callbacks.TensorBoard(os.path.join(stage.out, "tensorboard")),
        ],
    )
    trials = [
        {"trial_id": t.trial_id, "val_student_accuracy": t.score, "hparams": t.hyperparameters.values}
        for t in tuner.oracle.get_best_trials(num_trials=len(tuner.oracle.trials))
        if t.score is not None
    ]
    best = trials[0]["hparams"]
    with open(os.path.join(stage.out, "best_hparams.json"), "w") as file:
        json.dump(best, file, indent=2)
    with open(os.path.join(stage.out, "trials.json"), "w") as file:
        json.dump(trials, file, indent=2)
    logging.info("Trials, best first (val_student_accuracy on %s):", search.val_split)
    for rank, trial in enumerate(trials, start=1):
        values = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial["hparams"].items()
        )
        logging.info(
            "  %2d. trial %s  %.4f  %s", rank, trial["trial_id"], trial["val_student_accuracy"], values
        )

    final = None
    if search.final_train:
        known = {field.name for field in dataclasses.fields(config)}
        final = train_and_evaluate(
            dataclasses.replace(
                config,
                model_dir=os.path.join(config.model_dir, "final"),
                expert_weights=config.expert_weights
                or (os.path.join(stage.out, "expert.keras") if expert else None),
                **{k: v for k, v in best.items() if k in known},
            )
        )
    return {"best_hparams": best, "trials": trials, "final": final}
