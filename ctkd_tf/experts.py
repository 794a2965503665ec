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
import numpy as np
import tensorflow as tf

from ctkd_tf import pixels, resume

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MARGIN = 0.10  # the default bar: the most common class's share plus this


class ExpertCheckError(ValueError):
    """An expert that would teach wrong answers (`check`); the message says why and what to do."""


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
    resume.write_json(weights_dir / f"{name}.json", card)
    return card


def score(predict, dataset):
    """What an expert's check measures: its top-1 on a dataset of `(images, labels)`.

    Args:
        predict: images -> scores (logits or probabilities), as the expert is fed in training.
        dataset: batches of `(images, integer labels)`.

    Returns:
        A dict: `accuracy`, `examples`, `majority_share` (the share of the most common
        label: what always answering it scores), `non_finite` (examples whose scores are
        not all finite; they count as wrong).
    """
    step = tf.function(lambda images: predict(images))
    correct = non_finite = examples = 0
    counts = {}
    for images, labels in dataset:
        outputs = np.asarray(keras.ops.convert_to_numpy(step(images)), np.float64)
        labels = np.asarray(labels).reshape(-1)
        finite = np.isfinite(outputs).all(axis=-1)
        correct += int(np.sum(finite & (np.argmax(np.nan_to_num(outputs), axis=-1) == labels)))
        non_finite += int(np.sum(~finite))
        examples += len(labels)
        for label, count in zip(*np.unique(labels, return_counts=True), strict=True):
            counts[int(label)] = counts.get(int(label), 0) + int(count)
    if not examples:
        raise ValueError("The expert's check needs evaluation examples; the dataset is empty.")
    return {
        "accuracy": correct / examples,
        "examples": examples,
        "majority_share": max(counts.values()) / examples,
        "non_finite": non_finite,
    }


def check(predict, dataset, min_accuracy=None, network=None, hints=None):
    """Scores an expert before it teaches (`score`) and stops one that would teach wrong answers.

    Args:
        predict: images -> scores, the expert as training feeds it.
        dataset: the evaluation batches.
        min_accuracy: the top-1 (a fraction) the expert must reach; None: the share of the
            most common class plus `MARGIN`; 0: no bar (non-finite outputs still fail).
        network: the expert `keras.Model`, to read hints from (a `Rescaling` inside).
        hints: what the message may say of the run (`pixels_flag`, `convention`,
            `trained_here`, `finetuned`, `class_names`); all optional.

    Returns:
        `score`'s dict with `min_accuracy` (the bar applied) and `passed`.

    Raises:
        ExpertCheckError: below the bar, or with non-finite outputs; the message names the
            likely causes and the flags that fix them.
    """
    result = score(predict, dataset)
    bar = result["majority_share"] + MARGIN if min_accuracy is None else float(min_accuracy)
    result["min_accuracy"] = min(bar, 1.0)
    result["passed"] = not result["non_finite"] and result["accuracy"] >= bar
    if not result["passed"]:
        raise ExpertCheckError(_message(result, min_accuracy, network, hints or {}))
    return result


def _message(result, min_accuracy, network, hints):
    share = f"{100 * result['accuracy']:.1f} %"
    if result["non_finite"]:
        what = (
            f"The expert gives non-finite scores (inf or NaN) on {result['non_finite']} of the "
            f"{result['examples']} evaluation examples (top-1 {share})"
        )
    else:
        bar = f"{100 * result['min_accuracy']:.1f} %"
        why = (
            f"the most common class's share, {100 * result['majority_share']:.1f} %, plus "
            f"{100 * MARGIN:.0f} points"
            if min_accuracy is None
            else "--min_expert_accuracy"
        )
        what = (
            f"The expert scores {share} top-1 on the {result['examples']} evaluation examples, below "
            f"{bar} ({why})"
        )
    flag = hints.get("pixels_flag")
    convention = hints.get("convention", "dataset")
    others = [c for c in pixels.CONVENTIONS if c != convention]
    if flag:
        fed, fix = f"{flag}={convention}", f"pass {flag}=" + "|".join(others)
    else:  # Python
        fed = "CTKD's preprocessing" if convention != "dataset" else "no preprocessing"
        fix = (
            'give CTKD preprocessing={"expert_teacher": ctkd_tf.pixels.Pixels(<'
            + "|".join(others)
            + ">, mean, std)}"
        )
    pixel_line = (
        f"  - pixel values: it is fed {pixels.DESCRIPTIONS[convention]} ({fed}); a network trained on "
        f"others fails like this: {fix}"
    )
    guessed = pixels.guess(network) if network is not None and not hints.get("trained_here") else None
    if guessed and guessed != convention:
        pixel_line += f" (it has a Rescaling layer near its input: {guessed} is likely)"
    causes = [pixel_line + "."]
    names = hints.get("class_names")
    causes.append(
        "  - class order: its outputs must follow the data set's classes, sorted by folder name"
        + (f" ({', '.join(names[:10])}{', ...' if len(names) > 10 else ''})" if names else "")
        + "; an expert trained on other folders (or another order) must be fine-tuned to these."
    )
    if hints.get("finetuned"):
        causes.append(
            "  - a failed fine-tune: see stage 1's log (expert/log.csv); fine-tune more gently "
            "(--finetune_learning_rate, --finetune_lr_factor) or longer (--expert_head_epochs, "
            "--expert_epochs)."
        )
    if hints.get("trained_here"):
        causes.append("  - too few epochs for the expert: --expert_epochs (see expert/log.csv).")
    if result["non_finite"]:
        causes.append("  - a diverged network: its weights or inputs overflow; retrain it with a lower rate.")
    return (
        f"{what}: it would teach the student wrong answers, so the run stops before stage 2. Likely causes:\n"
        + "\n".join(causes)
        + "\n--min_expert_accuracy sets the bar (0 turns the check off; non-finite scores always stop)."
    )
