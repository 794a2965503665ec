"""Shared by the benchmarks: the real CIFAR-10 images from ../shared, unpacked once."""

import os
import sys
import zipfile
from pathlib import Path

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.zip"
CACHE = Path(os.environ.get("CTKD_CIFAR10_DIR", "/tmp/ctkd_cifar10_jpeg"))


def cifar10_root():
    """The folder holding `train/` and `test/` of the JPEG copy of CIFAR-10.

    Unpacks `../shared/data/cifar10-jpeg.zip` into `$CTKD_CIFAR10_DIR` (default
    /tmp/ctkd_cifar10_jpeg) on first use; exits with a message when it is absent.
    """
    done = CACHE / ".complete"
    if not done.exists():
        if not ARCHIVE.exists():
            sys.exit(f"skipped: the real CIFAR-10 archive is not at {ARCHIVE}")
        with zipfile.ZipFile(ARCHIVE) as archive:
            archive.extractall(CACHE)
        done.touch()
    return str(next(p.parent for p in CACHE.rglob("train") if (p.parent / "test").is_dir()))
