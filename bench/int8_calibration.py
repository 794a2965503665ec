"""How much a trained student's int8 TFLite model depends on the images that calibrate it.

Run: python bench/int8_calibration.py --run=<a run's model_dir> [--data_dir=<its data, if moved>]
     [--counts=256,1024]

Exports the run's `student.keras` as an int8 model taking uint8 pixels (as the run's own
export does: `train.export_student`), calibrated on the first N training images, for each
N in `--counts`, drawn two ways: augmented as the training pipeline gives them (the run's
own export) and plain (the evaluation view of the training photos). Prints the Keras, float
and int8 top-1 on the run's evaluation split (LiteRT, `export.card`) for each.
"""

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import ctkd_tf  # noqa: F401  (before TensorFlow: it picks TensorFlow's CPU kernels)

# isort: split
import keras

from ctkd_tf import train

from common import machine


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run's model_dir (config.json, student.keras)")
    parser.add_argument("--data_dir", default=None, help="the run's data, if not where config.json says")
    parser.add_argument("--counts", default="256,1024", help="calibration images, comma-separated")
    args = parser.parse_args()
    run = Path(args.run)
    fields = {f.name for f in dataclasses.fields(train.TrainConfig)}
    options = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in json.loads((run / "config.json").read_text()).items()
        if k in fields
    }
    if args.data_dir:
        options["data_dir"] = args.data_dir
    config = dataclasses.replace(train.TrainConfig(**options), export=("tflite",), tflite_quantize=True)
    strategy = train.setup(config)
    student = keras.models.load_model(run / "student.keras")
    size = tuple(student.input_shape[1:3])
    run_data = train.make_data(config, config.train_split, config.eval_split, strategy)
    plain = train.make_data(config, config.train_split, config.train_split, strategy).eval
    print(f"{run}: {config.student} at {size[0]} px, scored on {config.eval_split}")
    print(f"machine: {machine()}")
    for count in (int(n) for n in args.counts.split(",")):
        batches = max(1, count // config.batch_size)
        for view, dataset in (("augmented", run_data.train), ("plain", plain)):
            calibration = train.uint8_pixels(dataset, run_data.train_info, size, batches)[0]
            with tempfile.TemporaryDirectory() as directory:
                train.export_student(config, student, run_data, directory, calibration)
                card = json.loads((Path(directory) / "export" / "card.json").read_text())
            top1 = {name: f"{100 * value:.1f}" for name, value in card["accuracy"].items()}
            print(f"{view:>9} {len(calibration):5d} images: {top1}", flush=True)


if __name__ == "__main__":
    main()
