"""Stage 1 on real photos: a pretrained expert fine-tuned by the project's recipe and by Keras's guide.

Run: python bench/photos.py --data_dir=<photo folder or .zip> --weights=<no-top weights file>
     [--network=MobileNetV2] [--image_sizes=96,160] [--recipes=project,keras_guide]
     [--head_epochs=5] [--epochs=10] [--seeds=0] [--out=docs/results/photos] [--report_only]

The folder holds `train/<class>/*.jpg` and `validation/<class>/*.jpg` (or `test/`): the clothing
photos of github.com/alexeygrigorev/clothing-dataset-small are such a folder. `--weights` is
the ImageNet weights file of `--network` without its top, as Keras downloads it
(`keras.applications.MobileNetV2(weights="imagenet", include_top=False)` saves it under
`~/.keras/models/`). Trains on `train`, scores on the other split. For each image size, recipe
and seed, one JSON under `--out` (skipped when present: rerun the same command to go on):

- `project`: stage 1 of `apps/train.py --flagfile=configs/photos.flags --expert=<network>
  --expert_init=<weights>`, through the library's own `expert_stage`: the new head for
  `--head_epochs`, then the whole network, batch norm frozen, Adam.
- `keras_guide`: Keras's transfer-learning guide: the backbone frozen under a new head
  (dropout 0.2) trained with Adam at 1e-3, then the whole network at 1e-5, its batch norm in
  inference mode (frozen: in Keras 3 the guide's `training=False` is overridden by `fit`).

Each prints and records the held-out top-1 after the head and at the end, the same expert as
an int8 TFLite model in LiteRT, and the wall time. Then the table, also written to
`--out/table.md`.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import ctkd_tf  # noqa: F401  (before TensorFlow: it picks TensorFlow's CPU kernels)

# isort: split
import keras

from ctkd_tf import export, models, pixels, train

from common import ROOT, _unpacked, config_options, machine

RECIPES = ("project", "keras_guide")


def photo_folder(path):
    """The root holding `train/` and an evaluation split, and that split's name."""
    path = Path(path).expanduser()
    if not path.exists():
        sys.exit(f"--data_dir: {path} does not exist")
    folder = _unpacked(path) if path.suffix == ".zip" else path
    for root in [folder, *sorted(p.parent for p in folder.rglob("train"))]:
        for split in ("validation", "test"):
            if (root / "train").is_dir() and (root / split).is_dir():
                return str(root), split
    sys.exit(f"--data_dir: no folder under {path} holds train/ and validation/ (or test/)")


def project_config(args, root, split, size, seed, model_dir):
    options = config_options("photos.flags")
    options.update(
        data_dir=root,
        train_split="train",
        eval_split=split,
        image_size=(size,),
        expert_image_size=(),  # stage 1 at the size compared
        expert=args.network,
        expert_init=args.weights,
        expert_head_epochs=args.head_epochs,
        expert_epochs=args.epochs,
        seed=seed,
        model_dir=model_dir,
        verbose=2,
        export=(),
    )
    return train.TrainConfig(**options)


def keras_guide(args, config, run_data):
    """Keras's transfer-learning guide on the run's pipelines; `(expert, head accuracy)`."""
    info = run_data.train_info
    application = getattr(keras.applications, args.network)
    base = application(input_shape=info.image_shape, weights=args.weights, include_top=False)
    module = __import__(application.__module__, fromlist=["preprocess_input"])
    convention = "symmetric" if module.__name__.endswith(("mobilenet_v2", "mobilenet")) else "raw"
    inputs = keras.Input(info.image_shape)
    x = pixels.Pixels(convention, info.mean, info.std)(inputs)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    expert = keras.Model(inputs, keras.layers.Dense(info.num_classes)(x))
    fit = dict(x=run_data.train, shuffle=False, verbose=2)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    base.trainable = False
    expert.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    expert.fit(epochs=args.head_epochs, **fit)
    head = train.accuracy(expert, run_data.eval)
    base.trainable = True
    models.freeze_batchnorm(base)
    expert.compile(keras.optimizers.Adam(1e-5), loss, metrics=["accuracy"])
    expert.fit(epochs=args.epochs - args.head_epochs, **fit)
    return expert, head


def int8_accuracy(expert, run_data, directory):
    """The expert as an int8 TFLite model taking uint8 pixels, scored in LiteRT (`export.card`)."""
    info = run_data.train_info
    size = info.image_shape[:2]
    calibration = train.uint8_pixels(run_data.train, info, size, 8)[0]
    paths = export.export_student(expert, directory, ("tflite",), calibration, info.mean, info.std)
    images, labels = train.uint8_pixels(run_data.eval, info, size)
    return export.card(paths, expert, info.mean, info.std, info.class_names, images, labels, "eval")


def run(args, root, split, recipe, size, seed, path):
    with tempfile.TemporaryDirectory() as model_dir:
        config = project_config(args, root, split, size, seed, model_dir)
        strategy = train.setup(config)
        run_data = train.make_data(config, config.train_split, config.eval_split, strategy)
        start = time.time()
        if recipe == "project":
            expert = train.expert_stage(config, strategy, run_data, model_dir)
            finetune = train.read_json(os.path.join(model_dir, "expert", "finetune.json"))
            head, kept = finetune.get("head_accuracy"), finetune["kept"]
        else:
            expert, head = keras_guide(args, config, run_data)
            kept = "whole"
        wall = time.time() - start
        final = train.accuracy(expert, run_data.eval)
        card = int8_accuracy(expert, run_data, os.path.join(model_dir, "export"))
    result = {
        "recipe": recipe,
        "network": args.network,
        "image_size": size,
        "seed": seed,
        "head_epochs": args.head_epochs,
        "epochs": args.epochs,
        "train_examples": run_data.train_info.num_examples,
        "eval_split": split,
        "eval_examples": run_data.eval_info.num_examples,
        "head_accuracy": head,
        "accuracy": final,
        "kept": kept,
        "tflite_accuracy": card["accuracy"].get("tflite"),
        "int8_accuracy": card["accuracy"].get("tflite_int8"),
        "int8_bytes": card["files"].get("tflite_int8", {}).get("bytes"),
        "litert_problems": card.get("problems", {}),
        "wall_time_s": round(wall, 1),
        "data": f"the photo folder {Path(args.data_dir).name}",
        "machine": machine(),
    }
    path.write_text(json.dumps(result, indent=2) + "\n")
    keras.backend.clear_session()
    return result


def table(results):
    def pct(value):
        return "-" if value is None else f"{100 * value:.1f}"

    rows = [
        "| recipe | size | seed | after the head | after fine-tuning | int8 in LiteRT | stage 1 wall time |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in sorted(results, key=lambda r: (r["image_size"], r["recipe"], r["seed"])):
        kept = " (head kept)" if r["kept"] == "head" else ""
        rows.append(
            f"| {r['recipe']} | {r['image_size']} | {r['seed']} | {pct(r['head_accuracy'])} | "
            f"{pct(r['accuracy'])}{kept} | {pct(r['int8_accuracy'])} | {r['wall_time_s']:.0f} s |"
        )
    header = (
        f"{results[0]['network']} from ImageNet weights, {results[0]['head_epochs']} epochs of the head then "
        f"{results[0]['epochs'] - results[0]['head_epochs']} of the whole network; trained on "
        f"{results[0]['train_examples']} photos, top-1 (%) on {results[0]['eval_examples']} held-out ones "
        f"({results[0]['data']}). Machine: {' and '.join(sorted({r['machine'] for r in results}))}."
    )
    return header + "\n\n" + "\n".join(rows) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True, help="a photo folder (train/, validation/) or a .zip")
    parser.add_argument("--weights", required=True, help="the ImageNet weights file of --network, no top")
    parser.add_argument("--network", default="MobileNetV2")
    parser.add_argument("--image_sizes", default="96,160")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--head_epochs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10, help="in all: the head's, then the whole network's")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "photos"))
    parser.add_argument("--report_only", action="store_true", help="the table of the JSONs under --out")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipes = args.recipes.split(",")
    if set(recipes) - set(RECIPES):
        sys.exit(f"--recipes: among {', '.join(RECIPES)}")
    if not args.report_only:
        root, split = photo_folder(args.data_dir)
        print(f"data: the photo folder {Path(args.data_dir).name} (train, {split})", flush=True)
        for size in (int(s) for s in args.image_sizes.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                for recipe in recipes:
                    name = f"stage1_{recipe}_{args.network}_{size}px_{args.head_epochs}+"
                    path = out / f"{name}{args.epochs - args.head_epochs}_seed{seed}.json"
                    if path.exists():
                        continue
                    r = run(args, root, split, recipe, size, seed, path)
                    print(
                        f"{recipe} {size} px seed {seed}: head {r['head_accuracy']}, final {r['accuracy']}, "
                        f"int8 {r['int8_accuracy']}, {r['wall_time_s']} s",
                        flush=True,
                    )
    results = [json.loads(p.read_text()) for p in sorted(out.glob("stage1_*.json"))]
    if results:
        text = table(results)
        (out / "table.md").write_text(text)
        print(text)


if __name__ == "__main__":
    main()
