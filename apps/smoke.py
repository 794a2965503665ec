"""Checks an installation in about a minute, without internet: a run of the flags on images it makes.

python apps/smoke.py --flagfile=configs/smoke.flags     # what `make smoke` runs

Writes a small image folder (10 classes of 32x32 PNGs: a colour and a stripe direction
each, with noise, so that the networks can learn something) under `--model_dir/images`,
then runs `apps/train.py`'s flags on it (`--dataset=image_folder`): both stages, the
exports, the card. Any flag can be given as for `apps/train.py`.
"""

import os

import numpy as np
from absl import app, flags, logging
from PIL import Image

from ctkd_tf.train import train_and_evaluate

import train_flags

flags.adopt_module_key_flags(train_flags)

CLASSES, TRAIN, TEST, SIZE = 10, 30, 15, 32  # images per class and split


def write_images(root, seed=0):
    """`root/{train,test}/class_<k>/<n>.png`; returns the number of images written."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:SIZE, 0:SIZE]
    count = 0
    for label in range(CLASSES):
        colour = rng.integers(40, 216, size=3)
        angle = np.pi * label / CLASSES
        stripes = np.sin((rows * np.cos(angle) + columns * np.sin(angle)) / 2.0)[..., None]
        for split, n in (("train", TRAIN), ("test", TEST)):
            folder = os.path.join(root, split, f"class_{label}")
            os.makedirs(folder, exist_ok=True)
            for k in range(n):
                noise = rng.normal(0, 25, size=(SIZE, SIZE, 3))
                pixels = np.clip(colour + 60 * stripes + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(os.path.join(folder, f"{k}.png"))
                count += 1
    return count


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    root = os.path.join(flags.FLAGS.model_dir, "images")
    count = write_images(root)
    flags.FLAGS.dataset, flags.FLAGS.data_dir = "image_folder", root
    flags.FLAGS.train_split, flags.FLAGS.eval_split = "train", "test"
    logging.info("Smoke run on %d generated images in %s (no download)", count, root)
    config = train_flags.config_from_flags()
    train_flags.write_flags(config.model_dir)
    results = train_and_evaluate(config)
    print(
        f"smoke run: {count} generated images (no download), student top-1 "
        f"{100 * results['student_accuracy']:.1f} % on {results['eval_examples']} test images, "
        f"{results['wall_time_s']:.0f} s; outputs in {config.model_dir}"
    )


if __name__ == "__main__":
    app.run(main)
