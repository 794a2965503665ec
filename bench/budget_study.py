"""When does the scratch teacher pay? Student accuracy against the training budget, per method.

Run: python bench/budget_study.py --expert_weights=cifar10_wrn40_1_e50

Trains the WRN-16-1 student alone (`student`), with AT+KD (`at_kd`, no scratch teacher),
with Rocket Launching (`rl`, no expert), with the paper's CTKD (`paper`) and with the
configs' recipe (`both_kd`) on the first N training images of the JPEG copy of CIFAR-10
for each N of --train_examples, --epochs each (the budget: N x epochs image-steps), and
scores the last epoch on the 10,000 test images. Seeds: every method with the first of
--seeds; the methods of --all_seeds_methods with every seed, so that the collaboration
gain (recipe minus AT+KD) has a seed spread. Runs go in that order (the first seed at
every budget first), one JSON per run in --out (skipped when present, so the study
resumes where it stopped), then `table.md` and `budget.png` from whatever has finished.
"""

import argparse
import json
import os
from pathlib import Path

import ctkd_tf  # noqa: F401  (before TensorFlow: it picks TensorFlow's CPU kernels)

# isort: split
import numpy as np

from ctkd_tf import train

from common import VARIANTS, cifar10_config, machine, run_once

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("student", "at_kd", "rl", "paper", "both_kd")
RECIPE, BASELINE = "both_kd", "at_kd"  # the collaboration gain: the recipe minus AT+KD


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train_examples", default="5000,15000,50000", help="budgets: first N images")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"among {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--all_seeds_methods", default=f"{RECIPE},{BASELINE}")
    parser.add_argument("--eval_split", default="test")
    parser.add_argument("--expert_weights", default="cifar10_wrn40_1_e50")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "budget"))
    parser.add_argument("--work_dir", default="/tmp/ctkd_budget", help="checkpoints and logs of the runs")
    parser.add_argument("--report_only", action="store_true", help="write the table and plot, train nothing")
    args = parser.parse_args()
    unknown = [m for m in args.methods.split(",") if m not in VARIANTS]
    if unknown:
        parser.error(f"unknown methods {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    return args


def queue(args):
    """(name, train_examples, seed) of every run, in the order they run."""
    sizes = [int(n) for n in args.train_examples.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    all_seeds = set(args.all_seeds_methods.split(","))
    runs = [(name, n, seeds[0]) for n in sizes for name in args.methods.split(",")]
    runs += [
        (name, n, seed)
        for seed in seeds[1:]
        for n in sizes
        for name in args.methods.split(",")
        if name in all_seeds
    ]
    return runs


def main():
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for name, n, seed in queue(args):
            run = f"{name}_n{n}_e{args.epochs}_seed{seed}"
            config = cifar10_config(
                train_split=f"train[:{n}]",
                eval_split=args.eval_split,
                epochs=args.epochs,
                lr_schedule="cosine",
                expert_weights=args.expert_weights,
                seed=seed,
                model_dir=os.path.join(args.work_dir, run),
                **VARIANTS[name],
            )
            # `method` names the study's recipe (config.method is the library's method).
            labels = dict(method=name)
            if not train.TEACHERS[config.method][0]:
                labels.update(scratch_accuracy=None)  # no scratch teacher
            run_once(config, out / f"{run}.json", **labels)
    report(out)


def load(out):
    """{method: {budget: [results, one per seed]}}."""
    runs = {}
    for path in sorted(out.glob("*_seed*.json")):
        result = json.loads(path.read_text())
        budget = result["train_examples"] * result["epochs"]
        runs.setdefault(result["method"], {}).setdefault(budget, []).append(result)
    return runs


def report(out):
    runs = load(out)
    if not runs:
        return
    methods = [m for m in VARIANTS if m in runs]
    budgets = sorted({b for per_budget in runs.values() for b in per_budget})
    every = [r for per_budget in runs.values() for rs in per_budget.values() for r in rs]
    some = every[0]
    experts = ", ".join(
        sorted({f"{100 * r['expert_accuracy']:.2f} %" for r in every if "expert_accuracy" in r})
    )
    lines = [
        f"Last-epoch top-1 (%) on `{some['eval_split']}` of the JPEG copy of CIFAR-10, WRN-16-1 student, "
        f"WRN-40-1 teachers, the first N training images x {some['epochs']} epochs (cosine), expert "
        f"`{some['config']['expert_weights']}` ({experts or 'unused'} on the same images); "
        f"{machine()}. Mean +- std over seeds (n); the scratch teacher's accuracy in brackets.",
        "",
        "| image-steps | N | " + " | ".join(methods) + f" | gain ({RECIPE} - {BASELINE}) |",
        "| ---: | ---: | " + " | ".join("---:" for _ in methods) + " | ---: |",
    ]
    for budget in budgets:
        cells = []
        for method in methods:
            results = runs[method].get(budget, [])
            if not results:
                cells.append("")
                continue
            cell = _mean_std([r["student_accuracy"] for r in results])
            scratch = [r["scratch_accuracy"] for r in results if r.get("scratch_accuracy") is not None]
            cells.append(cell + (f" [{100 * np.mean(scratch):.2f}]" if scratch else ""))
        n = budget // some["epochs"]
        lines.append(f"| {budget:,} | {n:,} | " + " | ".join(cells) + f" | {_gain_cell(runs, budget)} |")
    lines.append(
        "\nWall time per run (min): "
        + ", ".join(
            f"{m} {np.mean([r['wall_time_s'] for rs in runs[m].values() for r in rs]) / 60:.0f}"
            for m in methods
        )
    )
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(out, runs, methods, budgets)


def gains(runs, budget):
    """The recipe minus AT+KD, per seed both have at this budget (paired by seed)."""
    by_seed = [
        {r["seed"]: r["student_accuracy"] for r in runs.get(m, {}).get(budget, [])}
        for m in (RECIPE, BASELINE)
    ]
    return [100 * (by_seed[0][s] - by_seed[1][s]) for s in sorted(set(by_seed[0]) & set(by_seed[1]))]


def _gain_cell(runs, budget):
    values = gains(runs, budget)
    if not values:
        return ""
    spread = f" +- {np.std(values):.2f}" if len(values) > 1 else ""
    return f"{np.mean(values):+.2f}{spread} (n={len(values)})"


def _mean_std(accuracies):
    values = 100 * np.asarray(accuracies)
    spread = f" +- {values.std():.2f}" if len(values) > 1 else ""
    return f"{values.mean():.2f}{spread} (n={len(values)})"


def plot(out, runs, methods, budgets):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for index, method in enumerate(methods):
        color = f"C{index}"
        points = sorted(runs[method].items())
        x = [b for b, _ in points]
        student = [[100 * r["student_accuracy"] for r in rs] for _, rs in points]
        left.errorbar(
            x,
            [np.mean(s) for s in student],
            yerr=[np.std(s) for s in student],
            marker="o",
            capsize=3,
            color=color,
            label=method,
        )
        scratch = [
            [100 * r["scratch_accuracy"] for r in rs if r.get("scratch_accuracy") is not None]
            for _, rs in points
        ]
        if all(scratch):
            left.plot(
                x,
                [np.mean(s) for s in scratch],
                "--",
                marker="x",
                color=color,
                alpha=0.6,
                label=f"{method}: scratch teacher",
            )
    left.set_xscale("log")
    left.set_xlabel("budget (training images x epochs)")
    left.set_ylabel("top-1 on the test images (%)")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    for budget in budgets:
        values = gains(runs, budget)
        right.scatter([budget] * len(values), values, color="C0", alpha=0.5)
    with_gain = [b for b in budgets if gains(runs, b)]
    right.errorbar(
        with_gain,
        [np.mean(gains(runs, b)) for b in with_gain],
        yerr=[np.std(gains(runs, b)) for b in with_gain],
        marker="o",
        capsize=3,
        color="C0",
        label="mean +- std over seeds (points: seeds)",
    )
    right.axhline(0, color="grey", linewidth=1)
    right.set_xscale("log")
    right.set_xlabel("budget (training images x epochs)")
    right.set_ylabel(f"collaboration gain: {RECIPE} - {BASELINE} (points)")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out / "budget.png", dpi=120)


if __name__ == "__main__":
    main()
