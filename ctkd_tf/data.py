"""Input pipelines: tf.data over TFDS data sets and image folders, with the recipe's augmentation."""

import dataclasses
import functools
import os

import numpy as np
import requests
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from ctkd_tf import tiny_imagenet  # registers the `tiny_imagenet` builder


@dataclasses.dataclass(frozen=True)
class _Recipe:
    splits: tuple | None  # None: the folders found under the image folder's root
    mean: tuple | None  # per channel, 0-255 scale; None: measured on the training images
    std: tuple | None
    flip: bool  # random horizontal flips (not for digits)


RECIPES = {
    "cifar10": _Recipe(("train", "test"), (125.3, 123.0, 113.9), (63.0, 62.1, 66.7), True),
    "cifar100": _Recipe(("train", "test"), (129.3, 124.1, 112.4), (68.2, 65.4, 70.4), True),
    "svhn_cropped": _Recipe(("train", "test", "extra"), (111.6, 113.2, 120.6), (50.5, 51.3, 50.2), False),
    "tiny_imagenet": _Recipe(("train", "validation"), (122.5, 114.3, 101.4), (58.7, 57.8, 57.7), True),
    "image_folder": _Recipe(None, None, None, True),
}
PAD = 4  # reflect padding before the random crop
CACHE_LIMIT_BYTES = 4 << 30  # decoded images up to this size are cached in memory
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SHUFFLE_WINDOW = 50_000  # examples shuffled together (a whole CIFAR training set)
STATISTICS_SAMPLE = 5000  # images an image folder's mean and std are measured on


# What TFDS raises when it cannot fetch a data set's archives (offline, blocked, corrupted).
_DOWNLOAD_ERRORS = (
    requests.exceptions.RequestException,
    tfds.download.DownloadError,
    tfds.core.download.download_manager.NonMatchingChecksumError,
)


class DatasetUnavailableError(RuntimeError):
    """A TFDS data set that is not prepared and could not be downloaded; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a pipeline yields.

    Attributes:
        name: the data set's name.
        split: the split it reads, in TFDS split syntax.
        num_classes: number of classes; labels lie in `[0, num_classes)`.
        class_names: the classes' names, by label.
        image_shape: `(height, width, channels)` of the images.
        num_examples: examples in the split (all of them are read once per pass).
        mean: per-channel mean used for normalisation (0-255 scale).
        std: per-channel standard deviation used for normalisation.
        epoch: for training pipelines, the epoch whose shuffle and augmentation the
            next pass draws; each pass advances it, and setting it (as the training
            loop does on resume) replays that epoch exactly.
    """

    name: str
    split: str
    num_classes: int
    class_names: tuple
    image_shape: tuple
    num_examples: int
    mean: tuple
    std: tuple
    epoch: tf.Variable | None = None


def build_dataset(name, split, batch_size, training, data_dir=None, seed=0, num_classes=None, normalize=True):
    """Builds a batched `tf.data` pipeline of normalised images and integer labels.

    Args:
        name: `"cifar10"`, `"cifar100"`, `"svhn_cropped"`, `"tiny_imagenet"` or
            `"image_folder"`.
        split: TFDS split syntax, slicing included: `"train"`, `"train[:90%]"`,
            `"test[:512]"`.
        batch_size: the global batch size.
        training: True: a fresh shuffle and augmentation each pass and full batches
            only (static shapes for distribution strategies); False: deterministic,
            every example scored, the last batch possibly smaller.
        data_dir: the TFDS data directory; for `"image_folder"` the root holding one
            folder per split, each with one folder of images per class.
        seed: the seed of shuffling and augmentation (each epoch's draw is a function
            of the seed and the epoch only).
        num_classes: if given, the number of classes the model predicts: a data set
            with another number of classes is an error.
        normalize: subtract the per-channel mean and divide by the std (`info.mean`,
            `info.std`); False gives the pixels as float32 in [0, 255], for networks
            that carry their own preprocessing (Keras Applications) or are given their
            own (`CTKD(preprocessing=...)`).

    Returns:
        `(dataset, info)`: a `tf.data.Dataset` of `(float32 images, int32 labels)`
        batches and a `DatasetInfo`.

    Raises:
        ValueError: for an unknown data set or split, a bad image folder, a batch
            size larger than a training split, or a mismatch with `num_classes`.
        DatasetUnavailableError: when TFDS cannot download the data set (offline,
            for example); its message names the ways out.
    """
    if name not in RECIPES:
        raise ValueError(f"Unknown data set {name!r}; known: {', '.join(RECIPES)}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    recipe = RECIPES[name]
    if name == "image_folder":
        source, info = _image_folder(data_dir, split)
    else:
        source, info = _tfds(name, split, data_dir, recipe)
    if num_classes is not None and num_classes != info.num_classes:
        raise ValueError(
            f"{name} has {info.num_classes} classes but the model predicts {num_classes}: "
            "build the networks with the data set's number of classes."
        )
    if info.num_examples * int(np.prod(info.image_shape)) <= CACHE_LIMIT_BYTES:
        source = source.cache()
    mean = tf.constant(info.mean, tf.float32)
    std = tf.constant(info.std, tf.float32)

    def scale(image, label):
        image = tf.cast(image, tf.float32)
        return ((image - mean) / std if normalize else image), label

    if not training:
        dataset = source.map(scale, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
        return dataset.prefetch(tf.data.AUTOTUNE), info

    steps = info.num_examples // batch_size
    if steps == 0:
        raise ValueError(
            f"The training split {split!r} has {info.num_examples} examples, fewer than "
            f"one batch of {batch_size}."
        )
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_epoch")
    info = dataclasses.replace(info, epoch=epoch)
    indexed = source.enumerate()

    def augment_example(epoch_seed, index, example):
        image, label = example
        return scale(augment(image, tf.stack([epoch_seed, index]), recipe.flip), label)

    def permute(epoch_seed, window, examples):
        order = tf.argsort(tf.random.stateless_uniform(tf.shape(examples[0]), tf.stack([epoch_seed, window])))
        return tf.nest.map_structure(lambda t: tf.gather(t, order), examples)

    def one_epoch(_):
        # Stateless draws keyed on (seed, epoch, example): a resumed run replays
        # exactly the epochs an uninterrupted one would have seen. (Dataset.shuffle
        # takes no seed tensor once a global seed is set.)
        epoch_seed = tf.constant(seed, tf.int64) * 1_000_003 + epoch.assign_add(1) - 1
        return (
            indexed.batch(SHUFFLE_WINDOW)
            .enumerate()
            .map(functools.partial(permute, epoch_seed))
            .unbatch()
            .map(functools.partial(augment_example, epoch_seed), num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size, drop_remainder=True)
        )

    dataset = tf.data.Dataset.from_tensors(0).flat_map(one_epoch)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps))
    return dataset.prefetch(tf.data.AUTOTUNE), info


def augment(image, seed, flip):
    """The recipe's training augmentation of one image, drawn statelessly from `seed`.

    Reflect padding of 4 pixels, a random crop back to the image's size and, with
    `flip`, a random horizontal flip.

    Args:
        image: `(height, width, channels)`.
        seed: shape `(2,)` integers; the same seed gives the same result.
        flip: whether to flip horizontally half of the time.

    Returns:
        The augmented image, same shape and dtype.
    """
    crop_seed, flip_seed = tf.unstack(tf.random.split(seed, 2))
    padded = tf.pad(image, [[PAD, PAD], [PAD, PAD], [0, 0]], mode="REFLECT")
    image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_seed)
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return image


def _split_names(split):
    """The split names a TFDS split spec reads, after checking its syntax."""
    try:
        tfds.core.ReadInstruction.from_spec(split)
    except (ValueError, AssertionError) as error:
        raise ValueError(f"Bad split {split!r}: {error}") from None
    return [part.split("[")[0].strip() for part in split.split("+")]


def _check_splits(name, split, available):
    unknown = [s for s in _split_names(split) if s not in available]
    if unknown:
        raise ValueError(
            f"{name} has no split {', '.join(map(repr, unknown))}; its splits: {', '.join(available)}."
        )


def _tfds(name, split, data_dir, recipe):
    _check_splits(name, split, recipe.splits)
    try:
        dataset, builder_info = tfds.load(
            name, split=split, data_dir=data_dir, as_supervised=True, with_info=True, shuffle_files=False
        )
    except _DOWNLOAD_ERRORS as error:
        raise DatasetUnavailableError(_unavailable_message(name, data_dir, error)) from error
    labels = builder_info.features["label"]
    info = DatasetInfo(
        name=name,
        split=split,
        num_classes=labels.num_classes,
        class_names=tuple(labels.names),
        image_shape=tuple(builder_info.features["image"].shape),
        num_examples=_count(dataset),
        mean=recipe.mean,
        std=recipe.std,
    )
    return dataset.map(lambda image, label: (image, tf.cast(label, tf.int32))), info


def _unavailable_message(name, data_dir, error):
    builder = tfds.builder(name, data_dir=data_dir)
    archives = {info.filename: url for url, info in (builder.url_infos or {}).items()}
    if name == "tiny_imagenet":
        archives = {tiny_imagenet.ARCHIVE: tiny_imagenet.URL}
    manual = os.path.join(os.path.expanduser(data_dir or tfds.core.constants.DATA_DIR), "downloads", "manual")
    cause = str(error).splitlines()[0] if str(error) else type(error).__name__
    return (
        f"TFDS could not download the {name} data set: {type(error).__name__}: {cause[:300]}\n"
        "Is this machine offline? Two ways out:\n"
        f"  1. Download {', '.join(archives) or 'its archives'} elsewhere "
        f"({', '.join(archives.values()) or 'see the TFDS catalogue'}) and put "
        f"{'them' if len(archives) > 1 else 'it'} in TFDS's manual directory, {manual}/ "
        "(under --data_dir when you pass one); the next run prepares the data set from there.\n"
        "  2. Train on images you have: --dataset=image_folder --data_dir=<root> with "
        "<root>/train/<class>/*.jpg and <root>/test/<class>/*.jpg (in Python: "
        "build_dataset('image_folder', ..., data_dir=root))."
    )


def _count(dataset):
    count = int(dataset.cardinality())
    if count < 0:  # unknown, as for generated data: count it
        count = int(dataset.reduce(np.int64(0), lambda n, _: n + 1))
    return count


def _image_folder(root, split):
    if not root or not os.path.isdir(root):
        raise ValueError(f"image_folder needs data_dir, a folder holding one folder per split, got {root!r}.")
    available = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    _check_splits("The image folder " + root, split, available)
    statistics_split = "train" if "train" in available else available[0]
    scans = {name: _scan_split(root, name) for name in {*_split_names(split), statistics_split}}
    shapes = [scans[name][0] for name in _split_names(split)]
    if len(set(shapes)) > 1:
        raise ValueError(f"The splits of {root} hold images of different sizes: {sorted(set(shapes))}.")
    builder = tfds.ImageFolder(root)
    names = tuple(builder.info.features["label"].names)
    # ImageFolder reads whole splits only: slice them here. Its order within a
    # split is a fixed shuffle, so a slice is a random subset.
    slices = [
        (i.splitname, i.from_ or 0, builder.info.splits[i.splitname].num_examples if i.to is None else i.to)
        for i in tfds.core.ReadInstruction.from_spec(split).to_absolute(builder.info.splits)
    ]
    parts = [
        builder.as_dataset(split=name, shuffle_files=False, as_supervised=True).skip(start).take(end - start)
        for name, start, end in slices
    ]
    dataset = functools.reduce(lambda a, b: a.concatenate(b), parts)
    mean, std = _folder_statistics(root, statistics_split, scans[statistics_split][1])
    shape = shapes[0]
    info = DatasetInfo(
        name="image_folder",
        split=split,
        num_classes=len(names),
        class_names=names,
        image_shape=shape,
        num_examples=sum(end - start for _, start, end in slices),
        mean=mean,
        std=std,
    )
    return dataset.map(lambda image, label: (tf.ensure_shape(image, shape), tf.cast(label, tf.int32))), info


# What the folder scans found, kept across calls so that a folder is rescanned
# cheaply: path -> ((size, modification time), image size); only new or changed
# files are opened again.
_SCANNED = {}
_STATISTICS = {}  # (root, split, the split's files) -> (mean, std)


def _scan_split(root, split):
    """Checks one split folder; returns the one shape of its images and a key of its files.

    Every image is decoded once (a truncated or corrupt file is reported here, with
    its path, rather than as an op error mid-training) and again only when its size
    or modification time changes.
    """
    folder = os.path.join(root, split)
    classes = sorted(c for c in os.listdir(folder) if os.path.isdir(os.path.join(folder, c)))
    if not classes:
        raise ValueError(f"{folder} has no class folders; expected {folder}/<class>/<image>.")
    sizes, files = {}, []
    for name in classes:
        with os.scandir(os.path.join(folder, name)) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden files such as .DS_Store
            if not entry.name.lower().endswith(IMAGE_SUFFIXES):
                raise ValueError(f"{entry.path} is not an image: expected {', '.join(IMAGE_SUFFIXES)} files.")
            stat = entry.stat()
            version = (stat.st_size, stat.st_mtime_ns)
            files.append((entry.path, version))
            known = _SCANNED.get(entry.path)
            if known is None or known[0] != version:
                known = _SCANNED[entry.path] = (version, _image_size(entry.path))
            sizes.setdefault(known[1], entry.path)
    if not sizes:
        raise ValueError(f"{folder} has no images ({', '.join(IMAGE_SUFFIXES)}).")
    if len(sizes) > 1:
        examples = "; ".join(f"{path} is {w}x{h}" for (w, h), path in list(sizes.items())[:3])
        raise ValueError(f"{folder} mixes image sizes ({examples}); resize the images to one size.")
    (width, height), _ = sizes.popitem()
    return (height, width, 3), tuple(files)


def _image_size(path):
    """`(width, height)` of an image file, decoded in full to check it."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.size
    except OSError as error:
        raise ValueError(f"{path} is not a readable image: {error}") from None


def _folder_statistics(root, split, files):
    """Per-channel mean and std of (a fixed sample of) an image folder's split, measured once per `files`."""
    key = (root, split, files)
    if key not in _STATISTICS:
        _STATISTICS[key] = _measure_statistics(root, split)
    return _STATISTICS[key]


def _measure_statistics(root, split):
    dataset = tfds.ImageFolder(root).as_dataset(split=split, as_supervised=True)
    total, squares, pixels = np.zeros(3), np.zeros(3), 0
    for images, _ in dataset.take(STATISTICS_SAMPLE).batch(500).as_numpy_iterator():
        values = images.reshape(-1, 3).astype(np.float64)
        total += values.sum(axis=0)
        squares += (values**2).sum(axis=0)
        pixels += len(values)
    mean = total / pixels
    std = np.sqrt(np.maximum(squares / pixels - mean**2, 1e-12))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
