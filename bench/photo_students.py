"""Small students on real photos: fine-tuned alone from ImageNet weights, or distilled from a larger expert.

Run: python bench/photo_students.py --data_dir=<photo folder or .zip> --weights=<MobileNetV2 no-top file>
     [--rows=expert,finetuned,at_kd,kd,at100_kd,ctkd,v3_alone,v3_at_kd] [--seeds=0,1] [--size=96]
     [--expert_size=192] [--epochs=10] [--holdout=15] [--out=docs/results/photo_students] [--report_only]

Trains on `train/`, scores on `validation/` (or `test/`); with `--holdout=P`, trains on the first
100-P % of `train/` and scores on the rest (`validation/` unseen: where recipes are chosen before
the table's runs). Each row is `apps/train.py` with
`configs/photos.flags` and the options below, one JSON per row and seed under `--out`
(skipped when present: rerun the same command to go on; a run stopped midway resumes):

- `expert`: MobileNetV2 fine-tuned alone from ImageNet at `--expert_size` px; seed 0's is
  the teacher of the distilled rows (`--expert_dir`), other seeds measure the row's spread.
- `finetuned`: MobileNetV2 fine-tuned alone from ImageNet at `--size` px (what a
  transfer-learning tool gives).
- `at_kd`: the same student from the same weights, distilled from the `expert` (its attention
  and logits), which sees the same crop at `--expert_size` px.
- `kd`: `at_kd` with its logits only; `at100_kd`: with a tenth of the attention weight (100).
- `ctkd`: `kd` with a scratch teacher (MobileNetV2 from ImageNet too) and its hint.
- `v3_alone`, `v3_at_kd`: MobileNetV3Small from random weights at `--size` px, alone and distilled
  (what the project gave before pretrained students), 3 x `--epochs` epochs.

Each JSON holds the float and int8 (LiteRT) top-1, the int8 file's size, the int8 model's
latency per photo in LiteRT on this CPU (batch 1, median of 200 calls), and the wall time.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import ctkd_tf  # noqa: F401  (before TensorFlow: it picks TensorFlow's CPU kernels)

# isort: split
import numpy as np
from photos import photo_folder

from ctkd_tf import train

from common import ROOT, config_options, run_once

ROWS = ("expert", "finetuned", "at_kd", "kd", "at100_kd", "ctkd", "v3_alone", "v3_at_kd")


def row_options(row, args, expert_dir):
    pretrained = dict(student="MobileNetV2", student_init=args.weights, epochs=args.epochs)
    distilled = dict(
        method="at",
        expert_weights=str(expert_dir / "student.keras"),
        expert_image_size=(args.expert_size,),
        attention_weight=1000.0,
        expert_kd_weight=1.0,
    )
    alone = dict(method="student", expert_image_size=())
    scratch = dict(student="MobileNetV3Small", student_init=None, epochs=3 * args.epochs)
    return {
        "expert": dict(**alone, image_size=(args.expert_size,), **pretrained),
        "finetuned": dict(**alone, **pretrained),
        "at_kd": dict(**pretrained, **distilled),
        "kd": dict(**pretrained, **distilled | dict(attention_weight=0.0)),
        "at100_kd": dict(**pretrained, **distilled | dict(attention_weight=100.0)),
        "ctkd": dict(
            **pretrained,
            **distilled | dict(method="ctkd", attention_weight=0.0),
            scratch_teacher="MobileNetV2",
            scratch_teacher_init=args.weights,
        ),
        "v3_alone": dict(**alone, **scratch),
        "v3_at_kd": dict(**scratch, **distilled),
    }[row]


def latency_ms(path, calls=200):
    """The median time of one batch-1 call of a TFLite model in LiteRT, in milliseconds."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (source,) = interpreter.get_input_details()
    image = np.random.default_rng(0).integers(0, 256, size=source["shape"], dtype=np.uint8)
    times = []
    for _ in range(calls + 10):
        interpreter.set_tensor(source["index"], image)
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[10:])


def run(row, seed, args, root, split, out):
    path = out / f"{row}_seed{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    options = config_options("photos.flags")
    if args.holdout:
        options.update(train_split=f"train[:{100 - args.holdout}%]")
        split = f"train[{100 - args.holdout}%:]"
    options.update(
        data_dir=root,
        eval_split=split,
        image_size=(args.size,),
        seed=seed,
        verbose=2,
        model_dir=str(Path(args.runs) / f"{row}_seed{seed}"),
        export=("tflite",),
    )
    options.update(row_options(row, args, Path(args.expert_dir)))
    result = run_once(
        train.TrainConfig(**options),
        path,
        row=row,
        data=f"the photo folder {Path(args.data_dir).name}"
        + (f", {options['train_split']} against {split}" if args.holdout else ""),
    )
    if result is None:
        return None
    card = json.loads((Path(options["model_dir"]) / "export" / "card.json").read_text())
    result.update(
        float_accuracy=card["accuracy"].get("tflite"),
        int8_accuracy=card["accuracy"].get("tflite_int8"),
        int8_bytes=card["files"].get("tflite_int8", {}).get("bytes"),
        int8_latency_ms=round(latency_ms(Path(options["model_dir"]) / "export" / "student_int8.tflite"), 2),
        litert_problems=card.get("problems", {}),
    )
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def table(results):
    by_row = {}
    for r in results:
        by_row.setdefault(r["row"], []).append(r)

    def spread(values):
        values = [100 * v for v in values if v is not None]
        if not values:
            return "-"
        mean = statistics.mean(values)
        return f"{mean:.1f}" + (f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else "")

    lines = [
        "| row | student | size | seeds | top-1 (Keras) | int8 in LiteRT | int8 size | int8 latency "
        "| wall time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in ROWS:
        runs = by_row.get(row)
        if not runs:
            continue
        c = runs[0]["config"]
        lines.append(
            f"| {row} | {c['student']}{' from ImageNet' if c.get('student_init') else ''} | "
            f"{c['image_size'][0]} px | {len(runs)} | {spread([r['student_accuracy'] for r in runs])} | "
            f"{spread([r['int8_accuracy'] for r in runs])} | {runs[0]['int8_bytes'] / 1e6:.2f} MB | "
            f"{statistics.median(r['int8_latency_ms'] for r in runs):.1f} ms | "
            f"{statistics.mean(r['wall_time_s'] for r in runs) / 60:.0f} min |"
        )
    first = results[0]
    header = (
        f"Top-1 (%) on {first['eval_examples']} held-out photos, trained on {first['train_examples']} "
        f"({first['data']}); mean ± standard deviation over seeds. Machine: "
        f"{' and '.join(sorted({r['machine'] for r in results}))}."
    )
    return header + "\n\n" + "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True, help="a photo folder (train/, validation/) or a .zip")
    parser.add_argument("--weights", required=True, help="MobileNetV2's ImageNet weights file, no top")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--expert_size", type=int, default=192)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "photo_students"))
    parser.add_argument("--runs", default="runs/photo_students", help="the runs' model_dirs")
    parser.add_argument(
        "--expert_dir", default="runs/photo_students/expert_seed0", help="the expert row's model_dir"
    )
    parser.add_argument(
        "--holdout", type=int, default=0, help="P: train on train[:100-P%%], score on train[100-P%%:]"
    )
    parser.add_argument("--report_only", action="store_true", help="the table of the JSONs under --out")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = args.rows.split(",")
    if set(rows) - set(ROWS):
        sys.exit(f"--rows: among {', '.join(ROWS)}")
    if not args.report_only:
        root, split = photo_folder(args.data_dir)
        print(f"data: the photo folder {Path(args.data_dir).name} (train, {split})", flush=True)
        if not (Path(args.expert_dir) / "student.keras").exists() and set(rows) - {"finetuned", "v3_alone"}:
            if args.holdout:
                sys.exit(f"--holdout: train the expert first (without --holdout): {args.expert_dir} is empty")
            run("expert", 0, args, root, split, out)  # the teacher of the distilled rows
        for seed in (int(s) for s in args.seeds.split(",")):
            for row in rows:
                r = run(row, seed, args, root, split, out)
                if r:
                    print(
                        f"{row} seed {seed}: {r['student_accuracy']:.4f}, int8 {r['int8_accuracy']}",
                        flush=True,
                    )
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*_seed*.json"))]
    if results:
        text = table(results)
        (out / "table.md").write_text(text)
        print(text)


if __name__ == "__main__":
    main()
