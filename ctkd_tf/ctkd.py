"""The CTKD model: a student trained with a scratch teacher and a frozen expert."""

import dataclasses
import typing

import keras
import tensorflow as tf
from absl import logging

from ctkd_tf import distribute, experts, losses, networks
from ctkd_tf.loss_options import CTKD_OPTIONS, DEFAULTS, LossOptions

ROLES = ("student", "scratch_teacher", "expert_teacher")


def _resolve_weight(value, default, has_teacher, argument, teacher):
    if value is None:
        return default if has_teacher else 0.0
    value = float(value)
    LossOptions(**{argument: value})  # its check
    if value > 0 and not has_teacher:
        raise ValueError(f"{argument}={value} needs the {teacher}; pass {teacher}= or {argument}=0.")
    return value


class Outputs(typing.NamedTuple):
    """What one forward pass of each network gives the loss terms (None: no such network)."""

    labels: tf.Tensor
    student: tf.Tensor  # logits
    scratch: tf.Tensor | None
    expert: tf.Tensor | None
    student_features: list  # the tapped activations, one per attention pair
    scratch_features: list
    expert_features: dict  # by the expert's layer path


@dataclasses.dataclass(frozen=True)
class LossTerm:
    """One term of CTKD's loss: the loss is the sum over the model's terms of `weight * term`.

    Attributes:
        name: the term's metric (`log.csv`, TensorBoard: `<name>` and `val_<name>`).
        compute: `(model, outputs) -> (batch,)` float32 values per example.
        weight: the model's attribute holding its weight (a float, or a variable that
            callbacks may change between steps); None for 1.
        used: `model -> bool`, whether the model has the term (its teachers, a weight > 0).
    """

    name: str
    compute: typing.Callable
    weight: str | None = None
    used: typing.Callable = lambda model: True


def _hint(model, out):
    if model.hint_loss == "mse":
        values = losses.hint(out.scratch, out.student)
    else:
        values = losses.knowledge_distillation(out.scratch, out.student, model.hint_temperature)
    if model.hint_when_correct:
        values *= losses.correct(out.labels, out.scratch)
    return values


def _attention(model, out):
    # One term per guided network, each against the expert's layers of its own pairs.
    return losses.fixed_order_sum(
        [
            losses.attention_transfer(features, [out.expert_features[e] for _, e in model._pairs[role]])
            for role, features in (
                ("student", out.student_features),
                ("scratch_teacher", out.scratch_features),
            )
            if role in model._pairs
        ]
    )


def _has_scratch(model):
    return model.scratch_teacher is not None


# In the order they are summed and logged. A new term: an entry here, its weight (and
# settings) a field of `loss_options.LossOptions` and an argument of `CTKD`.
LOSS_TERMS = (
    LossTerm("student_ce", lambda model, out: losses.cross_entropy(out.labels, out.student)),
    LossTerm(
        "scratch_ce", lambda model, out: losses.cross_entropy(out.labels, out.scratch), used=_has_scratch
    ),
    LossTerm("hint_loss", _hint, "_hint_weight", _has_scratch),
    LossTerm("attention_loss", _attention, "_attention_weight", lambda model: bool(model._pairs)),
    LossTerm(
        "expert_kd_loss",
        lambda model, out: losses.knowledge_distillation(out.expert, out.student, model.kd_temperature),
        "expert_kd_weight",
        lambda model: model.expert_kd_weight > 0,
    ),
    LossTerm(
        "scratch_kd_loss",
        lambda model, out: losses.knowledge_distillation(out.expert, out.scratch, model.kd_temperature),
        "scratch_kd_weight",
        lambda model: model.scratch_kd_weight > 0,
    ),
)


@keras.saving.register_keras_serializable(package="ctkd_tf")
class CTKD(keras.Model):
    """Collaborative Teaching Knowledge Distillation (Zhao et al., 2019).

    The student follows the logits of a scratch teacher trained with it step by
    step (the hint, gradient-blocked toward the teacher), and the attention maps
    of a frozen, pre-trained expert. Calling the model calls the student. Without
    a scratch teacher it is Attention Transfer, without an expert Rocket Launching,
    without both plain training of the student.

    Any Keras network serves (functional, Sequential, nested, subclassed; see
    `networks.View`): the losses take its logits, and a network whose output passes
    through a final softmax layer (Keras Applications' default) is trained on the
    logits before it, with the same weights; the network itself still predicts
    probabilities, and saves as it was built.

    Args:
        student: a `keras.Model` mapping images to logits (or probabilities, above).
        scratch_teacher: a `keras.Model` trained jointly from scratch, or None.
        expert_teacher: a pre-trained `keras.Model`, frozen here, or None. It must
            predict the student's classes: fine-tune an ImageNet network first.
        attention_pairs: `[(trained_layer, expert_layer), ...]`, the matching points,
            each a layer path (names joined by `/` into nested models, as
            `"efficientnetb0/block4a_expand_activation"`); `"auto"`: for every spatial
            resolution both networks have (above 1x1), the last layer at that
            resolution in each (`networks.auto_pairs`), chosen for the student and the
            scratch teacher each; None: the zoo's residual group outputs
            (`models.GROUP_OUTPUTS`) when both networks have them, else `"auto"`;
            `[]`: no attention term. Maps whose sizes differ by an integer factor are
            matched by average-pooling the larger activation. The pairs chosen are
            `model.attention_pairs` (and `model.scratch_attention_pairs`).
        preprocessing: `{role: callable}` applied to the input before that network
            (`"student"`, `"scratch_teacher"`, `"expert_teacher"`), so that each sees
            the pixel values it was trained on: for example an expert trained on
            `[-1, 1]` pixels while the pipeline gives 0-255 (`build_dataset(...,
            normalize=False)`). Calling the model (`predict`, `evaluate`) applies the
            student's.
        attention_target: which trained network the expert's attention maps
            guide: `"student"` (the paper), `"scratch"` (the reference code) or
            `"both"` (each gets its own attention term; their sum is weighted).
        hint_weight: weight of the hint; None means 0.03 with a scratch teacher.
        hint_loss: `"mse"`, the paper's `sum_c (z_t - z_s)^2`, or `"kl"`,
            `T^2 KL(softmax(z_t / T) || softmax(z_s / T))`; both gradient-blocked
            toward the scratch teacher.
        hint_temperature: `T` of the `"kl"` hint (> 0).
        expert_kd_weight: weight of an extra Hinton KD term from the expert's
            logits, `T^2 KL(softmax(z_e / T) || softmax(z_s / T))` with
            `T = kd_temperature` (Attention Transfer's AT+KD); 0, the paper, leaves
            it out.
        kd_temperature: `T` of that term (> 0).
        scratch_kd_weight: weight of a Hinton KD term from the expert's logits into
            the scratch teacher (same form, at `kd_temperature`), so that the teacher
            the student follows also learns from the expert; 0 (the paper) leaves it out.
        hint_when_correct: apply the hint only to the examples the scratch teacher
            classifies correctly (its top class is the label); the others add 0 to the
            batch mean. False (the paper) applies it to every example.
        attention_weight: weight of the attention term; None means 1000 with an
            expert.
        fused_batchnorm: train the `keras.layers.BatchNormalization` layers of a
            functional or Sequential student and scratch teacher with TensorFlow's
            fused kernel (`batchnorm.Fused`: same weights and maths; the networks
            themselves are not changed, and the zoo's have it built in). False:
            Keras's kernel.
        name: the model's name.

    Raises:
        ValueError: for unknown layer names, attention maps of different spatial
            sizes, networks with different classes or input shapes, negative
            weights, or a weight whose teacher is missing.
    """

    def __init__(
        self,
        student,
        scratch_teacher=None,
        expert_teacher=None,
        attention_pairs=None,
        preprocessing=None,
        attention_target=DEFAULTS.attention_target,
        hint_weight=None,
        attention_weight=None,
        hint_loss=DEFAULTS.hint_loss,
        hint_temperature=DEFAULTS.hint_temperature,
        expert_kd_weight=DEFAULTS.expert_kd_weight,
        kd_temperature=DEFAULTS.kd_temperature,
        scratch_kd_weight=DEFAULTS.scratch_kd_weight,
        hint_when_correct=DEFAULTS.hint_when_correct,
        fused_batchnorm=True,
        name="ctkd",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        for role, net in (
            ("student", student),
            ("scratch_teacher", scratch_teacher),
            ("expert_teacher", expert_teacher),
        ):
            if net is not None and not isinstance(net, keras.Model):
                raise ValueError(f"{role} must be a keras.Model, got {type(net).__name__}.")
        LossOptions(  # the options' checks (None: the default weight for the teachers given)
            attention_target=attention_target,
            hint_weight=hint_weight,
            attention_weight=attention_weight,
            hint_loss=hint_loss,
            hint_temperature=float(hint_temperature),
            expert_kd_weight=float(expert_kd_weight),
            kd_temperature=float(kd_temperature),
            scratch_kd_weight=float(scratch_kd_weight),
            hint_when_correct=hint_when_correct,
        )
        if attention_target != "student" and expert_teacher is not None and scratch_teacher is None:
            raise ValueError(f"attention_target={attention_target!r} needs a scratch_teacher.")
        self.hint_loss = hint_loss
        self.hint_temperature = float(hint_temperature)
        self.expert_kd_weight = _resolve_weight(
            expert_kd_weight, 0.0, expert_teacher is not None, "expert_kd_weight", "expert_teacher"
        )
        self.kd_temperature = float(kd_temperature)
        self.scratch_kd_weight = _resolve_weight(
            scratch_kd_weight, 0.0, expert_teacher is not None, "scratch_kd_weight", "expert_teacher"
        )
        if self.scratch_kd_weight > 0 and scratch_teacher is None:
            raise ValueError(
                f"scratch_kd_weight={self.scratch_kd_weight} needs the scratch_teacher; "
                "pass scratch_teacher= or scratch_kd_weight=0."
            )
        if hint_when_correct and scratch_teacher is None:
            raise ValueError("hint_when_correct=True needs the scratch_teacher.")
        self.hint_when_correct = bool(hint_when_correct)
        self.fused_batchnorm = bool(fused_batchnorm)
        self.student = student
        self.scratch_teacher = scratch_teacher
        self.expert_teacher = expert_teacher
        self.attention_target = attention_target
        # Variables, so that a callback can change them between steps (a warm-up)
        # without retracing the step; read and set them as floats (float64: exactly).
        self._hint_weight = keras.Variable(
            _resolve_weight(
                hint_weight,
                DEFAULTS.hint_weight,
                scratch_teacher is not None,
                "hint_weight",
                "scratch_teacher",
            ),
            dtype="float64",
            trainable=False,
            name="hint_weight",
        )
        self._attention_weight = keras.Variable(
            _resolve_weight(
                attention_weight,
                DEFAULTS.attention_weight,
                expert_teacher is not None,
                "attention_weight",
                "expert_teacher",
            ),
            dtype="float64",
            trainable=False,
            name="attention_weight",
        )
        self.preprocessing = dict(preprocessing or {})
        unknown = set(self.preprocessing) - set(ROLES)
        if unknown:
            raise ValueError(f"preprocessing keys must be among {', '.join(ROLES)}, got {sorted(unknown)}.")
        self._check_compatible()
        self._attention_pairs_argument = attention_pairs
        self._pairs = self._choose_pairs(attention_pairs)  # role -> [(trained_layer, expert_layer)]
        self.attention_pairs = self._pairs.get("student", self._pairs.get("scratch_teacher"))
        self.scratch_attention_pairs = self._pairs.get("scratch_teacher")
        self._views = {
            role: networks.View(
                getattr(self, role),
                role,
                [trained for trained, _ in self._pairs.get(role, [])],
                fused_batchnorm=self.fused_batchnorm,
            )
            for role in ROLES[:2]
            if getattr(self, role) is not None
        }
        if expert_teacher is not None:
            expert_layers = list(dict.fromkeys(e for pairs in self._pairs.values() for _, e in pairs))
            self._views["expert_teacher"] = networks.View(expert_teacher, "expert_teacher", expert_layers)
            expert_teacher.trainable = False
            for role, pairs in self._pairs.items():
                self._check_spatial_sizes(role, pairs)
            if self._pairs:
                logging.info("CTKD attention pairs: %s", self._pairs)

        self.built = all(net is None or net.built for net in (student, scratch_teacher, expert_teacher))

        self.loss_terms = [term for term in LOSS_TERMS if term.used(self)]
        self._trackers = {"loss": keras.metrics.Mean(name="loss")}
        for term in self.loss_terms:
            self._trackers[term.name] = keras.metrics.Mean(name=term.name)
        self._trackers["student_accuracy"] = keras.metrics.SparseCategoricalAccuracy(name="student_accuracy")
        if scratch_teacher is not None:
            self._trackers["scratch_accuracy"] = keras.metrics.SparseCategoricalAccuracy(
                name="scratch_accuracy"
            )

    @property
    def hint_weight(self):
        """The hint's weight, a float; settable between steps (for example by `HintWarmup`)."""
        return float(keras.ops.convert_to_numpy(self._hint_weight))

    @hint_weight.setter
    def hint_weight(self, value):
        self._hint_weight.assign(
            _resolve_weight(value, 0.0, self.scratch_teacher is not None, "hint_weight", "scratch_teacher")
        )

    @property
    def attention_weight(self):
        """The attention term's weight, a float; settable between steps."""
        return float(keras.ops.convert_to_numpy(self._attention_weight))

    @attention_weight.setter
    def attention_weight(self, value):
        value = _resolve_weight(
            value, 0.0, self.expert_teacher is not None, "attention_weight", "expert_teacher"
        )
        if value > 0 and not self._pairs:
            raise ValueError(
                "This CTKD model has no attention term (built with attention_weight=0 or "
                "attention_pairs=[]): build it with the weight instead."
            )
        self._attention_weight.assign(value)

    def _choose_pairs(self, attention_pairs):
        expert = self.expert_teacher
        if expert is None:
            if attention_pairs:
                raise ValueError("attention_pairs were given but there is no expert_teacher.")
            return {}
        if attention_pairs == [] or self.attention_weight == 0:
            return {}  # no attention term: no layer is tapped
        guided = {"student": ("student", "both"), "scratch_teacher": ("scratch", "both")}
        pairs = {}
        for role, targets in guided.items():
            net = getattr(self, role)
            if net is None or self.attention_target not in targets:
                continue
            if attention_pairs is None:
                pairs[role] = networks.default_pairs(net, expert, role)
            elif attention_pairs == "auto":
                pairs[role] = networks.auto_pairs(net, expert, role)
            else:
                pairs[role] = [tuple(pair) for pair in attention_pairs]
        return pairs

    def _check_compatible(self):
        """Networks must take compatible images (None matches any size) and predict the same classes."""

        def signature(net):
            if not getattr(net, "inputs", None):
                return None  # subclassed: nothing to compare before it is called
            return tuple(net.inputs[0].shape[1:]), net.outputs[0].shape[-1]

        reference = signature(self.student)
        for role in ROLES[1:]:
            net = getattr(self, role)
            other = None if net is None else signature(net)
            if reference is None or other is None:
                continue
            if other[1] != reference[1]:
                raise ValueError(
                    f"The {role} predicts {other[1]} classes but the student {reference[1]}: the teachers "
                    "must predict the student's classes (fine-tune a pre-trained expert to them first)."
                )
            if role in self.preprocessing or "student" in self.preprocessing:
                continue  # the preprocessing may resize
            if len(other[0]) != len(reference[0]) or any(
                a is not None and b is not None and a != b
                for a, b in zip(other[0], reference[0], strict=True)
            ):
                raise ValueError(
                    f"The {role} takes inputs of shape {other[0]} but the student {reference[0]}; "
                    "give it preprocessing= that resizes, or build both for one image size."
                )

    def _check_spatial_sizes(self, role, pairs):
        """Each pair taps 4-D maps whose sizes are equal or differ by an integer factor (when known)."""
        net = getattr(self, role)
        for trained_path, expert_path in pairs:
            a = networks.output_shape(networks.layer_at(net, trained_path, role))
            e = networks.output_shape(networks.layer_at(self.expert_teacher, expert_path, "expert_teacher"))
            if a is None or e is None or None in (*a[1:3], *e[1:3]):
                continue  # checked when the step is traced (losses.match_sizes)
            if len(a) != 4 or len(e) != 4:
                raise ValueError(
                    f"Attention pair ({trained_path!r}, {expert_path!r}) must tap 4-D "
                    f"(batch, height, width, channels) outputs, got {a} and {e}."
                )
            try:
                losses.pooling_factor(a[1:3], e[1:3])
            except ValueError as error:
                raise ValueError(f"Attention pair ({trained_path!r}, {expert_path!r}): {error}") from None

    def check_expert(self, dataset, min_accuracy=None, hints=None):
        """Scores the expert on `dataset` as training feeds it, and stops one that would teach wrong answers.

        Run it before `fit`: an expert fed other pixel values than it was trained on, whose
        outputs follow another class order, or whose fine-tuning failed, scores near chance
        here; the training would distil its mistakes without a word.

        Args:
            dataset: batches of `(images, labels)`, as `fit` gets them (an evaluation split).
            min_accuracy: the top-1 (a fraction) it must reach; None: the share of the most
                common label plus 10 points; 0: any (non-finite outputs still fail).
            hints: for the message (`experts.check`).

        Returns:
            A dict: `accuracy`, `examples`, `majority_share`, `non_finite`, `min_accuracy`,
            `passed`.

        Raises:
            experts.ExpertCheckError: naming the likely causes and what fixes them.
            ValueError: when the model has no expert.
        """
        if self.expert_teacher is None:
            raise ValueError("This CTKD model has no expert_teacher to check.")
        return experts.check(
            lambda x: self.expert_teacher(self._input("expert_teacher", x), training=False),
            dataset,
            min_accuracy,
            network=self.expert_teacher,
            hints={
                "convention": getattr(self.preprocessing.get("expert_teacher"), "convention", "dataset"),
                **(hints or {}),
            },
        )

    def call(self, inputs, training=None):
        return self.student(self._input("student", inputs), training=training)

    def _input(self, role, x):
        return self.preprocessing[role](x) if role in self.preprocessing else x

    def build(self, input_shape):
        for net in (self.student, self.scratch_teacher, self.expert_teacher):
            if net is not None and not net.built:
                net.build(input_shape)
        self.built = True

    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        """Keras's `compile`, without what CTKD would ignore.

        CTKD computes its own loss and reports its own metrics (the loss, each loss term,
        `student_accuracy` and `scratch_accuracy`, in `history`, TensorBoard and
        `evaluate`): `loss`, `loss_weights`, `metrics` and `weighted_metrics` are refused
        rather than silently ignored.
        """
        if loss is not None or kwargs.get("loss_weights") is not None:
            raise ValueError("CTKD computes its own losses; compile it without `loss` and `loss_weights`.")
        for name in ("metrics", "weighted_metrics"):
            if kwargs.get(name):
                raise ValueError(
                    f"CTKD reports its own metrics and would ignore `{name}`: the loss, each loss term, "
                    "student_accuracy and scratch_accuracy (history, TensorBoard, evaluate). For another "
                    "metric, compile the trained student: model.student.compile(metrics=...), then "
                    "model.student.evaluate(...)."
                )
        super().compile(optimizer=optimizer, **kwargs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # The one private Keras method overridden here, for keras-team/keras#20585
        # (checked on Keras 3.15.1 and 3.16.0.dev2026102704, where it is unchanged): Keras
        # starts `fit` under a strategy (`_distribute_strategy`, set when the model was
        # made in a strategy's scope) by reducing a whole (x, y) batch of per-replica
        # values with `strategy.reduce`, which MultiWorkerMirroredStrategy rejects. The
        # networks are built at construction; only the optimizer is left to build.
        if not self.built or self._distribute_strategy is None:
            return super()._maybe_symbolic_build(iterator, data_batch)
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def compile_from_config(self, config):
        # Keras skips this for models with their own `compile`; ours takes the
        # same arguments, so a loaded model comes back compiled, optimizer included.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        return list(self._trackers.values())

    def _forward(self, x, y, training):
        """One forward pass of each network (the expert in inference mode), logits out."""
        student, student_features = self._views["student"](self._input("student", x), training)
        scratch, scratch_features = None, []
        if self.scratch_teacher is not None:
            scratch, scratch_features = self._views["scratch_teacher"](
                self._input("scratch_teacher", x), training
            )
        expert, expert_features = None, {}
        if self.expert_teacher is not None:
            view = self._views["expert_teacher"]
            expert, features = view(self._input("expert_teacher", x), False)
            expert_features = dict(zip(view.taps, features, strict=True))
        return Outputs(y, student, scratch, expert, student_features, scratch_features, expert_features)

    def _compute_terms(self, x, y, training):
        """Per-example values of each loss term and of the total, and the logits scored."""
        out = self._forward(x, y, training)
        terms = {term.name: term.compute(self, out) for term in self.loss_terms}
        terms["loss"] = losses.fixed_order_sum(
            [self._weighted(term, terms[term.name]) for term in self.loss_terms]
        )
        logits = {"student_accuracy": out.student}
        if out.scratch is not None:
            logits["scratch_accuracy"] = out.scratch
        return terms, logits

    def _weighted(self, term, values):
        if term.weight is None:
            return values
        weight = getattr(self, term.weight)
        return tf.cast(weight, tf.float32) * values if isinstance(weight, keras.Variable) else weight * values

    def _regularization_loss(self):
        # Only trainable weights carry regularisers into `self.losses`, so the
        # frozen expert adds nothing here.
        regularization = self.losses
        return losses.fixed_order_sum(regularization) if regularization else tf.constant(0.0)

    def _update_metrics(self, y, terms, logits, regularization, sample_weight):
        for name, values in terms.items():
            if name == "loss":
                values = values + regularization
            self._trackers[name].update_state(values, sample_weight=sample_weight)
        for name, values in logits.items():
            self._trackers[name].update_state(y, values, sample_weight=sample_weight)
        results = {name: tracker.result() for name, tracker in self._trackers.items()}
        if distribute.is_multi_worker(self.distribute_strategy):
            # Keras 3 averages step outputs across workers with
            # `strategy.reduce("MEAN", value, axis=0)`, which needs a batch axis.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            terms, logits = self._compute_terms(x, y, training=True)
            regularization = self._regularization_loss()
            # Mean over the global batch plus a per-replica share of the
            # regularisation: the replicas' gradients are summed.
            loss = tf.nn.compute_average_loss(terms["loss"], sample_weight=sample_weight)
            loss += tf.nn.scale_regularization_loss(regularization)
            scaled_loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self._update_metrics(y, terms, logits, regularization, sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        terms, logits = self._compute_terms(x, y, training=False)
        return self._update_metrics(y, terms, logits, self._regularization_loss(), sample_weight)

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        config = super().get_config()
        config.update(
            {
                "student": serialize(self.student),
                "scratch_teacher": serialize(self.scratch_teacher),
                "expert_teacher": serialize(self.expert_teacher),
                "attention_pairs": self._attention_pairs_argument,
                "preprocessing": {role: serialize(fn) for role, fn in self.preprocessing.items()} or None,
                **{name: getattr(self, name) for name in CTKD_OPTIONS},
                "fused_batchnorm": self.fused_batchnorm,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for role in ROLES:
            config[role] = keras.saving.deserialize_keras_object(config[role])
        if config.get("preprocessing"):
            config["preprocessing"] = {
                role: keras.saving.deserialize_keras_object(fn)
                for role, fn in config["preprocessing"].items()
            }
        return cls(**config)
