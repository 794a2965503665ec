"""Input pipelines: TFDS data sets under mock data, image folders, Tiny ImageNet, errors."""

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from ctkd_tf import data

from conftest import write_image_folder

CIFAR_ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.zip"


def unbatch(dataset):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset.unbatch()], strict=True)
    return np.stack(images), np.array(labels)


@pytest.mark.parametrize(
    "name, shape, classes",
    [
        ("cifar10", (32, 32, 3), 10),
        ("cifar100", (32, 32, 3), 100),
        ("svhn_cropped", (32, 32, 3), 10),
        ("tiny_imagenet", (64, 64, 3), 200),
    ],
)
def test_tfds_data_sets_under_mock_data(name, shape, classes):
    with tfds.testing.mock_data(num_examples=12):
        raw = tfds.load(name, split="test" if name != "tiny_imagenet" else "validation", as_supervised=True)
        raw_images = np.stack([x.numpy() for x, _ in raw])
        split = "test" if name != "tiny_imagenet" else "validation"
        dataset, info = data.build_dataset(name, split, batch_size=5, training=False)
        images, labels = unbatch(dataset)
        train, train_info = data.build_dataset(name, "train[:50%]", batch_size=4, training=True)
        train_images, train_labels = unbatch(train)
    assert (info.num_classes, info.image_shape, info.num_examples) == (classes, shape, 12)
    assert len(info.class_names) == classes
    assert images.shape == (12, *shape) and images.dtype == np.float32
    assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() < classes
    expected = (raw_images.astype(np.float32) - np.array(info.mean)) / np.array(info.std)
    np.testing.assert_allclose(images, expected, rtol=1e-5, atol=1e-5)
    assert train_images.shape == (12, *shape) and train_labels.max() < classes  # 3 full batches


def test_image_folder_reads_classes_splits_and_exact_pixels(tmp_path):
    written = write_image_folder(tmp_path)
    dataset, info = data.build_dataset(
        "image_folder", "test", batch_size=2, training=False, data_dir=str(tmp_path)
    )
    assert info.class_names == ("cat", "dog") and info.num_classes == 2
    assert info.image_shape == (5, 6, 3) and info.num_examples == 3
    images, labels = unbatch(dataset)
    # PNG is lossless: denormalising gives back the written pixels, in some order.
    restored = np.rint(images * np.array(info.std) + np.array(info.mean)).astype(np.uint8)
    got = sorted((int(y), x.tobytes()) for x, y in zip(restored, labels, strict=True))
    want = sorted((y, x.tobytes()) for x, y in written["test"])
    assert got == want
    # Normalisation statistics come from the training split.
    train_pixels = np.stack([x for x, _ in written["train"]]).reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(info.mean, train_pixels.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(info.std, train_pixels.std(axis=0), rtol=1e-6)
    # Unnormalised: the pixels themselves, for networks that bring their own preprocessing.
    raw, _ = data.build_dataset("image_folder", "test", 2, False, data_dir=str(tmp_path), normalize=False)
    pixels, raw_labels = unbatch(raw)
    assert pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels, restored.astype(np.float32))
    np.testing.assert_array_equal(raw_labels, labels)


def test_split_slicing(tmp_path):
    write_image_folder(tmp_path, {"train": {"a": 6, "b": 4}})
    root = str(tmp_path)
    _, half = data.build_dataset("image_folder", "train[:50%]", 1, False, data_dir=root)
    _, other = data.build_dataset("image_folder", "train[50%:]", 1, False, data_dir=root)
    first_three, three = data.build_dataset("image_folder", "train[:3]", 1, False, data_dir=root)
    assert (half.num_examples, other.num_examples, three.num_examples) == (5, 5, 3)
    assert len(unbatch(first_three)[1]) == 3
    halves = [
        unbatch(data.build_dataset("image_folder", s, 4, False, data_dir=root)[0])[0]
        for s in ("train[:50%]", "train[50%:]")
    ]
    everything = unbatch(data.build_dataset("image_folder", "train", 4, False, data_dir=root)[0])[0]
    np.testing.assert_array_equal(np.concatenate(halves), everything)


def test_training_augments_and_evaluation_is_deterministic(tmp_path):
    write_image_folder(tmp_path, {"train": {"a": 8, "b": 8}}, size=(12, 12))
    root = str(tmp_path)
    evaluation, _ = data.build_dataset("image_folder", "train", 5, False, data_dir=root)
    first, second = unbatch(evaluation), unbatch(evaluation)
    np.testing.assert_array_equal(first[0], second[0])
    assert len(first[1]) == 16  # 5 + 5 + 5 + 1: nothing dropped

    training, info = data.build_dataset("image_folder", "train", 4, True, data_dir=root, seed=3)
    epoch0, epoch1 = unbatch(training), unbatch(training)
    assert epoch0[0].shape == (16, 12, 12, 3)
    assert int(info.epoch.numpy()) == 2
    assert not np.array_equal(epoch0[0], epoch1[0])
    # Augmented images are not the plain ones: crops and flips moved pixels.
    plain = {x.tobytes() for x in first[0]}
    assert sum(x.tobytes() in plain for x in epoch0[0]) < 16
    assert sorted(epoch0[1]) == sorted(first[1])  # every example once per epoch

    # An epoch is a function of (seed, epoch) only: a resumed run replays it.
    info.epoch.assign(1)
    np.testing.assert_array_equal(unbatch(training)[0], epoch1[0])
    again, again_info = data.build_dataset("image_folder", "train", 4, True, data_dir=root, seed=3)
    again_info.epoch.assign(1)
    np.testing.assert_array_equal(unbatch(again)[0], epoch1[0])


def test_training_drops_only_the_last_partial_batch(tmp_path):
    write_image_folder(tmp_path, {"train": {"a": 7}})
    dataset, _ = data.build_dataset("image_folder", "train", 3, True, data_dir=str(tmp_path))
    assert int(dataset.cardinality()) == 2
    assert [b[0].shape[0] for b in dataset] == [3, 3]


@pytest.mark.parametrize("name", ["svhn_cropped", "cifar10"])
def test_augmentation_crops_and_flips_except_digits(name):
    # 12 columns: no flipped window of the padded image equals an unflipped one.
    image = np.arange(12 * 12 * 3, dtype=np.float32).reshape(12, 12, 3)
    flip = data.RECIPES[name].flip
    padded = np.pad(image, [(4, 4), (4, 4), (0, 0)], mode="reflect")
    windows = {padded[i : i + 12, j : j + 12].tobytes(): "plain" for i in range(9) for j in range(9)}
    windows.update(
        {padded[i : i + 12, j : j + 12][:, ::-1].tobytes(): "flipped" for i in range(9) for j in range(9)}
    )
    kinds = [
        windows.get(data.pad_crop_flip(image, tf.constant([7, k], tf.int64), flip).numpy().tobytes())
        for k in range(40)
    ]
    assert None not in kinds  # every output is a (flipped) window of the padded image
    assert ("flipped" in kinds) == flip and "plain" in kinds
    assert (
        len(
            {
                data.pad_crop_flip(image, tf.constant([7, k], tf.int64), flip).numpy().tobytes()
                for k in range(40)
            }
        )
        > 10
    )
    assert name != "svhn_cropped" or not flip


def test_distributed_pipeline_scores_every_example(tmp_path, mirrored):
    write_image_folder(tmp_path, {"test": {"a": 5, "b": 4}})
    strategy = mirrored
    dataset, _ = data.build_dataset("image_folder", "test", 4, False, data_dir=str(tmp_path))
    seen = 0
    for images, _ in strategy.experimental_distribute_dataset(dataset):
        seen += sum(int(tf.shape(x)[0]) for x in strategy.experimental_local_results(images))
    assert seen == 9


def test_tiny_imagenet_builder_on_a_fake_archive(tmp_path):
    wnids = ["n01443537", "n02124075", "n12267677"]

    def jpeg(seed, gray=False):
        shape = (64, 64) if gray else (64, 64, 3)
        pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG")
        return buffer.getvalue()

    manual = tmp_path / "manual"
    manual.mkdir()
    with zipfile.ZipFile(manual / "tiny-imagenet-200.zip", "w") as archive:
        top = "tiny-imagenet-200"
        archive.writestr(f"{top}/wnids.txt", "\n".join(wnids))
        for i, wnid in enumerate(wnids):
            for j in range(2):
                archive.writestr(f"{top}/train/{wnid}/images/{wnid}_{j}.JPEG", jpeg(10 * i + j, gray=j == 1))
            archive.writestr(f"{top}/train/{wnid}/{wnid}_boxes.txt", "")
        annotations = [f"val_{k}.JPEG\t{wnids[(k + 1) % 3]}\t0\t0\t10\t10" for k in range(4)]
        archive.writestr(f"{top}/val/val_annotations.txt", "\n".join(annotations) + "\n")
        for k in range(4):
            archive.writestr(f"{top}/val/images/val_{k}.JPEG", jpeg(100 + k))
        archive.writestr(f"{top}/test/images/test_0.JPEG", jpeg(999))

    builder = tfds.builder("tiny_imagenet", data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    assert builder.info.splits["train"].num_examples == 6
    assert builder.info.splits["validation"].num_examples == 4
    names = builder.info.features["label"].names
    assert len(names) == 200 and names[0] == "n01443537" and names[-1] == "n12267677"
    validation = {
        ex["id"].numpy().decode(): names[ex["label"].numpy()] for ex in builder.as_dataset(split="validation")
    }
    assert validation == {f"val_{k}": wnids[(k + 1) % 3] for k in range(4)}
    train = list(builder.as_dataset(split="train"))
    assert {ex["image"].shape for ex in train} == {(64, 64, 3)}  # grayscale JPEGs become RGB
    assert sorted(names[ex["label"].numpy()] for ex in train) == sorted(wnids * 2)


@pytest.mark.skipif(not CIFAR_ZIP.exists(), reason=f"the real CIFAR-10 archive is not at {CIFAR_ZIP}")
def test_image_folder_on_real_cifar10_images(tmp_path):
    with zipfile.ZipFile(CIFAR_ZIP) as archive:
        members = [m for m in archive.namelist() if m.endswith(".jpg")]
        # 20 images per class and split: enough to check the layout, quick to read.
        chosen = [m for m in members if int(Path(m).stem) < 20] if members else []
        archive.extractall(tmp_path, chosen)
    root = next(p.parent for p in tmp_path.rglob("train"))
    dataset, info = data.build_dataset("image_folder", "test", 50, False, data_dir=str(root))
    assert info.class_names == (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    )
    assert info.image_shape == (32, 32, 3) and info.num_examples == 200
    images, labels = unbatch(dataset)
    assert np.bincount(labels).tolist() == [20] * 10
    assert abs(images.mean()) < 0.3 and 0.7 < images.std() < 1.3


def test_unknown_data_set_and_split():
    with pytest.raises(ValueError, match="Unknown data set 'cifar11'"):
        data.build_dataset("cifar11", "train", 8, True)
    with pytest.raises(ValueError, match="cifar10 has no split 'tset'; its splits: train, test"):
        data.build_dataset("cifar10", "tset", 8, True)
    with pytest.raises(ValueError, match="Bad split"):
        data.build_dataset("cifar10", "train[:150%", 8, True)


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="needs data_dir"):
        data.build_dataset("image_folder", "train", 8, True, data_dir=None)
    write_image_folder(tmp_path / "ok")
    with pytest.raises(ValueError, match="no split 'validation'; its splits: test, train"):
        data.build_dataset("image_folder", "validation", 8, True, data_dir=str(tmp_path / "ok"))
    with pytest.raises(ValueError, match="has 2 classes but the model predicts 10"):
        data.build_dataset("image_folder", "train", 2, True, data_dir=str(tmp_path / "ok"), num_classes=10)
    with pytest.raises(ValueError, match="fewer than one batch of 8"):
        data.build_dataset("image_folder", "train", 8, True, data_dir=str(tmp_path / "ok"))

    (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="has no images"):
        data.build_dataset("image_folder", "train", 8, True, data_dir=str(tmp_path / "empty"))
    (tmp_path / "flat" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="has no class folders"):
        data.build_dataset("image_folder", "train", 8, True, data_dir=str(tmp_path / "flat"))

    write_image_folder(tmp_path / "mixed", {"train": {"cat": 2}})
    write_image_folder(tmp_path / "mixed2", {"train": {"dog": 1}}, size=(7, 7))
    (tmp_path / "mixed2" / "train" / "dog").rename(tmp_path / "mixed" / "train" / "dog")
    with pytest.raises(ValueError, match="mixes image sizes.*6x5.*7x7|mixes image sizes.*7x7.*6x5"):
        data.build_dataset("image_folder", "train", 1, True, data_dir=str(tmp_path / "mixed"))

    write_image_folder(tmp_path / "notes", {"train": {"cat": 2}})
    (tmp_path / "notes" / "train" / "cat" / "readme.txt").write_text("hello")
    (tmp_path / "notes" / "train" / "cat" / ".DS_Store").write_text("ignored")
    with pytest.raises(ValueError, match=r"readme\.txt is not an image"):
        data.build_dataset("image_folder", "train", 1, True, data_dir=str(tmp_path / "notes"))
    (tmp_path / "notes" / "train" / "cat" / "readme.txt").unlink()
    (tmp_path / "notes" / "train" / "cat" / "broken.jpg").write_text("not a jpeg")
    with pytest.raises(ValueError, match=r"broken\.jpg is not a readable image"):
        data.build_dataset("image_folder", "train", 1, True, data_dir=str(tmp_path / "notes"))


def test_training_pipeline_under_a_global_seed(tmp_path):
    write_image_folder(tmp_path, {"train": {"a": 4, "b": 4}})
    tf.random.set_seed(1)
    dataset, info = data.build_dataset("image_folder", "train", 4, True, data_dir=str(tmp_path), seed=5)
    first = unbatch(dataset)[1]
    info.epoch.assign(0)
    np.testing.assert_array_equal(unbatch(dataset)[1], first)


@pytest.mark.parametrize(
    "name, archive", [("cifar10", "cifar-10-binary.tar.gz"), ("tiny_imagenet", "tiny-imagenet-200.zip")]
)
def test_offline_download_raises_one_clear_error(tmp_path, offline, name, archive):
    with pytest.raises(data.DatasetUnavailableError) as raised:
        data.build_dataset(name, "train", 8, True, data_dir=str(tmp_path))
    message = str(raised.value)
    assert f"could not download the {name} data set" in message
    assert "ConnectionError" in message and "Failed to resolve" in message  # the cause
    assert archive in message and str(tmp_path / "downloads" / "manual") in message
    assert "--dataset=image_folder --data_dir=" in message
    # One request, without retries, before TFDS starts downloading: offline, the error comes in seconds.
    assert len(offline) == 1 and archive in offline[0]


def test_archives_in_the_manual_directory_are_prepared_without_the_network(tmp_path, offline, monkeypatch):
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    (manual / "cifar-10-binary.tar.gz").write_bytes(b"")
    prepared = []
    monkeypatch.setattr(
        tfds.core.DatasetBuilder, "download_and_prepare", lambda self, **kwargs: prepared.append(self.name)
    )
    with pytest.raises(AssertionError, match="could not find data"):  # the stub prepared nothing
        data.build_dataset("cifar10", "train", 8, True, data_dir=str(tmp_path))
    assert prepared == ["cifar10"] and offline == []  # TFDS was asked to prepare it, nothing requested


def test_image_folder_changed_between_calls_is_checked_again(tmp_path, monkeypatch):
    """No stale scan: what changed since the last call is decoded again, and only that."""
    write_image_folder(tmp_path, {"train": {"cat": 3, "dog": 2}, "test": {"cat": 1, "dog": 1}}, suffix=".jpg")
    opened = []
    real = data._image_size
    monkeypatch.setattr(data, "_image_size", lambda path: opened.append(path) or real(path))
    _, info = data.build_dataset("image_folder", "train", 1, True, data_dir=str(tmp_path))
    assert info.num_examples == 5 and len(opened) == 5
    opened.clear()
    data.build_dataset("image_folder", "train", 1, True, data_dir=str(tmp_path))
    assert opened == []  # nothing changed: nothing decoded again

    added = tmp_path / "train" / "dog" / "9.jpg"
    added.write_bytes((tmp_path / "train" / "dog" / "0.jpg").read_bytes())
    _, info = data.build_dataset("image_folder", "train", 1, True, data_dir=str(tmp_path))
    assert info.num_examples == 6 and opened == [str(added)]

    # A file broken in place (same name, truncated) is found on the next call, by path.
    broken = tmp_path / "train" / "cat" / "1.jpg"
    broken.write_bytes(broken.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"cat/1\.jpg is not a readable image"):
        data.build_dataset("image_folder", "train", 1, True, data_dir=str(tmp_path))
    broken.unlink()
    _, info = data.build_dataset("image_folder", "train", 1, True, data_dir=str(tmp_path))
    assert info.num_examples == 5


def photo_folder(root):
    """Photos as users have them: sizes, aspect ratios and formats mixed, one taken sideways."""
    rng = np.random.default_rng(1)
    specs = {
        "train": {
            "cat": [(40, 30, "JPEG"), (25, 50, "PNG"), (64, 48, "BMP")],
            "dog": [(30, 30, "GIF"), (50, 40, "JPEG")],
        },
        "test": {"cat": [(36, 24, "PNG")], "dog": [(24, 36, "JPEG")]},
    }
    for split, classes in specs.items():
        for name, images in classes.items():
            (root / split / name).mkdir(parents=True)
            for n, (width, height, kind) in enumerate(images):
                pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
                image = Image.fromarray(pixels)
                if kind == "GIF":
                    image = image.convert("P")
                image.save(root / split / name / f"{n}.{kind.lower().replace('jpeg', 'jpg')}", kind)


def test_photos_of_any_size_and_format_are_resized_with_image_size(tmp_path):
    photo_folder(tmp_path)
    with pytest.raises(ValueError, match="mixes image sizes.*--image_size=H\\[,W\\]"):
        data.build_dataset("image_folder", "train", 2, True, data_dir=str(tmp_path))
    train, info = data.build_dataset("image_folder", "train", 2, True, data_dir=str(tmp_path), image_size=16)
    assert info.image_shape == (16, 16, 3) and info.num_examples == 5 and info.class_names == ("cat", "dog")
    images, labels = unbatch(train)
    assert images.shape == (4, 16, 16, 3) and set(labels) <= {0, 1}
    test, _ = data.build_dataset(
        "image_folder", "test", 2, False, data_dir=str(tmp_path), image_size=(12, 20), normalize=False
    )
    images, labels = unbatch(test)
    assert images.shape == (2, 12, 20, 3) and images.min() >= 0 and images.max() <= 255


def test_evaluation_resizes_to_cover_then_takes_the_centre(tmp_path):
    # A 40x20 (width x height) image of a left and a right half: the centre crop of a square view
    # at 16 px keeps the middle, half of each colour.
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, 20:] = 200
    (tmp_path / "test" / "a").mkdir(parents=True)
    Image.fromarray(pixels).save(tmp_path / "test" / "a" / "0.png")
    test, _ = data.build_dataset(
        "image_folder", "test", 1, False, data_dir=str(tmp_path), image_size=16, normalize=False
    )
    (image,), _ = unbatch(test)
    assert image.shape == (16, 16, 3)
    np.testing.assert_allclose(image[:, :6].mean(), 0, atol=2)
    np.testing.assert_allclose(image[:, -6:].mean(), 200, atol=2)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_does(tmp_path, orientation):
    from PIL import ImageOps

    rng = np.random.default_rng(orientation)
    stored = Image.fromarray(rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[data.EXIF_ORIENTATION] = orientation
    (tmp_path / "test" / "a").mkdir(parents=True)
    stored.save(tmp_path / "test" / "a" / "0.png", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "test" / "a" / "0.png")))
    test, info = data.build_dataset("image_folder", "test", 1, False, data_dir=str(tmp_path), normalize=False)
    assert info.image_shape == (*expected.shape[:2], 3)
    np.testing.assert_array_equal(unbatch(test)[0][0], expected)


@pytest.mark.parametrize("augment, size", [("imagenet", 16), ("cifar", 16), ("none", 16), (None, 96)])
def test_each_augmentation_gives_the_image_size_and_varies_by_epoch(tmp_path, augment, size):
    photo_folder(tmp_path)
    train, info = data.build_dataset(
        "image_folder", "train", 5, True, data_dir=str(tmp_path), image_size=size, augment=augment, seed=3
    )
    first, second = unbatch(train)[0], unbatch(train)[0]
    assert first.shape == (5, size, size, 3)
    assert (augment == "none") == np.array_equal(np.sort(first.ravel()), np.sort(second.ravel()))
    with pytest.raises(ValueError, match="augment must be one of cifar, imagenet, none"):
        data.build_dataset(
            "image_folder", "train", 5, True, data_dir=str(tmp_path), image_size=16, augment="mixup"
        )


def test_scan_reads_a_jpeg_in_draft_mode_not_in_full(tmp_path, monkeypatch):
    write_image_folder(tmp_path, {"train": {"cat": 1}}, size=(64, 48), suffix=".jpg")
    from PIL import JpegImagePlugin

    drafts = []
    real = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(
        JpegImagePlugin.JpegImageFile,
        "draft",
        lambda self, mode, size: drafts.append(size) or real(self, mode, size),
    )
    data._SCANNED.clear()
    data.build_dataset("image_folder", "train", 1, True, data_dir=str(tmp_path))
    assert drafts == [(8, 6)]
