"""The paper's comparison on CIFAR-10: student, KD, AT, RL and CTKD, on the test images.

Run: python bench/compare_methods.py --epochs=10 --train_split="train[:5000]" --seeds=0,1 --jit_compile

--methods names methods (CTKD as the paper has it: `ctkd`) or recipes of `common.VARIANTS`
(e.g. `both_kd`, the CTKD recipe the configs carry).

Identical networks, data, schedule, seeds and expert for every method; only the loss
changes. Writes one JSON per run, `table.md` (mean +- std over the seeds of the
last-epoch test accuracy: nothing is selected on the test set) and `accuracy.png`
(test accuracy per epoch per method) into --out (docs/results by default). Runs that
already have their JSON are not run again, so an interrupted comparison resumes.
"""

import argparse
import dataclasses
import json
import os
from pathlib import Path

import ctkd_tf  # noqa: F401  (before TensorFlow: it picks TensorFlow's CPU kernels)

# isort: split
import keras
import numpy as np

from ctkd_tf import methods, train
from ctkd_tf.config import LR_SCHEDULES

from common import VARIANTS, add_data_flag, cifar10, cifar10_config, machines, run_once, sources

ROOT = Path(__file__).resolve().parents[1]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_flag(parser)
    parser.add_argument(
        "--methods",
        default="student,kd,at,rl,ctkd",
        help=f"among {', '.join(methods.names())} and {', '.join(VARIANTS)}",
    )
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--eval_split", default="test")
    parser.add_argument("--lr_schedule", default="cosine", choices=LR_SCHEDULES)
    parser.add_argument(
        "--expert_weights",
        default="cifar10_wrn40_1",
        help="the expert of every run: a shipped expert's name or a .keras file; empty: train one once",
    )
    parser.add_argument("--expert_epochs", type=int, default=15, help="with an empty --expert_weights")
    parser.add_argument("--jit_compile", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results"))
    parser.add_argument("--work_dir", default="/tmp/ctkd_compare", help="checkpoints and logs of the runs")
    parser.add_argument("--report_only", action="store_true", help="write the table and plot, train nothing")
    args = parser.parse_args()
    unknown = [m for m in args.methods.split(",") if m not in methods.names() and m not in VARIANTS]
    if unknown:
        parser.error(f"unknown methods {', '.join(unknown)}")
    return args


def options(name):
    """The TrainConfig options of a run named by a method or a recipe of VARIANTS."""
    return dict(method=name) if name in methods.names() else VARIANTS[name]


def main():
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        train_all(args, out)
    write_table_and_plot(out)


def train_all(args, out):
    source = cifar10(args.data_dir)
    base = cifar10_config(
        source,
        train_split=args.train_split,
        eval_split=args.eval_split,
        epochs=args.epochs,
        expert_epochs=args.expert_epochs,
        lr_schedule=args.lr_schedule,
        jit_compile=args.jit_compile,
    )
    expert = args.expert_weights
    if not expert:  # trained once, alone, with the same recipe, and shared by every run
        expert_run = dataclasses.replace(
            base,
            method="student",
            student="wrn40_1",
            epochs=args.expert_epochs,
            model_dir=os.path.join(args.work_dir, "expert"),
        )
        expert = os.path.join(expert_run.model_dir, "student.keras")
        if not os.path.exists(expert):
            train.train_and_evaluate(expert_run)
            keras.backend.clear_session()
    for seed in (int(s) for s in args.seeds.split(",")):
        for method in args.methods.split(","):
            config = dataclasses.replace(
                base,
                seed=seed,
                model_dir=os.path.join(args.work_dir, f"{method}_seed{seed}"),
                expert_weights=expert,
                **options(method),
            )
            run_once(config, out / f"{method}_seed{seed}.json", data=source.label)


def write_table_and_plot(out):
    """`table.md` and `accuracy.png` of the runs in `out`, described by the first run's config."""
    runs = {}
    for path in sorted(out.glob("*_seed*.json")):
        runs.setdefault(path.stem.rsplit("_seed", 1)[0], []).append(json.loads(path.read_text()))
    order = [m for m in dict.fromkeys(("student", "kd", "at", "rl", "ctkd", *VARIANTS)) if m in runs]
    every = [r for rs in runs.values() for r in rs]
    if not every:
        return
    config = every[0]["config"]
    lines = [
        f"Last-epoch top-1 on `{config['eval_split']}` of {sources(every)}, WRN-16-1 student, WRN-40-1 "
        f"teachers, `{config['train_split']}`, {config['epochs']} epochs ({config['lr_schedule']} schedule), "
        f"{'XLA, ' if config['jit_compile'] else ''}on {machines(every)}.",
        *[
            f"Expert teacher (KD, AT, CTKD): `{r['config']['expert_weights']}`, "
            f"{100 * r['expert_accuracy']:.2f} % on the same test images."
            for r in [r for rs in runs.values() for r in rs if "expert_accuracy" in r][:1]
        ],
        "",
        "| method | seeds | accuracy (%) mean +- std | per seed | wall time per run (min) |",
        "| --- | ---: | ---: | --- | ---: |",
    ]
    for method in order:
        accuracies = np.array([100 * r["student_accuracy"] for r in runs[method]])
        minutes = np.mean([r["wall_time_s"] for r in runs[method]]) / 60
        per_seed = ", ".join(f"{a:.2f}" for a in accuracies)
        spread = f"{accuracies.std(ddof=0):.2f}" if len(accuracies) > 1 else "n/a"
        label = (
            method
            if method in methods.names()
            else f"{method} ({', '.join(f'{k}={v}' for k, v in options(method).items())})"
        )
        lines.append(
            f"| {label} | {len(accuracies)} | {accuracies.mean():.2f} +- {spread} "
            f"| {per_seed} | {minutes:.0f} |"
        )
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for method in order:
        curves = np.array([r["history"]["val_student_accuracy"] for r in runs[method]])
        epochs = np.arange(1, curves.shape[1] + 1)
        axis.plot(epochs, 100 * curves.mean(axis=0), label=f"{method} ({len(curves)} seeds)")
    axis.set_xlabel("epoch")
    axis.set_ylabel(f"student top-1 on {config['eval_split']} (%)")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out / "accuracy.png", dpi=120)


if __name__ == "__main__":
    main()
