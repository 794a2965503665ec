"""Images per second of the input pipeline on the real CIFAR-10 images.

Run: python bench/input_pipeline.py [--batch_size=128]
"""

import argparse
import time

import ctkd_tf  # noqa: F401  (before TensorFlow: it picks TensorFlow's CPU kernels)

# isort: split
import tensorflow as tf

from ctkd_tf import data

from common import cifar10_root, machine


def rate(dataset, passes=1):
    """Images per second over `passes` full passes."""
    start, images = time.perf_counter(), 0
    for _ in range(passes):
        for batch, _ in dataset:
            images += int(tf.shape(batch)[0])
    return images / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=128)
    args = parser.parse_args()
    root = cifar10_root()
    start = time.perf_counter()
    train, info = data.build_dataset("image_folder", "train", args.batch_size, True, data_dir=root)
    print(f"setup (folder scan, statistics): {time.perf_counter() - start:.1f} s, {info.num_examples} images")
    print(f"training, first pass (JPEG decode + cache + augment): {rate(train):,.0f} images/s")
    print(f"training, cached (shuffle + pad-crop-flip + normalise): {rate(train, 2):,.0f} images/s")
    plain, _ = data.build_dataset("image_folder", "train", args.batch_size, False, data_dir=root)
    rate(plain)  # fill the cache
    print(f"no augmentation, cached (normalise only): {rate(plain, 2):,.0f} images/s")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
