"""Images per second of the input pipeline on CIFAR-10 (TFDS, or an image folder: --data_dir).

Run: python bench/input_pipeline.py [--data_dir=<CIFAR-10 image folder or .zip>] [--batch_size=128]
"""

import argparse
import time

import ctkd_tf  # noqa: F401  (before TensorFlow: it picks TensorFlow's CPU kernels)

# isort: split
import tensorflow as tf

from ctkd_tf import data

from common import add_data_flag, cifar10, machine


def rate(dataset, passes=1):
    """Images per second over `passes` full passes."""
    start, images = time.perf_counter(), 0
    for _ in range(passes):
        for batch, _ in dataset:
            images += int(tf.shape(batch)[0])
    return images / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_flag(parser)
    parser.add_argument("--batch_size", type=int, default=128)
    args = parser.parse_args()
    source = cifar10(args.data_dir)
    start = time.perf_counter()
    train, info = data.build_dataset(source.dataset, "train", args.batch_size, True, data_dir=source.data_dir)
    setup = time.perf_counter() - start
    print(f"setup (reading the split, statistics): {setup:.1f} s, {info.num_examples} images")
    print(f"training, first pass (decode + cache + augment): {rate(train):,.0f} images/s")
    print(f"training, cached (shuffle + pad-crop-flip + normalise): {rate(train, 2):,.0f} images/s")
    plain, _ = data.build_dataset(source.dataset, "train", args.batch_size, False, data_dir=source.data_dir)
    rate(plain)  # fill the cache
    print(f"no augmentation, cached (normalise only): {rate(plain, 2):,.0f} images/s")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
