"""Exporting the trained student for deployment: SavedModel and TFLite, checked in LiteRT."""

import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from ctkd_tf.pixels import Pixels
from ctkd_tf.resume import atomic_write

EXPORT_FORMATS = ("saved_model", "tflite")


def export_student(
    student, directory, formats, representative_images=None, mean=None, std=None, convention="dataset"
):
    """Writes the student in the requested deployment formats.

    Args:
        student: the trained student `keras.Model`.
        directory: where the exports go.
        formats: any of `"saved_model"` (`directory/saved_model`) and `"tflite"`
            (`directory/student.tflite`, float32).
        representative_images: if given with `"tflite"`, also an int8-quantised
            `directory/student_int8.tflite` calibrated on these images (weights and
            activations in int8).
        mean, std: the per-channel statistics (0-255 scale) the student's images were
            normalised with. Given, every export takes **uint8 RGB pixels** (the
            normalisation is inside: `pixel_model`), and `representative_images` are such
            pixels; None: the exports take the normalised float images, as the student.
        convention: the pixel values the student takes (`pixels.CONVENTIONS`): the
            exports convert uint8 pixels to them.

    Returns:
        A dict from format name (`saved_model`, `tflite`, `tflite_int8`) to path.

    Raises:
        ValueError: for an unknown format.
    """
    unknown = set(formats) - set(EXPORT_FORMATS)
    if unknown:
        raise ValueError(f"Unknown export format(s) {sorted(unknown)}; known: {', '.join(EXPORT_FORMATS)}.")
    os.makedirs(directory, exist_ok=True)
    model = student if mean is None else pixel_model(student, mean, std, convention)
    paths = {}
    with tempfile.TemporaryDirectory(dir=directory, prefix="partial.") as scratch:
        saved_model = os.path.join(scratch, "saved_model")
        model.export(saved_model, format="tf_saved_model", verbose=False)
        if "tflite" in formats:
            paths["tflite"] = _write(
                tf.lite.TFLiteConverter.from_saved_model(saved_model), directory, "student"
            )
            if representative_images is not None:
                converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                images = tf.convert_to_tensor(representative_images, tf.float32 if mean is None else tf.uint8)
                converter.representative_dataset = lambda: ([images[i : i + 1]] for i in range(len(images)))
                paths["tflite_int8"] = _write(converter, directory, "student_int8")
        if "saved_model" in formats:  # moved in whole: an interrupted export leaves the last one
            paths["saved_model"] = os.path.join(directory, "saved_model")
            shutil.rmtree(paths["saved_model"], ignore_errors=True)
            os.replace(saved_model, paths["saved_model"])
    return paths


def pixel_model(student, mean, std, convention="dataset"):
    """The student taking uint8 RGB pixels: cast, converted to its `convention` (`pixels.Pixels`;
    `"dataset"`: normalised with `mean` and `std`), then the student."""
    pixels = keras.Input(student.input_shape[1:], dtype="uint8", name="pixels")
    convert = Pixels(convention, mean, std, source="raw", name="normalise")
    return keras.Model(pixels, student(convert(pixels)), name=f"{student.name}_pixels")


def _write(converter, directory, name):
    path = os.path.join(directory, f"{name}.tflite")
    atomic_write(path, converter.convert())
    return path


def litert_predict(path, images, default_delegates=True):
    """The outputs of a TFLite model run in the LiteRT interpreter, one image at a time (batch 1).

    `default_delegates=False` runs LiteRT's own kernels without its default delegate
    (XNNPACK on CPUs), which refuses some models.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if default_delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_path=path, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    outputs = []
    for image in images:
        interpreter.set_tensor(source["index"], np.asarray(image[None], source["dtype"]))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(target["index"])[0].astype(np.float32))
    return np.stack(outputs)


def card(paths, student, mean, std, class_names, pixels, labels, eval_split, convention="dataset"):
    """The deployment card: inputs, outputs, classes, and each model's top-1 on the evaluation images.

    The Keras student (given the pixels through `pixel_model`) and each TFLite model run
    through the LiteRT interpreter score the same images; `int8_agrees_with_keras` is
    the share of images whose top class the int8 model and the Keras student agree on.

    Args:
        paths: `export_student`'s result (of a pixel export).
        student: the Keras student.
        mean, std: its normalisation.
        convention: the pixel values the student takes (as for `export_student`).
        class_names: by label.
        pixels: uint8 `(n, height, width, 3)` evaluation images; `labels` their labels.
        eval_split: their split's name, for the card.
    """
    labels = np.asarray(labels)
    keras_top = np.argmax(pixel_model(student, mean, std, convention).predict(pixels, verbose=0), axis=-1)
    height, width, channels = pixels.shape[1:]
    result = {
        "input": {"shape": [1, height, width, channels], "dtype": "uint8", "pixels": "RGB, 0-255"},
        "output": {
            "shape": [1, len(class_names)],
            "dtype": "float32",
            "meaning": "scores by class, labels.txt order",
        },
        "classes": list(class_names),
        "normalisation": {"mean": list(mean), "std": list(std), "network_pixels": convention},
        "eval_split": eval_split,
        "eval_examples": int(len(labels)),
        "accuracy": {"keras": float(np.mean(keras_top == labels))},
        "files": {},
    }
    for name in ("tflite", "tflite_int8"):
        if name not in paths:
            continue
        result["files"][name] = {"path": os.path.basename(paths[name]), "bytes": os.path.getsize(paths[name])}
        outputs, problems = _run_in_litert(paths[name], pixels)
        if problems:
            result.setdefault("problems", {})[name] = problems
        if outputs is None:
            continue
        top = np.argmax(outputs, axis=-1)
        result["accuracy"][name] = float(np.mean(top == labels))
        if name == "tflite_int8":
            result["int8_agrees_with_keras"] = float(np.mean(top == keras_top))
    return result


def _run_in_litert(path, pixels):
    """`(outputs or None, [what went wrong])` of a TFLite model on `pixels` in LiteRT.

    A model LiteRT's default delegate (XNNPACK) refuses is run without it, and that is
    said; a model that cannot run at all, or whose outputs are the same for every image
    (a collapsed model: an int8 calibration on activations out of range), is named.
    """
    problems = []
    try:
        outputs = litert_predict(path, pixels)
    except (RuntimeError, ValueError) as error:
        problems.append(f"LiteRT's default delegate (XNNPACK) refused it: {str(error)[:200]}")
        try:
            outputs = litert_predict(path, pixels, default_delegates=False)
        except (RuntimeError, ValueError) as second:
            problems.append(f"LiteRT could not run it: {str(second)[:200]}")
            return None, problems
        problems.append("scored without the default delegate")
    if not np.all(np.isfinite(outputs)):
        problems.append("non-finite outputs")
    elif len(outputs) > 1 and np.all(np.ptp(outputs, axis=0) == 0):
        problems.append(
            "collapsed: the same outputs for every image (activations out of the calibrated int8 ranges?)"
        )
    return outputs, problems
