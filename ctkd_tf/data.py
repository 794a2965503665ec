"""Input pipelines: tf.data over TFDS data sets and image folders, with the recipe's augmentation."""

import dataclasses
import functools
import os
import random

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
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF")  # what tf.io.decode_image reads
EXIF_ORIENTATION = 274  # the EXIF tag
CENTRE_CROP = 0.875  # with image_size: evaluation crops this share of the resized image's sides
AUGMENTATIONS = ("cifar", "imagenet", "none")
RESIZED_CROP_SCALE = (0.08, 1.0)  # the random resized crop's share of the image's area
RESIZED_CROP_RATIO = (3 / 4, 4 / 3)
SHUFFLE_WINDOW = 50_000  # examples shuffled together (a whole CIFAR training set)
STATISTICS_SAMPLE = 5000  # images an image folder's mean and std are measured on
REACHABLE_TIMEOUT_S = 5  # the quick check that a data set's archives can be downloaded


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


def build_dataset(
    name,
    split,
    batch_size,
    training,
    data_dir=None,
    seed=0,
    num_classes=None,
    normalize=True,
    image_size=None,
    augment=None,
):
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
        image_size: `(height, width)` (or one int for both) to resize the images to,
            any size they have: each is resized to cover `image_size / 0.875` and cut to
            the centre of that size (`cover`), whose centre evaluation takes and from which
            training crops (see `augment`). None keeps the images' size, which must then
            be one.
        augment: the training augmentation, one of `AUGMENTATIONS`: `"cifar"` (reflect
            padding of 4 pixels, a random crop back to the size, a flip), `"imagenet"` (a
            random resized crop of 8-100 % of the area, aspect 3/4-4/3, and a flip) or
            `"none"`; None: `"cifar"` for images of at most 64 pixels, else `"imagenet"`.
            Flips are off for digits (SVHN).

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
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if image_size is not None:
        image_size = tuple(int(side) for side in image_size)
        if len(image_size) != 2 or min(image_size) < 1:
            raise ValueError(f"image_size must be (height, width) of positive sides, got {image_size}.")
    if name == "image_folder":
        source, info = _image_folder(data_dir, split, image_size)
    else:
        source, info = _tfds(name, split, data_dir, recipe)
        if image_size is not None:
            source = source.map(lambda image, label: (cover(image, image_size), label))
            info = dataclasses.replace(info, image_shape=(*image_size, 3))
    size = tuple(info.image_shape[:2])
    augment = augment or ("cifar" if max(size) <= 64 else "imagenet")
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}.")
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

    def view(image):  # the image as evaluation sees it
        return image if image_size is None else centre_crop(image, image_size)

    if not training:
        if image_size is not None:
            source = source.map(
                lambda image, label: (view(image), label), num_parallel_calls=tf.data.AUTOTUNE
            )
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
        draw = tf.stack([epoch_seed, index])
        if augment == "imagenet":
            image = random_resized_crop(image, size, draw, recipe.flip)
        elif augment == "cifar":
            image = pad_crop_flip(view(image), draw, recipe.flip)
        else:
            image = view(image)
        return scale(image, label)

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


def random_resized_crop(image, size, seed, flip):
    """A random crop of 8-100 % of the image's area (aspect 3/4 to 4/3), resized to `size`, and with
    `flip` a random horizontal flip: ImageNet's training augmentation, drawn statelessly from `seed`."""
    crop_seed, flip_seed = tf.unstack(tf.random.split(seed, 2))
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=crop_seed,
        area_range=RESIZED_CROP_SCALE,
        aspect_ratio_range=RESIZED_CROP_RATIO,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, extent)
    crop = tf.image.resize(crop, size, method="bilinear", antialias=True)
    crop = tf.cast(tf.clip_by_value(tf.round(crop), 0, 255), image.dtype)
    if flip:
        crop = tf.image.stateless_random_flip_left_right(crop, seed=flip_seed)
    return crop


def pad_crop_flip(image, seed, flip):
    """The CIFAR recipe's training augmentation of one image, drawn statelessly from `seed`.

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
    options = dict(split=split, data_dir=data_dir, as_supervised=True, with_info=True, shuffle_files=False)
    load = functools.partial(tfds.load, name, **options)
    try:
        dataset, builder_info = load(download=False)  # prepared already: no network
    except AssertionError:  # what TFDS raises for a data set it has not prepared
        builder = tfds.builder(name, data_dir=data_dir)
        if builder.is_prepared():
            raise
        try:
            _check_reachable(_archives(name, builder), _manual_dir(data_dir))
            dataset, builder_info = load()
        except _DOWNLOAD_ERRORS as error:
            raise DatasetUnavailableError(_unavailable_message(name, builder, data_dir, error)) from error
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


def _archives(name, builder):
    """The files TFDS downloads to prepare a data set, by file name, with their URLs."""
    if name == "tiny_imagenet":
        return {tiny_imagenet.ARCHIVE: tiny_imagenet.URL}
    return {info.filename: url for url, info in (builder.url_infos or {}).items()}


def _manual_dir(data_dir):
    return os.path.join(os.path.expanduser(data_dir or tfds.core.constants.DATA_DIR), "downloads", "manual")


def _check_reachable(archives, manual_dir):
    """One request per archive not in the manual directory, before TFDS's own retries.

    Offline, TFDS retries each download for minutes before it gives up; one request
    without retries fails within seconds. Any HTTP answer counts as reachable.
    """
    for filename, url in archives.items():
        if not os.path.exists(os.path.join(manual_dir, filename)):
            requests.head(url, timeout=REACHABLE_TIMEOUT_S, allow_redirects=False)


def _unavailable_message(name, builder, data_dir, error):
    archives = _archives(name, builder)
    cause = str(error).splitlines()[0] if str(error) else type(error).__name__
    return (
        f"TFDS could not download the {name} data set: {type(error).__name__}: {cause[:300]}\n"
        "Is this machine offline? Two ways out:\n"
        f"  1. Download {', '.join(archives) or 'its archives'} elsewhere "
        f"({', '.join(archives.values()) or 'see the TFDS catalogue'}) and put "
        f"{'them' if len(archives) > 1 else 'it'} in TFDS's manual directory, {_manual_dir(data_dir)}/ "
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


def _image_folder(root, split, image_size):
    if not root or not os.path.isdir(root):
        raise ValueError(f"image_folder needs data_dir, a folder holding one folder per split, got {root!r}.")
    available = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    _check_splits("The image folder " + root, split, available)
    # The classes of every split, as TFDS's ImageFolder names them (labels by sorted name).
    names = tuple(
        sorted(
            {
                c
                for s in available
                for c in os.listdir(os.path.join(root, s))
                if os.path.isdir(os.path.join(root, s, c))
            }
        )
    )
    statistics_split = "train" if "train" in available else available[0]
    scans = {name: _scan_split(root, name) for name in {*_split_names(split), statistics_split}}
    if image_size is None:
        sizes = {size for name in _split_names(split) for _, _, size, _ in scans[name]}
        if len(sizes) > 1:
            examples = "; ".join(
                f"{path} is {w}x{h}"
                for (w, h), path in list(
                    {size: path for name in _split_names(split) for path, _, size, _ in scans[name]}.items()
                )[:3]
            )
            raise ValueError(
                f"The image folder {root} mixes image sizes ({examples}): pass --image_size=H[,W] "
                "(in Python image_size=) to resize them, or resize the images to one size."
            )
        ((width, height),) = sizes
        shape = (height, width, 3)
    else:
        shape = (*image_size, 3)
    # Whole splits are read in TFDS ImageFolder's fixed shuffle, so a slice is a random subset.
    lengths = {
        name: tfds.core.SplitInfo(name=name, shard_lengths=[len(scans[name])], num_bytes=0) for name in scans
    }
    slices = [
        (i.splitname, i.from_ or 0, len(scans[i.splitname]) if i.to is None else i.to)
        for i in tfds.core.ReadInstruction.from_spec(split).to_absolute(lengths)
    ]
    examples = [example for name, start, end in slices for example in scans[name][start:end]]
    dataset = _read_images(examples, names, image_size)
    mean, std = _folder_statistics(root, statistics_split, scans[statistics_split], names, image_size)
    info = DatasetInfo(
        name="image_folder",
        split=split,
        num_classes=len(names),
        class_names=names,
        image_shape=shape,
        num_examples=len(examples),
        mean=mean,
        std=std,
    )
    if image_size is None:
        dataset = dataset.map(lambda image, label: (tf.ensure_shape(image, shape), label))
    return dataset, info


def _read_images(examples, names, image_size):
    """`(uint8 image, int32 label)` of `(path, class, size, orientation)` examples, upright.

    With `image_size`, each image is `cover(image, image_size)`: the crops of training
    and evaluation come from there.
    """
    labels = [names.index(label) for _, label, _, _ in examples]
    paths = [path for path, *_ in examples]
    orientations = [orientation for *_, orientation in examples]
    dataset = tf.data.Dataset.from_tensor_slices((paths, tf.constant(labels, tf.int32), orientations))

    def load(path, label, orientation):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image = upright(image, orientation)
        if image_size is not None:
            image = cover(image, image_size)
        return image, label

    return dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)


def upright(image, orientation):
    """An image as its EXIF orientation (1-8; others: as stored) says it is seen."""
    transpose = tf.image.transpose
    branches = [
        lambda: image,  # 0 (no tag) and 1: as stored
        lambda: image,
        lambda: tf.image.flip_left_right(image),
        lambda: tf.image.rot90(image, 2),
        lambda: tf.image.flip_up_down(image),
        lambda: transpose(image),
        lambda: tf.image.rot90(image, 3),  # 90 degrees clockwise
        lambda: tf.image.rot90(transpose(image), 2),  # the transverse
        lambda: tf.image.rot90(image, 1),  # 90 degrees counter-clockwise
    ]
    index = tf.where((orientation >= 1) & (orientation <= 8), orientation, 0)
    return tf.switch_case(tf.cast(index, tf.int32), branches)


def cover(image, image_size):
    """`image` resized (aspect kept) to cover `image_size / CENTRE_CROP`, and the centre of that size.

    One size for every image of a data set, whatever its own: what training crops from
    and evaluation takes the centre of.
    """
    size = [round(side / CENTRE_CROP) for side in image_size]
    return centre_crop(resize_to_cover(image, size), size)


def resize_to_cover(image, size):
    """`image` resized (aspect kept, antialiased) so that it covers `size` = (height, width)."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    factor = tf.reduce_max(tf.constant(size, tf.float32) / shape)
    target = tf.cast(tf.math.ceil(shape * factor), tf.int32)
    resized = tf.image.resize(image, target, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


# What the folder scans found, kept across calls so that a folder is rescanned
# cheaply: path -> ((size, modification time), (image size, orientation)); only new or
# changed files are opened again.
_SCANNED = {}
_STATISTICS = {}  # (root, split, the split's files, image size) -> (mean, std)


def _scan_split(root, split):
    """Checks one split folder; returns its examples `(path, class, (width, height), orientation)`.

    In TFDS ImageFolder's order: classes and files sorted, then a fixed shuffle per
    split. Every image is checked once (`_image_size`: a broken file is reported here,
    with its path, rather than as an op error mid-training) and again only when its
    size or modification time changes.
    """
    folder = os.path.join(root, split)
    classes = sorted(c for c in os.listdir(folder) if os.path.isdir(os.path.join(folder, c)))
    if not classes:
        raise ValueError(f"{folder} has no class folders; expected {folder}/<class>/<image>.")
    examples = []
    for name in classes:
        with os.scandir(os.path.join(folder, name)) as listing:
            entries = sorted(listing, key=lambda entry: entry.path)
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden files such as .DS_Store
            if not entry.name.lower().endswith(IMAGE_SUFFIXES):
                raise ValueError(f"{entry.path} is not an image: expected {', '.join(IMAGE_SUFFIXES)} files.")
            stat = entry.stat()
            version = (stat.st_size, stat.st_mtime_ns)
            known = _SCANNED.get(entry.path)
            if known is None or known[0] != version:
                known = _SCANNED[entry.path] = (version, _image_size(entry.path))
            (size, orientation) = known[1]
            examples.append((entry.path, name, size, orientation))
    if not examples:
        raise ValueError(f"{folder} has no images ({', '.join(IMAGE_SUFFIXES)}).")
    random.Random(split).shuffle(examples)  # TFDS ImageFolder's shuffle
    return examples


def _image_size(path):
    """`((width, height), orientation)` of an image file as seen (EXIF orientation applied).

    The size is read from the header; the whole file is checked too, a JPEG at an eighth
    of its size (its decoder's draft mode reads every byte but skips most of the work),
    other formats in full.
    """
    try:
        with Image.open(path) as image:
            if image.format not in IMAGE_FORMATS:
                raise OSError(f"{image.format} images are not read by TensorFlow")
            width, height = image.size
            orientation = int(image.getexif().get(EXIF_ORIENTATION, 1))
            if image.format == "JPEG":
                image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"{path} is not a readable image: {error}") from None
    if orientation in (5, 6, 7, 8):  # a quarter turn: seen the other way round
        width, height = height, width
    return (width, height), orientation


def _folder_statistics(root, split, examples, names, image_size):
    """Per-channel mean and std of (a fixed sample of) an image folder's split, measured once per file set."""
    key = (root, split, tuple(examples), image_size)
    if key not in _STATISTICS:
        _STATISTICS[key] = _measure_statistics(_read_images(examples, names, image_size), image_size)
    return _STATISTICS[key]


def _measure_statistics(dataset, image_size):
    total, squares, pixels = np.zeros(3), np.zeros(3), 0
    if image_size is not None:  # the evaluation's view of each image
        dataset = dataset.map(lambda image, label: (centre_crop(image, image_size), label))
    for images, _ in (
        dataset.take(STATISTICS_SAMPLE).batch(500 if image_size is None else 50).as_numpy_iterator()
    ):
        values = images.reshape(-1, 3).astype(np.float64)
        total += values.sum(axis=0)
        squares += (values**2).sum(axis=0)
        pixels += len(values)
    mean = total / pixels
    std = np.sqrt(np.maximum(squares / pixels - mean**2, 1e-12))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def centre_crop(image, size):
    """The central `size` = (height, width) of an image at least that large."""
    shape = tf.shape(image)
    top, left = (shape[0] - size[0]) // 2, (shape[1] - size[1]) // 2
    return tf.ensure_shape(image[top : top + size[0], left : left + size[1]], (*size, 3))
