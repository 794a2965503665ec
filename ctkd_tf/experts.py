"""Pre-trained expert teachers shipped with the package, loadable by registry name.

Each expert is a `.keras` file in `ctkd_tf/weights/` with a JSON card beside it: the
network, the data it was trained on and their normalisation, the command and recipe
that trained it, its measured test accuracy and the file's sha256, which is checked
before loading.

    expert = ctkd_tf.experts.load("cifar10_wrn40_1")
    # or, in the app: --expert_weights=cifar10_wrn40_1
"""

import hashlib
import json
import os
import platform
import shutil
from pathlib import Path

import keras
import tensorflow as tf

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def names():
    """Returns the registry names of the shipped experts, sorted."""
    return sorted(card.stem for card in WEIGHTS_DIR.glob("*.json"))


def card(name):
    """The JSON card of a shipped expert as a dict (recipe, accuracy, sha256, ...).

    Raises:
        ValueError: if `name` is not a shipped expert.
    """
    if name not in names():
        raise ValueError(f"Unknown expert {name!r}; shipped experts: {', '.join(names()) or 'none'}.")
    return json.loads((WEIGHTS_DIR / f"{name}.json").read_text())


def sha256(path):
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve(identifier):
    """The `.keras` file of an expert given by registry name or by path.

    A registry name's file is checked against the sha256 on its card.

    Raises:
        FileNotFoundError: if `identifier` is neither a shipped expert nor a file.
        ValueError: if a shipped expert's file does not match its card's sha256.
    """
    if identifier in names():
        path = WEIGHTS_DIR / f"{identifier}.keras"
        expected = card(identifier)["sha256"]
        if not path.is_file() or sha256(path) != expected:
            raise ValueError(
                f"The shipped expert {path} is missing or does not match the sha256 on its card "
                f"({expected}); reinstall ctkd-tf."
            )
        return str(path)
    if os.path.isfile(identifier):
        return identifier
    raise FileNotFoundError(
        f"Expert {identifier!r} is neither a file nor a shipped expert ({', '.join(names()) or 'none'})."
    )


def load(identifier):
    """Loads an expert `keras.Model`, by registry name or from a `.keras` path."""
    return keras.models.load_model(resolve(identifier))


def portable_flags(flags, name):
    """A run's flags without the paths of the machine it ran on, for a card.

    Args:
        flags: `--name=value` strings, as `flags.txt` holds them.
        name: the expert's registry name.
    """
    placeholders = {"--data_dir": "<data_dir>", "--model_dir": f"runs/{name}"}
    portable = []
    for flag in flags:
        key = flag.split("=", 1)[0]
        portable.append(f"{key}={placeholders[key]}" if key in placeholders else flag)
    return portable


def ship(run_dir, name, data_note="", weights_dir=None, note=""):
    """Registers the student of a finished `--method=student` run as an expert.

    Copies `run_dir/student.keras` to `weights_dir/<name>.keras` (the package's
    registry by default) and writes its card: the network, classes and normalisation
    it expects, the command and flags that trained it (without the paths of this
    machine: `--data_dir` and `--model_dir` become `<data_dir>` and `runs/<name>`),
    its accuracy from `results.json`, the learning rate and accuracy of every epoch
    as the run logged them (the schedule it actually followed, resumes included), the
    machine, the versions and the file's sha256. Its data must be at hand: the card
    records the normalisation measured on it.

    Args:
        run_dir: the `--model_dir` of a finished `apps/train.py --method=student` run.
        name: the registry name, for example `"cifar10_wrn40_1"`.
        data_note: what the training images were, named by their public source
            (the card's `data`; `<data_dir>` in its command stands for them).
        weights_dir: the registry folder; `WEIGHTS_DIR` by default.
        note: anything else a user of the expert should know (the card's `note`),
            for example how the run departed from its command.

    Returns:
        The card, as written.

    Raises:
        ValueError: if the run is not a `--method=student` run.
    """
    from ctkd_tf import data  # data imports TFDS: only when shipping

    run_dir = Path(run_dir)
    weights_dir = Path(weights_dir or WEIGHTS_DIR)
    config = json.loads((run_dir / "config.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    if config["method"] != "student":
        raise ValueError(f"{run_dir} is a --method={config['method']} run; an expert is trained alone.")
    _, info = data.build_dataset(
        config["dataset"], config["train_split"], config["batch_size"], False, data_dir=config["data_dir"]
    )
    weights_dir.mkdir(parents=True, exist_ok=True)
    target = weights_dir / f"{name}.keras"
    shutil.copyfile(run_dir / "student.keras", target)
    flags = run_dir / "flags.txt"
    flags = portable_flags(flags.read_text().split(), name) if flags.exists() else None
    history = results.get("history", {})
    recipe = ("epochs", "batch_size", "learning_rate", "lr_schedule", "momentum", "weight_decay", "seed")
    card = {
        "name": name,
        "network": config["student"],
        "parameters": keras.models.load_model(target).count_params(),
        "data": data_note or config["dataset"],
        "train_split": config["train_split"],
        "class_names": list(info.class_names),
        "image_shape": list(info.image_shape),
        "mean": list(info.mean),
        "std": list(info.std),
        "recipe": {key: config[key] for key in recipe},
        "command": " ".join(["python apps/train.py", *flags]) if flags else None,
        "flags": flags,  # written by apps/train.py
        "test_split": results["eval_split"],
        "test_examples": results["eval_examples"],
        "test_accuracy": results["student_accuracy"],
        "per_epoch": {
            "learning_rate": history.get("learning_rate"),
            "test_accuracy": history.get("val_student_accuracy"),
        },
        "wall_time_s": results["wall_time_s"],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "sha256": sha256(target),
    }
    if note:
        card["note"] = note
    (weights_dir / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card
