"""A TFDS builder for Tiny ImageNet, registered as `tiny_imagenet` when imported."""

import os
from pathlib import Path

import tensorflow_datasets as tfds

ARCHIVE = "tiny-imagenet-200.zip"
URL = "http://cs231n.stanford.edu/" + ARCHIVE
# The 200 WordNet ids of the official `wnids.txt`, sorted: the class names.
_WNIDS = (Path(__file__).with_name("tiny_imagenet_wnids.txt")).read_text().split()


class TinyImagenet(tfds.core.GeneratorBasedBuilder):
    """Tiny ImageNet (Stanford CS231n): 200 classes of 64x64 images.

    100,000 training images (500 per class) and 10,000 validation images, whose
    labels come from `val/val_annotations.txt`. The test images carry no labels and
    are left out.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Optional: place the official archive `{ARCHIVE}` in `manual_dir`
    (`~/tensorflow_datasets/downloads/manual/` by default); without it the archive
    is downloaded from {URL}.
    """

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(64, 64, 3)),
                    "label": tfds.features.ClassLabel(names=_WNIDS),
                    "id": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://www.kaggle.com/c/tiny-imagenet",
        )

    def _split_generators(self, dl_manager):
        root = self._extract(dl_manager) / "tiny-imagenet-200"
        return {
            "train": self._generate_examples(root, "train"),
            "validation": self._generate_examples(root, "validation"),
        }

    def _extract(self, dl_manager):
        try:
            archive = Path(dl_manager.manual_dir) / ARCHIVE
        except AssertionError:  # TFDS's word for a manual directory that is missing or empty
            archive = None
        if archive is not None and archive.exists():
            return Path(dl_manager.extract(archive))
        return Path(dl_manager.download_and_extract(URL))

    def _generate_examples(self, root, split):
        if split == "train":
            for wnid in sorted(os.listdir(root / "train")):
                for image in sorted((root / "train" / wnid / "images").iterdir()):
                    yield image.name, {"image": image, "label": wnid, "id": image.stem}
            return
        # val_annotations.txt: file name, wnid, then the bounding box, tab-separated.
        for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
            if line.strip():
                name, wnid = line.split("\t")[:2]
                yield (
                    name,
                    {
                        "image": root / "val" / "images" / name,
                        "label": wnid,
                        "id": Path(name).stem,
                    },
                )
