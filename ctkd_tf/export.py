"""Exporting the trained student for deployment: SavedModel and TFLite."""

import os
import tempfile

import tensorflow as tf

EXPORT_FORMATS = ("saved_model", "tflite")


def export_student(student, directory, formats, representative_images=None):
    """Writes the student in the requested deployment formats.

    Args:
        student: the trained student `keras.Model`.
        directory: where the exports go.
        formats: any of `"saved_model"` (`directory/saved_model`) and `"tflite"`
            (`directory/student.tflite`, float32).
        representative_images: if given with `"tflite"`, also an int8-quantised
            `directory/student_int8.tflite` calibrated on these normalised images
            (weights and activations in int8, float input and output).

    Returns:
        A dict from format name (`saved_model`, `tflite`, `tflite_int8`) to path.

    Raises:
        ValueError: for an unknown format.
    """
    unknown = set(formats) - set(EXPORT_FORMATS)
    if unknown:
        raise ValueError(f"Unknown export format(s) {sorted(unknown)}; known: {', '.join(EXPORT_FORMATS)}.")
    os.makedirs(directory, exist_ok=True)
    paths = {}
    with tempfile.TemporaryDirectory() as scratch:
        saved_model = os.path.join(directory if "saved_model" in formats else scratch, "saved_model")
        student.export(saved_model, format="tf_saved_model", verbose=False)
        if "saved_model" in formats:
            paths["saved_model"] = saved_model
        if "tflite" in formats:
            paths["tflite"] = _write(
                tf.lite.TFLiteConverter.from_saved_model(saved_model), directory, "student"
            )
            if representative_images is not None:
                converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                images = tf.convert_to_tensor(representative_images, tf.float32)
                converter.representative_dataset = lambda: ([images[i : i + 1]] for i in range(len(images)))
                paths["tflite_int8"] = _write(converter, directory, "student_int8")
    return paths


def _write(converter, directory, name):
    path = os.path.join(directory, f"{name}.tflite")
    with open(path, "wb") as file:
        file.write(converter.convert())
    return path
