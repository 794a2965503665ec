"""A folder of photo-sized images: the first scan's time, and the pipeline's images/s at 224 px.

Run: python bench/photo_folder.py [--data_dir=<CIFAR-10 image folder or .zip>] [--images=10000]
     [--size=1024,768] [--image_size=224] [--work_dir=/tmp/ctkd_photos]

Makes `--images` JPEG photos of `--size` (width, height; quality 90) by upscaling CIFAR-10
images (from `--data_dir`, a CIFAR-10 image folder or a .zip of one, or TFDS `cifar10`) into `--work_dir`
once, then times: the scan `build_dataset` makes of a new folder (each file's header for its
size and EXIF orientation, and a check of its whole data: a JPEG in draft mode, at an eighth
of its size), against decoding every photo in full as the scan did before; and the training
pipeline at `--image_size` (decode, resize, random resized crop, flip), first pass and cached.
Compare the pipeline's rate with the images/s a training step consumes (bench/throughput.py).
"""

import argparse
import os
import time
from pathlib import Path

import ctkd_tf  # noqa: F401  (before TensorFlow: it picks TensorFlow's CPU kernels)

# isort: split
import numpy as np
from input_pipeline import rate
from PIL import Image

from ctkd_tf import data

from common import add_data_flag, cifar10, machine


def make_photos(args):
    root = Path(args.work_dir)
    done = root / f".complete_{args.images}_{args.size}"
    if done.exists():
        return root
    cifar = cifar10(args.data_dir)
    source, info = data.build_dataset(
        cifar.dataset, f"train[:{args.images}]", 500, False, data_dir=cifar.data_dir, normalize=False
    )
    width, height = (int(v) for v in args.size.split(","))
    count = 0
    for images, labels in source.as_numpy_iterator():
        for image, label in zip(images.astype(np.uint8), labels, strict=True):
            folder = root / "train" / info.class_names[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).resize((width, height), Image.BICUBIC).save(
                folder / f"{count:05d}.jpg", quality=90
            )
            count += 1
    done.touch()
    return root


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def full_decode_scan(root):
    for path in sorted(Path(root, "train").rglob("*.jpg")):
        with Image.open(path) as image:
            image.load()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_flag(parser)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", default="1024,768")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--work_dir", default="/tmp/ctkd_photos")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    root, made = timed(lambda: make_photos(args))
    megabytes = sum(p.stat().st_size for p in Path(root, "train").rglob("*.jpg")) / 1e6
    print(
        f"{args.images} photos of {args.size.replace(',', 'x')} px, {megabytes:,.0f} MB "
        f"(made in {made:.0f} s)"
    )
    os.sync()
    _, scan = timed(lambda: data._scan_split(str(root), "train"))
    print(f"scan of a new folder (headers, JPEG draft-mode check): {scan:.1f} s")
    _, again = timed(lambda: data._scan_split(str(root), "train"))
    print(f"scan again, nothing changed: {again:.2f} s")
    _, full = timed(lambda: full_decode_scan(root))
    print(f"decoding every photo in full (the scan before): {full:.1f} s ({full / scan:.1f}x)")
    train, info = data.build_dataset(
        "image_folder", "train", args.batch_size, True, data_dir=str(root), image_size=args.image_size
    )
    print(f"training pipeline at {args.image_size} px (augment imagenet), {info.num_examples} images:")
    print(f"  first pass (decode, resize, cache, crop, flip): {rate(train):,.0f} images/s")
    print(f"  cached (crop, flip, normalise): {rate(train, 2):,.0f} images/s")


if __name__ == "__main__":
    main()
