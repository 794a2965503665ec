"""What CTKD needs of any Keras network: its logits and the outputs of named layers, in one forward pass.

A `View` reads a functional or Sequential network (nested ones included) through an
`extractor`, a model of the network's own layers that outputs the logits (a final
softmax skipped) and the outputs of the layers it taps; the network is not changed: it
predicts probabilities if it did, and saves as it was. A subclassed network is called
as it is, its tapped layers recording their outputs for the length of that call only.

Layers are named by path: `"group1"` at the top level, `"efficientnetb0/block4a_expand_activation"`
inside a nested model (names joined by `/`, as in every fine-tuned Keras Applications
network); a subclassed model's layers are reached through `model.layers`, that is the
layers it holds as attributes, by their `name`.
"""

import contextlib
import threading

import keras

from ctkd_tf import batchnorm, models


def parse_pairs(text):
    """`CTKD`'s `attention_pairs` of the text of `--attention_pairs`: None (empty), `"auto"`, or
    `[(student_layer, expert_layer), ...]` of `"a:b,c:d"`.

    Raises:
        ValueError: for a pair without exactly one `:` between two paths.
    """
    if text in ("", "auto"):
        return text or None
    pairs = [tuple(pair.split(":")) for pair in text.split(",")]
    if any(len(pair) != 2 or "" in pair for pair in pairs):
        raise ValueError(
            f"attention pairs must be student_layer:expert_layer, comma-separated, got {text!r}."
        )
    return pairs


def sublayers(layer):
    """The layers a layer holds directly (a model's `layers`), in order."""
    return list(getattr(layer, "layers", None) or [])


def layer_at(model, path, role="network"):
    """The layer of `model` at `path` (layer names joined by `/`).

    Raises:
        ValueError: naming the part of the path that was not found and the names
            that exist at that level.
    """
    layer, walked = model, []
    for name in path.split("/"):
        found = [sub for sub in sublayers(layer) if sub.name == name]
        if not found:
            where = f"under {'/'.join(walked)!r}" if walked else "at its top level"
            names = ", ".join(sub.name for sub in sublayers(layer)) or "none"
            subclassed = (
                ""
                if getattr(layer, "inputs", None)
                else (
                    f" ({layer.name!r} is a subclassed model: its layers are those it holds as attributes, "
                    "by their name=)"
                )
            )
            raise ValueError(
                f"The {role} {model.name!r} has no layer {name!r} {where} (asked for {path!r}). "
                f"The layers there: {names}{subclassed}."
            )
        layer, walked = found[0], [*walked, name]
    return layer


def _is_softmax(layer):
    activation = getattr(layer, "activation", None)
    return isinstance(layer, keras.layers.Softmax) or getattr(activation, "__name__", None) == "softmax"


def final_softmax(model):
    """The path of the layer whose softmax gives `model`'s output (nested models searched), or None.

    Functional and Sequential models end in their last layer; a subclassed model's
    output is not known without calling it, and None is returned.
    """
    if not getattr(model, "outputs", None):
        return None
    path, layer = [], model
    while sublayers(layer):
        layer = sublayers(layer)[-1]
        path.append(layer.name)
        if _is_softmax(layer):
            return "/".join(path)
        if not isinstance(layer, keras.Model) or not getattr(layer, "outputs", None):
            return None
    return None


_NOT_FEATURES = (keras.layers.InputLayer, keras.layers.ZeroPadding2D, keras.layers.Cropping2D)


def output_shape(layer):
    """The static output shape of a layer of a functional network, or None when it has none."""
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):  # never called symbolically, or called several times
        return None


def _per_pixel(layer):
    """Whether a layer maps each pixel on its own (no weights, or a 1x1 convolution)."""
    return not layer.weights or tuple(getattr(layer, "kernel_size", ())) == (1, 1)


def spatial_layers(model):
    """`(path, (height, width))` of the layers with 4-D outputs, in the order the network runs them.

    Nested models are entered; input and preprocessing layers (`Rescaling`,
    `Normalization`, ...) are left out (they carry pixels, not features), and so are
    per-pixel layers whose output has the network's input shape (the image itself,
    converted: the frozen adapter in front of a Keras Applications network, a `Pixels`
    layer) and
    padding and cropping layers (their sizes are a convolution's padding, not a
    resolution of the network's).
    """
    found = []
    image = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None

    def walk(layer, prefix):
        for sub in sublayers(layer):
            path = f"{prefix}{sub.name}"
            if sublayers(sub):
                walk(sub, f"{path}/")
                continue
            if isinstance(sub, _NOT_FEATURES) or "preprocessing" in type(sub).__module__:
                continue
            shape = output_shape(sub)
            if shape is not None and image is not None and tuple(shape[1:]) == image and _per_pixel(sub):
                continue
            if shape is not None and len(shape) == 4 and None not in shape[1:3]:
                found.append((path, tuple(shape[1:3])))

    walk(model, "")
    return found


def auto_pairs(trained, expert, role="student"):
    """Attention pairs for every spatial resolution (above 1x1) both networks have.

    Each pair is the last layer at that resolution in each network (its deepest
    features there), from the finest resolution to the coarsest. An expert that takes
    images larger by an integer factor (`input_ratio`) has its resolutions divided by it:
    its 96x96 maps pair with the 48x48 ones of a student at half its image size.

    Raises:
        ValueError: when a network's layer shapes are unknown (a subclassed model) or the
            networks share no resolution.
    """
    resolutions = []
    factor = input_ratio(trained, expert)
    for net, name, scale in ((trained, role, 1), (expert, "expert_teacher", factor)):
        last = {}
        for path, size in spatial_layers(net):
            if size != (1, 1) and size[0] % scale == 0 and size[1] % scale == 0:
                last[(size[0] // scale, size[1] // scale)] = path
        if not last:
            raise ValueError(
                f"attention_pairs='auto' found no layer with a known 4-D output in the {name} "
                f"{net.name!r} (a subclassed model, or inputs without a fixed size?): name the "
                "pairs, attention_pairs=[(trained_layer, expert_layer), ...]."
            )
        resolutions.append(last)
    shared = sorted(set(resolutions[0]) & set(resolutions[1]), key=lambda size: -size[0] * size[1])
    if not shared:
        raise ValueError(
            f"attention_pairs='auto': the {role} {trained.name!r} and the expert {expert.name!r} share "
            f"no spatial resolution (theirs: {sorted(resolutions[0])} and {sorted(resolutions[1])}); "
            "name the pairs."
        )
    return [(resolutions[0][size], resolutions[1][size]) for size in shared]


def input_ratio(trained, expert):
    """The integer factor by which the expert's input images are larger than the trained network's
    (1 when equal, unknown or not an integer multiple): `auto_pairs` matches the resolutions of
    an expert that sees larger images scaled down by it (pooled by `losses.match_sizes`)."""
    sizes = []
    for net in (trained, expert):
        if not getattr(net, "inputs", None) or None in tuple(net.inputs[0].shape[1:3]):
            return 1
        sizes.append(tuple(net.inputs[0].shape[1:3]))
    (h, w), (eh, ew) = sizes
    factor = eh // h
    return factor if factor >= 1 and (eh, ew) == (h * factor, w * factor) else 1


def default_pairs(trained, expert, role="student"):
    """The zoo's residual group outputs when both networks have them, else `auto_pairs`."""
    names = list(models.GROUP_OUTPUTS)
    if all({layer.name for layer in sublayers(net)} >= set(names) for net in (trained, expert)):
        return [(name, name) for name in names]
    return auto_pairs(trained, expert, role)


def replayable(model):
    """Whether `model` is a functional or Sequential model run as its graph (no `call` of its own):
    one that `extractor` can read."""
    qualname = getattr(type(model).call, "__qualname__", "")
    return qualname in ("Functional.call", "Sequential.call") and bool(getattr(model, "inputs", None))


def extractor(model, taps=(), softmax=None, fused_batchnorm=False):
    """A functional model of `model`'s own layers whose outputs are `[*model's outputs, *tapped outputs]`.

    The layers (and so the weights) are `model`'s, called as `model` calls them, in
    one forward pass; `model` itself is not changed (its layers get one more call
    node each, as when a layer is shared by two models). Nested functional and
    Sequential models are entered (their layers named by path, `"outer/inner"`).

    Args:
        model: a functional or Sequential `keras.Model` (`replayable`).
        taps: layer paths whose outputs the extractor adds, in this order.
        softmax: the path of a final softmax layer (`final_softmax`) to skip: the
            extractor then outputs the logits (a `Dense(softmax)`'s matmul and bias).
        fused_batchnorm: call each `keras.layers.BatchNormalization` layer through a
            `batchnorm.Fused`: the same layer and weights, trained with the fused
            kernel. Keras's other batch-norm layers (and subclasses) run as they are.

    Raises:
        ValueError: for a tapped layer the forward pass does not call.
    """
    # Layer names are unique within a functional model: each level is matched by name.
    tapped, nested = {}, {}
    for index, path in enumerate(taps):
        head, _, rest = path.partition("/")
        if rest:
            nested.setdefault(head, []).append((index, rest))
        else:
            tapped.setdefault(head, []).append(index)
    softmax_head, _, softmax_rest = (softmax or "").partition("/")
    captured = {}

    def call(layer, *args, **kwargs):
        if layer.name == softmax_head and not softmax_rest:
            outputs = _Logits(layer)(*args, **kwargs)
        elif replayable(layer):
            inner = nested.get(layer.name, [])
            sub = extractor(
                layer,
                [rest for _, rest in inner],
                softmax_rest if layer.name == softmax_head else None,
                fused_batchnorm,
            )
            results = keras.tree.flatten(sub(*args, **kwargs))  # a list of one: its tensor
            count = len(layer.outputs)
            outputs = results[0] if count == 1 else results[:count]
            for (index, _), feature in zip(inner, results[count:], strict=True):
                captured.setdefault(index, feature)
        elif fused_batchnorm and type(layer) is keras.layers.BatchNormalization:
            outputs = batchnorm.Fused(layer)(*args, **kwargs)
        else:
            outputs = layer(*args, **kwargs)
        for index in tapped.get(layer.name, []):
            captured.setdefault(index, outputs)  # a layer called twice: its first output
        return outputs

    if isinstance(model, keras.Sequential):
        source = model.inputs[0]
        inputs = [keras.Input(batch_shape=source.shape, dtype=source.dtype)]
        x = inputs[0]
        for layer in model.layers:
            x = call(layer, x)
        outputs = [x]
    else:
        # Keras's public graph copy, every layer kept (not cloned) and called through `call`.
        copy = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)
        inputs, outputs = copy.inputs, list(copy.outputs)
    missing = [path for index, path in enumerate(taps) if index not in captured]
    if missing:
        raise ValueError(
            f"The network {model.name!r} does not call the layer(s) {', '.join(map(repr, missing))} "
            "in its forward pass."
        )
    inputs = inputs[0] if len(inputs) == 1 else inputs  # called with a tensor, as the network is
    return keras.Model(inputs, [*outputs, *(captured[i] for i in range(len(taps)))], name=model.name)


class _Logits(keras.layers.Layer):
    """What a final softmax layer computes before its softmax (the logits), with its weights."""

    def __init__(self, layer):
        super().__init__(name=layer.name, dtype=layer.dtype_policy)
        self.layer = layer

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def call(self, inputs, mask=None):  # a Softmax layer's call is given its mask
        return _before_softmax(self.layer, inputs)


class View:
    """Calls a network for CTKD: logits, never probabilities, and the outputs of tapped layers.

    A functional or Sequential network (nested ones included) is read through an
    `extractor` of its own layers: one forward pass, the network unchanged. A network
    with a `call` of its own (subclassed) has no graph to read: its tapped layers get a
    `call` of their own for the length of the `View`'s call only, which records the
    layer's output when a `View` call is under way in the same thread (per thread,
    because `tf.distribute` traces each replica's step in a thread of its own, and the
    threads take turns inside a forward pass).

    Args:
        model: any `keras.Model`.
        role: how errors name it (`"student"`, ...).
        taps: layer paths whose outputs each call returns.
        strip_softmax: compute the logits of a network ending in a softmax layer (the
            tensor before it, with the same weights), found by `final_softmax`.
        fused_batchnorm: train the network's `keras.layers.BatchNormalization` layers
            with the fused kernel (`batchnorm.Fused`); functional and Sequential
            networks only (a subclassed one trains with Keras's kernel).

    Raises:
        ValueError: for a path that does not exist, or a final softmax this view cannot
            skip (one inside a layer other than `Softmax`, `Activation` and `Dense`).
    """

    def __init__(self, model, role, taps=(), strip_softmax=True, fused_batchnorm=False):
        self.model = model
        self.role = role
        self.taps = list(taps)
        self.tapped = [layer_at(model, path, role) for path in self.taps]
        self.softmax = final_softmax(model) if strip_softmax else None
        if self.softmax:
            _check_strippable(layer_at(model, self.softmax), role, model)
        self._extractor = None
        paths = [self.softmax or "", *self.taps]
        if all(replayable(layer) for path in paths for layer in _chain(model, path)):
            try:
                self._extractor = extractor(model, self.taps, self.softmax, fused_batchnorm)
            except ValueError as error:
                raise ValueError(str(error).replace("The network", f"The {role}", 1)) from None
        elif self.softmax:
            raise ValueError(
                f"The {role} {model.name!r} ends in a softmax ({self.softmax!r}) inside a model with a "
                "call of its own, which CTKD cannot skip: build it without the final softmax."
            )

    def __call__(self, x, training=None):
        """`(logits, [tapped outputs])` of one forward pass."""
        if self._extractor is not None:
            logits, *features = keras.tree.flatten(self._extractor(x, training=training))
        else:
            logits, features = self._hooked_call(x, training)
        _check_not_probabilities(logits, self.role, self.model)
        return logits, features

    def _hooked_call(self, x, training):
        call = _Call({id(layer): i for i, layer in enumerate(self.tapped)})
        _calls().append(call)
        try:
            with _hooks(self.tapped):
                logits = self.model(x, training=training)
        finally:
            _calls().remove(call)
        missing = [self.taps[i] for i in range(len(self.tapped)) if i not in call.captured]
        if missing:
            raise ValueError(
                f"The {self.role} {self.model.name!r} did not call the layer(s) "
                f"{', '.join(map(repr, missing))} in its forward pass."
            )
        return logits, [call.captured[i] for i in range(len(self.tapped))]


def _chain(model, path):
    """The model and the models on the path to a layer (the layer itself left out)."""
    names = path.split("/")[:-1] if path else []
    return [model, *(layer_at(model, "/".join(names[: i + 1])) for i in range(len(names)))]


class _Call:
    """One hooked `View` call under way: what it records."""

    def __init__(self, indices):
        self.indices = indices
        self.captured = {}


_THREAD = threading.local()
_HOOKS_LOCK = threading.Lock()
_HOOKED = {}  # id(layer) -> [the layer, the View calls using its hook, in all threads]


def _calls():
    if not hasattr(_THREAD, "calls"):
        _THREAD.calls = []
    return _THREAD.calls


@contextlib.contextmanager
def _hooks(layers):
    """Gives each layer (the instance) a recording `call` while any hooked `View` call uses it."""
    layers = list({id(layer): layer for layer in layers}.values())
    with _HOOKS_LOCK:
        for layer in layers:
            entry = _HOOKED.setdefault(id(layer), [layer, 0])
            if not entry[1]:
                layer.call = _recording(layer, type(layer).call.__get__(layer))
            entry[1] += 1
    try:
        yield
    finally:
        with _HOOKS_LOCK:
            for layer in layers:
                entry = _HOOKED[id(layer)]
                entry[1] -= 1
                if not entry[1]:
                    del layer.call  # the class's `call` again
                    del _HOOKED[id(layer)]


def _recording(layer, original):
    def call(*args, **kwargs):
        outputs = original(*args, **kwargs)
        for c in _calls():
            if id(layer) in c.indices:
                c.captured.setdefault(c.indices[id(layer)], outputs)  # called twice: the first
        return outputs

    return call


def _check_strippable(layer, role, model):
    if isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)):
        return
    plain_dense = type(layer) is keras.layers.Dense and not getattr(layer, "lora_enabled", False)
    if not plain_dense or getattr(layer, "quantization_mode", None):
        raise ValueError(
            f"The {role} {model.name!r} ends in a softmax inside its layer {layer.name!r} "
            f"({type(layer).__name__}), whose logits CTKD cannot compute: build it without the "
            "softmax (Keras Applications: classifier_activation=None), or end it with a separate "
            "Softmax or Activation('softmax') layer."
        )


def _before_softmax(layer, inputs, *args, **kwargs):
    """What a final softmax layer computes before its softmax: the logits."""
    if isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)):
        return inputs
    outputs = keras.ops.matmul(inputs, layer.kernel)  # a plain Dense (`_check_strippable`)
    return outputs + layer.bias if layer.use_bias else outputs


def _check_not_probabilities(outputs, role, model):
    """A traced output computed by a softmax is refused (a softmax this view could not strip)."""
    op = getattr(outputs, "op", None)  # graph tensors only: the traced training step
    while op is not None and op.type in ("Identity", "Cast") and op.inputs:
        op = op.inputs[0].op
    if op is not None and op.type == "Softmax":
        raise ValueError(
            f"The {role} {model.name!r} outputs probabilities (a softmax inside its call) and CTKD "
            "needs logits: build it without the final softmax (Keras Applications: "
            "classifier_activation=None), or end it with a Softmax or Activation('softmax') layer, "
            "which CTKD skips."
        )
