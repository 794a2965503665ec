"""Ablations of the CTKD recipe, scored on a validation split carved from the training set.

Run: python bench/ablate.py --variants=paper,at,both,warmup5 --seeds=0,1

Every variant trains the same WRN-16-1 student (WRN-40-1 scratch teacher, the shipped
WRN-40-1 expert) on --train_split of the real CIFAR-10 images with the same schedule
and seeds; only the options in `VARIANTS` change. Each is scored on --eval_split,
training images that no student sees (the default `train[45000:]`; the shipped expert
was trained on them, the students were not): recipes are chosen here, never on the
test set. Writes one JSON per run and `table.md` (mean +- std over the seeds of the
last-epoch validation accuracy of the student, and of the scratch teacher) into --out.
Runs that already have their JSON are not run again, so an interrupted series resumes.
The table describes the runs by their own configs, so one folder holds one series (split,
epochs, schedule, expert); `--report_only` rewrites it without training.
"""

import argparse
import dataclasses
import json
import os
from pathlib import Path

import ctkd_tf  # noqa: F401  (before TensorFlow: it picks TensorFlow's CPU kernels)

# isort: split
import numpy as np

from ctkd_tf.config import LR_SCHEDULES

from common import VARIANTS, add_data_flag, cifar10, cifar10_config, machines, run_once, sources

ROOT = Path(__file__).resolve().parents[1]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_flag(parser)
    parser.add_argument("--variants", default="paper,at,both,kl", help=f"among {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train_split", default="train[:5000]")
    parser.add_argument("--eval_split", default="train[45000:]")
    parser.add_argument("--lr_schedule", default="cosine", choices=LR_SCHEDULES)
    parser.add_argument("--expert_weights", default="cifar10_wrn40_1")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "ablation"))
    parser.add_argument("--work_dir", default="/tmp/ctkd_ablate", help="checkpoints and logs of the runs")
    parser.add_argument("--report_only", action="store_true", help="write the table of --out, train nothing")
    args = parser.parse_args()
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    return args


def main():
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        train_all(args, out)
    write_table(out)


def train_all(args, out):
    source = cifar10(args.data_dir)
    base = cifar10_config(
        source,
        train_split=args.train_split,
        eval_split=args.eval_split,
        epochs=args.epochs,
        lr_schedule=args.lr_schedule,
        expert_weights=args.expert_weights,
        expert_epochs=args.epochs,
        validate_every_epoch=False,  # scored once, after the last epoch: all the table uses
    )
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in args.variants.split(","):
            config = dataclasses.replace(
                base, seed=seed, model_dir=os.path.join(args.work_dir, f"{name}_seed{seed}"), **VARIANTS[name]
            )
            run_once(config, out / f"{name}_seed{seed}.json", data=source.label)


SERIES = ("eval_split", "train_split", "epochs", "lr_schedule", "expert_weights")  # what one table shares


def write_table(out):
    """`table.md` of the runs in `out`, described by their own configs: one series per folder."""
    runs, series = {}, {key: set() for key in SERIES}
    for path in sorted(out.glob("*_seed*.json")):
        name, run = path.stem.rsplit("_seed", 1)[0], json.loads(path.read_text())
        runs.setdefault(name, []).append(run)
        for key in set(SERIES) - set(VARIANTS[name]):  # a variant's own options may differ
            series[key].add(run["config"][key])
    if not runs:
        return
    mixed = {key: sorted(values, key=str) for key, values in series.items() if len(values) > 1}
    if mixed:
        raise SystemExit(f"{out} holds runs of more than one series ({mixed}): give each its own --out")
    # A key every variant sets itself (weak_expert's expert) is in the options column only.
    eval_split, train_split, epochs, lr_schedule, expert = (
        next(iter(series[key]), "per variant") for key in SERIES
    )
    every = [r for rs in runs.values() for r in rs]
    lines = [
        f"Last-epoch top-1 (%) on `{eval_split}` (validation: training images no student sees) of "
        f"{sources(every)}; WRN-16-1 student, WRN-40-1 teachers, `{train_split}`, {epochs} "
        f"epochs ({lr_schedule}), expert `{expert}`; {machines(every)}.",
        "",
        "| variant | options | seeds | student mean +- std | per seed | scratch | expert | min/run |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for name in [v for v in VARIANTS if v in runs]:
        student = np.array([100 * r["student_accuracy"] for r in runs[name]])
        scratch, expert = (
            [100 * r[key] for r in runs[name] if key in r] for key in ("scratch_accuracy", "expert_accuracy")
        )
        spread = f"{student.std():.2f}" if len(student) > 1 else "n/a"
        options = ", ".join(f"{k}={v}" for k, v in VARIANTS[name].items())
        minutes = np.mean([r["wall_time_s"] for r in runs[name]]) / 60
        per_seed = ", ".join(f"{a:.2f}" for a in student)
        lines.append(
            f"| {name} | {options} | {len(student)} | {student.mean():.2f} +- {spread} | {per_seed} "
            f"| {_mean(scratch)} | {_mean(expert)} | {minutes:.0f} |"
        )
    lines.append(
        "\nscratch, expert: mean last-epoch accuracy of the scratch teacher and expert on the same images."
    )
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _mean(percentages):
    return f"{np.mean(percentages):.2f}" if percentages else "-"


if __name__ == "__main__":
    main()
