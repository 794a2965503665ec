"""KerasTuner search over the CTKD loss weights: a HyperModel and the search pipeline."""

import dataclasses
import os

import keras
import keras_tuner
from absl import logging

from ctkd_tf import distribute, methods, resume, train
from ctkd_tf.loss_options import ATTENTION_TARGETS, LossOptions
from ctkd_tf.options import at_least, check_fields, option

OBJECTIVE = keras_tuner.Objective("val_student_accuracy", direction="max")
TUNERS = {
    "bayesian": keras_tuner.BayesianOptimization,
    "hyperband": keras_tuner.Hyperband,
    "random": keras_tuner.RandomSearch,
}
# The ranges a search can have: the value's name (a loss option's, or the learning rate),
# and whether it is searched on a log scale.
RANGES = {
    "hint_weight": True,
    "attention_weight": True,
    "kd_temperature": False,
    "kd_alpha": False,
    "learning_rate": True,
}


LOSS_OPTIONS = {f.name for f in dataclasses.fields(LossOptions)}


def _check_range(name, bounds, log):
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"The range of {name} must be (min, max), got {bounds!r}.") from None
    if low > high:
        raise ValueError(f"The range of {name} has min {low} > max {high}.")
    if log and low <= 0:
        raise ValueError(f"{name} is searched on a log scale: its min must be > 0, got {low}.")
    if name in LOSS_OPTIONS:
        try:
            for bound in (low, high):
                LossOptions(**{name: bound})  # the option's own check
        except ValueError as error:
            raise ValueError(f"The range of {name}: {error}") from None
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
        fit_model: `fit_model(model, trial_id, epochs, initial_epoch, callbacks)` trains a
            trial's model and returns its `History` (`tune_and_evaluate`: `train.fit`, as
            `apps/train.py` trains); None: Keras's `fit` with the search's arguments.
            Needs a tuner of `tuner_class`, which tells the trial's id.

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
        fit_model=None,
        name="ctkd",
    ):
        super().__init__(name=name)
        self.build_model = build_model
        self.fit_model = fit_model
        self.trial_id = None  # set by a tuner of `tuner_class` before each trial
        bounds = dict(
            hint_weight=hint_weight,
            attention_weight=attention_weight,
            kd_temperature=kd_temperature,
            kd_alpha=kd_alpha,
            learning_rate=learning_rate,
        )
        self.ranges = {
            name: _check_range(name, bounds[name], log)
            for name, log in RANGES.items()
            if bounds[name] is not None
        }
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

    def fit(self, hp, model, *args, **kwargs):
        if self.fit_model is None:
            return super().fit(hp, model, *args, **kwargs)
        if self.trial_id is None:
            raise ValueError("fit_model= needs a tuner of tune.tuner_class(...), which names each trial.")
        epochs, initial_epoch = kwargs["epochs"], kwargs.get("initial_epoch", 0)
        return self.fit_model(model, self.trial_id, epochs, initial_epoch, kwargs.get("callbacks", []))


def tuner_class(kind):
    """The KerasTuner tuner `kind` (`TUNERS`), telling its `CTKDHyperModel` each trial's id."""

    class Tuner(TUNERS[kind]):
        def run_trial(self, trial, *args, **kwargs):
            self.hypermodel.trial_id = trial.trial_id
            return super().run_trial(trial, *args, **kwargs)

    Tuner.__name__ = TUNERS[kind].__name__
    return Tuner


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """How to search; the run itself is a `TrainConfig`.

    Each attribute is the flag of the same name of `apps/tune.py`. A range is
    `(min, max)`; None (an empty flag) leaves that value out of the search.
    """

    tuner: str = option("bayesian", "KerasTuner tuner.", choices=tuple(TUNERS))
    max_trials: int = option(12, "Trials in all (not for hyperband).", at_least(1))
    tune_epochs: int = option(15, "Epochs per trial.", at_least(1))
    tune_split: str = option("train[:90%]", "The trials' training split.")
    val_split: str = option("train[90%:]", "The trials' validation split, from the training set.")
    hint_weight_range: tuple[float, ...] | None = option((1e-3, 1.0), "min,max (log).")
    attention_weight_range: tuple[float, ...] | None = option((10.0, 1e4), "min,max (log).")
    tune_attention_target: bool = option(False, "Also search attention_target.")
    kd_temperature_range: tuple[float, ...] | None = option((1.0, 8.0), "min,max (kd).")
    kd_alpha_range: tuple[float, ...] | None = option((0.5, 0.99), "min,max (kd).")
    learning_rate_range: tuple[float, ...] | None = option(
        None, "min,max (log) to search the rate too; empty: fixed."
    )
    final_train: bool = option(False, "Retrain with the best values on the full data.")

    def __post_init__(self):
        check_fields(self)
        for name, log in RANGES.items():
            bounds = getattr(self, f"{name}_range")
            if bounds is not None:
                _check_range(name, bounds, log)


def search_space(config, search):
    """The `CTKDHyperModel` arguments of `search` that apply to `config.method`."""
    searched = methods.get(config.method).searched
    space = {
        name: getattr(search, f"{name}_range") if name in searched else None
        for name in RANGES
        if name != "learning_rate"
    }
    tune_target = search.tune_attention_target and "attention_target" in searched
    space["attention_target"] = list(ATTENTION_TARGETS) if tune_target else None
    space["learning_rate"] = search.learning_rate_range  # every method's
    return space


def tune_and_evaluate(config, search):
    """Searches the loss weights; optionally retrains with the best on the full data.

    The expert is trained (or loaded) once, on `search.tune_split`, and shared by
    all trials. Trials train on `search.tune_split` and are scored on
    `search.val_split`, both carved from the training set. Everything goes under
    `config.model_dir`: the tuner's project (`tuner/`; a rerun continues the
    search), `tensorboard/` (one run per trial, with the HParams view),
    `best_hparams.json`, `trials.json`, each trial's `train.fit` (the training of
    `apps/train.py`, callbacks and checkpoints included) in `trials/<id>/`, and with
    `final_train` the final run in `final/`.

    Args:
        config: the `TrainConfig` of the runs (method, networks, recipe).
        search: a `SearchConfig`.

    Returns:
        `{"best_hparams": ..., "trials": [...], "final": results or None}`.
    """
    with train.dtype_policy(config.mixed_precision):
        return _tune_and_evaluate(config, search)


def _tune_and_evaluate(config, search):
    # Scored on the validation split after every epoch: the objective is the best epoch's.
    trial_config = dataclasses.replace(config, epochs=search.tune_epochs, validate_every_epoch=True)
    strategy = train.setup(trial_config)
    out = distribute.output_dir(config.model_dir, strategy)
    os.makedirs(out, exist_ok=True)
    run_data = train.make_data(trial_config, search.tune_split, search.val_split, strategy)
    expert = (
        train.expert_stage(trial_config, strategy, run_data, out)
        if methods.get(config.method).expert
        else None
    )

    def fit_trial(model, trial_id, epochs, initial_epoch, callbacks):
        # The training of apps/train.py (its callbacks, the NaN stop, checkpoints) in trials/<id>/.
        stage_dir = os.path.join("trials", trial_id)
        return train.fit(
            model, trial_config, strategy, run_data, out, stage_dir, epochs, callbacks, initial_epoch
        )

    hypermodel = CTKDHyperModel(
        lambda **values: train.make_model(
            dataclasses.replace(trial_config, **values), strategy, run_data.train_info, expert
        ),
        **search_space(config, search),
        fit_model=fit_trial,
    )
    options = dict(
        objective=OBJECTIVE,
        directory=out,
        project_name="tuner",
        overwrite=False,  # a rerun continues the search
        seed=config.seed,
        distribution_strategy=strategy,
    )
    if search.tuner == "hyperband":
        tuner = tuner_class("hyperband")(hypermodel, max_epochs=search.tune_epochs, **options)
    else:
        tuner = tuner_class(search.tuner)(hypermodel, max_trials=search.max_trials, **options)
    # One TensorBoard run per trial under tensorboard/ (with KerasTuner's HParams view), in
    # place of train.fit's own.
    tuner.search(
        epochs=search.tune_epochs, callbacks=[keras.callbacks.TensorBoard(os.path.join(out, "tensorboard"))]
    )
    trials = [
        {"trial_id": t.trial_id, "val_student_accuracy": t.score, "hparams": t.hyperparameters.values}
        for t in tuner.oracle.get_best_trials(num_trials=len(tuner.oracle.trials))
        if t.score is not None
    ]
    if not trials:
        failed = [t.message for t in tuner.oracle.trials.values() if t.message]
        raise RuntimeError(
            "No trial of the search ended with a score"
            + (f"; the last failure:\n{failed[-1]}" if failed else ".")
        )
    best = trials[0]["hparams"]
    resume.write_json(os.path.join(out, "best_hparams.json"), best)
    resume.write_json(os.path.join(out, "trials.json"), trials)
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
        final = train.train_and_evaluate(
            dataclasses.replace(
                config,
                model_dir=os.path.join(config.model_dir, "final"),
                expert_weights=config.expert_weights
                or (os.path.join(out, "expert.keras") if expert else None),
                expert_pixels=train.conventions(config)["expert_teacher"],
                **best,
            )
        )
    return {"best_hparams": best, "trials": trials, "final": final}
