"""Deployment figures: size on disk, per-image latency in LiteRT (batch 1) and accuracy of the exports.

Run: python bench/deploy.py [--data_dir=<CIFAR-10 image folder or .zip>] [--networks=cifar10_wrn40_1_e100,...]
     [--applications=MobileNetV3Small,EfficientNetB0 --sizes=96,160,224]

For each network (a shipped expert's name or a `.keras` file, for example a run's
`student.keras`): the exports `apps/train.py --export=tflite --tflite_quantize` writes,
taking uint8 RGB pixels (float and int8, calibrated on 256 training images), their size on
disk against the `.keras` file, their median latency for one image in the LiteRT
interpreter on this CPU, and the top-1 accuracy of the Keras network and of each export
on the CIFAR-10 test images (from TFDS `cifar10`, or from `--data_dir`, any folder of
CIFAR-10 images as `<root>/train/<class>/*.jpg` and `<root>/test/<class>/*.jpg`), with
how often the int8 model agrees with the Keras one. A shipped expert is normalised as
on its card; a `.keras` file with `--mean` and `--std` (default: the data's).

`--applications` then measures Keras Applications networks (built with `weights=None`
for 10 classes: latency and size only, their accuracy means nothing) at each of
`--sizes` pixels.
"""

import argparse
import os
import statistics
import tempfile
import time

import ctkd_tf  # noqa: F401  (before TensorFlow: it picks TensorFlow's CPU kernels)

# isort: split
import keras
import numpy as np

from ctkd_tf import data, experts, export, models

from common import add_data_flag, cifar10, machine


def latency_ms(path, image, repeats=200):
    """Median milliseconds of one `invoke` of a TFLite model in LiteRT, one image."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    interpreter.set_tensor(index, image[None])
    for _ in range(10):
        interpreter.invoke()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def pixels(dataset):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset], strict=True)
    return np.concatenate(images).astype(np.uint8), np.concatenate(labels)


def exports(network, mean, std, calibration, directory):
    paths = export.export_student(network, directory, ("tflite",), calibration, mean, std)
    keras_file = os.path.join(directory, "network.keras")
    network.save(keras_file)
    return paths, {"keras": os.path.getsize(keras_file), **{k: os.path.getsize(p) for k, p in paths.items()}}


def measure_trained(name, args, test, train):
    if name in experts.names():
        card = experts.card(name)
        network, mean, std = experts.load(name), card["mean"], card["std"]
    else:
        network, mean, std = keras.models.load_model(name), args.mean, args.std
    with tempfile.TemporaryDirectory() as directory:
        paths, sizes = exports(network, mean, std, train[0][:256], directory)
        images, labels = test
        scores = export.card(
            paths, network, mean, std, [str(i) for i in range(10)], images, labels, args.eval_split
        )
        times = {k: latency_ms(p, images[0]) for k, p in paths.items()}
    accuracy = scores["accuracy"]
    loss = 100 * (accuracy["tflite_int8"] - accuracy["keras"])
    print(
        f"{name} ({network.count_params():,} parameters): "
        f"size keras {sizes['keras'] / 1e6:.2f} MB, tflite {sizes['tflite'] / 1e6:.2f} MB, "
        f"int8 {sizes['tflite_int8'] / 1e6:.2f} MB; latency tflite {times['tflite']:.2f} ms, "
        f"int8 {times['tflite_int8']:.2f} ms; top-1 on {len(labels)} images of {args.eval_split}: "
        f"keras {100 * accuracy['keras']:.2f} %, tflite {100 * accuracy['tflite']:.2f} %, "
        f"int8 {100 * accuracy['tflite_int8']:.2f} % ({loss:+.2f}), "
        f"int8 agrees with keras on {100 * scores['int8_agrees_with_keras']:.2f} %"
    )


def measure_application(name, size):
    keras.utils.set_random_seed(0)
    network = models.get(name, 10, (size, size, 3))
    rng = np.random.default_rng(0)
    calibration = rng.integers(0, 256, size=(32, size, size, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as directory:
        paths, sizes = exports(network, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), calibration, directory)
        times = {k: latency_ms(p, calibration[0], repeats=50) for k, p in paths.items()}
    print(
        f"{name} at {size} px ({network.count_params():,} parameters, weights=None): size keras "
        f"{sizes['keras'] / 1e6:.2f} MB, tflite {sizes['tflite'] / 1e6:.2f} MB, int8 "
        f"{sizes['tflite_int8'] / 1e6:.2f} MB; latency tflite {times['tflite']:.2f} ms, "
        f"int8 {times['tflite_int8']:.2f} ms"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_flag(parser)
    parser.add_argument("--eval_split", default="test")
    parser.add_argument("--networks", default="cifar10_wrn40_1_e100", help="shipped experts or .keras files")
    parser.add_argument("--mean", type=float, nargs=3, default=None)
    parser.add_argument("--std", type=float, nargs=3, default=None)
    parser.add_argument("--applications", default="", help="Keras Applications names, comma-separated")
    parser.add_argument("--sizes", default="96,160,224")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if args.networks:
        source = cifar10(args.data_dir)
        options = dict(data_dir=source.data_dir, normalize=False)
        test_ds, info = data.build_dataset(source.dataset, args.eval_split, 256, False, **options)
        train_ds, _ = data.build_dataset(source.dataset, "train[:256]", 256, False, **options)
        args.mean, args.std = args.mean or info.mean, args.std or info.std
        test, train = pixels(test_ds), pixels(train_ds)
        for network in args.networks.split(","):
            measure_trained(network, args, test, train)
    for name in filter(None, args.applications.split(",")):
        for size in (int(s) for s in args.sizes.split(",")):
            measure_application(name, size)


if __name__ == "__main__":
    main()
