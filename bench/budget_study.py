"""When does the scratch teacher pay? Student accuracy against the training budget, per method.

Run: python bench/budget_study.py --expert_weights=cifar10_wrn40_1_e100

Trains the WRN-16-1 student alone (`student`), with AT+KD (`at_kd`, no scratch teacher),
with Rocket Launching (`rl`, no expert), with the paper's CTKD (`paper`) and with the
configs' recipe (`both_kd`) on the first N training images of CIFAR-10 (TFDS, or the
image folder of --data_dir) for each N of --train_examples, --epochs each (the budget:
N x epochs image-steps), and scores the last epoch on the 10,000 test images. Seeds:
every method with the first of --seeds; the methods of --all_seeds_methods with every
seed, so that the collaboration gain (recipe minus AT+KD) has a seed spread. Runs go in
that order (the first seed at every budget first), one JSON per run in --out (skipped
when present, so the study resumes where it stopped), then `table.md` and `budget.png`
from whatever has finished.

The scratch teacher costs arithmetic: the recipe's step is about 2.5x AT+KD's and 5x the
student's alone. Runs of other epochs join the same table and plot, so AT+KD (or the student
alone) trained longer on the same images answers the question at equal cost (the table sets
each recipe budget against each method's budget of about the same arithmetic on the same N
images), for example:

    python bench/budget_study.py --methods=at_kd --train_examples=50000 --epochs=25 --seeds=0
"""

import argparse
import json
import os
from pathlib import Path

import ctkd_tf  # noqa: F401  (before TensorFlow: it picks TensorFlow's CPU kernels)

# isort: split
import numpy as np

from ctkd_tf import methods

from common import (
    VARIANTS,
    add_data_flag,
    cifar10,
    cifar10_config,
    config_step_flops,
    machines,
    run_once,
    sources,
)

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("student", "at_kd", "rl", "paper", "both_kd")
RECIPE, BASELINE = "both_kd", "at_kd"  # the collaboration gain: the recipe minus AT+KD
# Whose gain over AT+KD the table and plot show, once run: the configs' recipe, and the
# variant that beat it on validation (bench/ablate.py) and joined the study.
RECIPES = (RECIPE, "both_kd_correct")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_flag(parser)
    parser.add_argument("--train_examples", default="5000,15000,50000", help="budgets: first N images")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"among {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--all_seeds_methods", default=f"{RECIPE},{BASELINE}")
    parser.add_argument("--eval_split", default="test")
    parser.add_argument("--expert_weights", default="cifar10_wrn40_1_e100")
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
        source = cifar10(args.data_dir)
        for name, n, seed in queue(args):
            run = f"{name}_n{n}_e{args.epochs}_seed{seed}"
            config = cifar10_config(
                source,
                train_split=f"train[:{n}]",
                eval_split=args.eval_split,
                epochs=args.epochs,
                lr_schedule="cosine",
                expert_weights=args.expert_weights,
                seed=seed,
                validate_every_epoch=False,  # scored once, after the last epoch: all the study uses
                model_dir=os.path.join(args.work_dir, run),
                **VARIANTS[name],
            )
            # `method` names the study's recipe (config.method is the library's method).
            labels = dict(method=name, data=source.label)
            if not methods.get(config.method).scratch_teacher:
                labels.update(scratch_accuracy=None)  # no scratch teacher
            run_once(config, out / f"{run}.json", **labels)
    report(out)


def load(out):
    """{method: {(train_examples, epochs): [results, one per seed]}}."""
    runs = {}
    for path in sorted(out.glob("*_seed*.json")):
        result = json.loads(path.read_text())
        size = (result["train_examples"], result["epochs"])
        runs.setdefault(result["method"], {}).setdefault(size, []).append(result)
    return runs


def image_steps(size):
    """A budget's training images x epochs."""
    return size[0] * size[1]


def report(out):
    runs = load(out)
    if not runs:
        return
    methods = [m for m in VARIANTS if m in runs]
    sizes = sorted({s for per_size in runs.values() for s in per_size}, key=lambda s: (image_steps(s), s))
    every = [r for per_size in runs.values() for rs in per_size.values() for r in rs]
    some = every[0]
    experts = ", ".join(
        sorted({f"{100 * r['expert_accuracy']:.2f} %" for r in every if "expert_accuracy" in r})
    )
    expert = f"`{some['config']['expert_weights']}`"
    expert = f"expert {expert} ({experts} on the same images)" if experts else "no expert in these runs yet"
    settings = sorted({str(r.get("intra_op_threads", "default")) for r in every})
    threads = ", ".join(settings)
    if "1" in settings:
        threads += "; one thread each is two runs at a time, side by side"
    flops = {m: config_step_flops(runs[m][next(iter(runs[m]))][0]["config"]) for m in methods}
    lines = [
        f"Last-epoch top-1 (%) on `{some['eval_split']}` of {sources(every)}, WRN-16-1 student, "
        f"WRN-40-1 teachers, the first N training images x E epochs (cosine), {expert}; "
        f"{machines(every)}. Mean +- std over seeds (n); the scratch teacher's accuracy in brackets.",
        "",
        *_table(runs, methods, sizes, _accuracy_cell, recipes=_gain_recipes(runs)),
        "",
        "Training arithmetic per image-step (GFLOP, convolutions and dense layers: 3 passes of each "
        "trained network, 1 of the expert): " + ", ".join(f"{m} {flops[m] / 1e9:.3f}" for m in methods) + ".",
        "",
        *_equal_arithmetic_lines(runs, flops),
        "Wall time per run (minutes, mean over seeds; longer where the machine also ran other work; "
        f"intra-op threads: {threads}):",
        "",
        *_table(
            runs, methods, sizes, lambda results: f"{np.mean([r['wall_time_s'] for r in results]) / 60:.0f}"
        ),
    ]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(out, runs, methods, sizes, flops)


def _gain_recipes(runs):
    """The `RECIPES` whose gain over AT+KD the runs measure."""
    return [r for r in RECIPES if r in runs and BASELINE in runs]


def _table(runs, methods, sizes, cell, recipes=()):
    """Markdown rows: a budget per row, `cell(results)` per method (and each recipe's gain)."""
    lines = [
        "| image-steps | N x E | "
        + " | ".join(methods)
        + " |"
        + "".join(f" gain ({r} - {BASELINE}) |" for r in recipes),
        "| ---: | ---: | " + " | ".join("---:" for _ in methods) + " |" + " ---: |" * len(recipes),
    ]
    for size in sizes:
        cells = [cell(runs[m][size]) if size in runs[m] else "" for m in methods]
        gain_cell = "".join(f" {_gain_cell(runs, size, r)} |" for r in recipes)
        lines.append(
            f"| {image_steps(size):,} | {size[0]:,} x {size[1]} | " + " | ".join(cells) + " |" + gain_cell
        )
    return lines


def _accuracy_cell(results):
    cell = _mean_std([r["student_accuracy"] for r in results])
    scratch = [r["scratch_accuracy"] for r in results if r.get("scratch_accuracy") is not None]
    return cell + (f" [{100 * np.mean(scratch):.2f}]" if scratch else "")


def gains(runs, size, recipe=RECIPE):
    """`recipe` minus AT+KD, per seed both have at this (N, E) budget (paired by seed)."""
    by_seed = [
        {r["seed"]: r["student_accuracy"] for r in runs.get(m, {}).get(size, [])} for m in (recipe, BASELINE)
    ]
    return [100 * (by_seed[0][s] - by_seed[1][s]) for s in sorted(set(by_seed[0]) & set(by_seed[1]))]


def _gain_cell(runs, size, recipe):
    values = gains(runs, size, recipe)
    if not values:
        return ""
    spread = f" +- {np.std(values):.2f}" if len(values) > 1 else ""
    return f"{np.mean(values):+.2f}{spread} (n={len(values)})"


def equal_arithmetic(runs, flops, within=1.25):
    """Each budget of the `RECIPES` set against other methods trained longer for its cost.

    The scratch teacher is paid for in arithmetic: the question is whether AT+KD (or the
    student alone) trained for more epochs on the same images, for about the same cost,
    does as well. For each budget of a recipe and each other method, that method's
    budget on the same N images with other epochs whose total arithmetic is nearest, if
    within a factor `within`: a list of ((recipe, size), (method, size)).
    """
    pairs = []
    for recipe, size in [(r, s) for r in RECIPES if r in runs for s in sorted(runs[r], key=image_steps)]:
        cost = image_steps(size) * flops[recipe]
        for method in (m for m in flops if m not in RECIPES):  # the table's order
            longer = [s for s in runs[method] if s[0] == size[0] and s[1] != size[1]]
            ratio = {s: image_steps(s) * flops[method] / cost for s in longer}
            match = min(ratio, key=lambda s: abs(np.log(ratio[s])), default=None)
            if match is not None and abs(np.log(ratio[match])) <= np.log(within):
                pairs.append(((recipe, size), (method, match)))
    return pairs


def _equal_arithmetic_lines(runs, flops, within=1.25):
    lines = []
    for pair in equal_arithmetic(runs, flops, within):
        accuracies = [[r["student_accuracy"] for r in runs[m][s]] for m, s in pair]
        cells = [
            f"{m} at {s[0]:,} x {s[1]} ({image_steps(s) * flops[m] / 1e15:.3g} PFLOP): {_mean_std(a)}"
            for (m, s), a in zip(pair, accuracies)
        ]
        lines.append(f"- {cells[0]}; {cells[1]}; difference {_difference(runs, pair):+.2f} points.")
    if not lines:
        return []
    return [f"At about equal training arithmetic (within {within}x), on the same images:", "", *lines, ""]


def _difference(runs, pair):
    """The first run's mean accuracy minus the second's, in points."""
    means = [np.mean([r["student_accuracy"] for r in runs[m][s]]) for m, s in pair]
    return 100 * (means[0] - means[1])


def _mean_std(accuracies):
    values = 100 * np.asarray(accuracies)
    spread = f" +- {values.std():.2f}" if len(values) > 1 else ""
    return f"{values.mean():.2f}{spread} (n={len(values)})"


def plot(out, runs, methods, sizes, flops):
    """budget.png: accuracy against image-steps and against arithmetic, and the recipes' gain
    over AT+KD at the same budget and at about the same arithmetic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ((steps, compute), (gain, equal)) = plt.subplots(2, 2, figsize=(13, 9.5))
    # The study's methods keep their colours however many have finished; others come after.
    palette = [*METHODS, *(m for m in methods if m not in METHODS)]
    for method in methods:
        color = f"C{palette.index(method) % 10}"
        # A line per number of epochs: the study's (the most runs) plain, longer runs dotted.
        by_epochs = {}
        for size, results in runs[method].items():
            by_epochs.setdefault(size[1], []).append((size, results))
        main = max(by_epochs, key=lambda e: (len(by_epochs[e]), -e))
        for epochs, points in sorted(by_epochs.items(), key=lambda item: item[0] != main):
            points.sort(key=lambda item: image_steps(item[0]))
            style = dict(marker="o", linestyle="-", label=method)
            if epochs != main:
                style = dict(marker="s", linestyle=":", label=f"{method}, {epochs} epochs")
            x = np.array([image_steps(s) for s, _ in points])
            student = [[100 * r["student_accuracy"] for r in rs] for _, rs in points]
            mean, std = [np.mean(s) for s in student], [np.std(s) for s in student]
            steps.errorbar(x, mean, yerr=std, capsize=3, color=color, **style)
            compute.errorbar(x * flops[method] / 1e15, mean, yerr=std, capsize=3, color=color, **style)
            scratch = [
                [100 * r["scratch_accuracy"] for r in rs if r.get("scratch_accuracy") is not None]
                for _, rs in points
            ]
            if all(scratch):
                steps.plot(
                    x,
                    [np.mean(s) for s in scratch],
                    "--",
                    marker="x",
                    color=color,
                    alpha=0.6,
                    label=f"{style['label']}: scratch teacher",
                )
    for axes in (steps, compute, gain, equal):
        axes.set_xscale("log")
        axes.grid(alpha=0.3)
    steps.set_xlabel("budget: training images x epochs")
    steps.set_ylabel("top-1 on the test images (%)")
    steps.legend(fontsize=8)
    compute.set_xlabel("training arithmetic, PFLOP (every network of the step)")
    compute.set_ylabel("student top-1 on the test images (%)")
    compute.legend(fontsize=8)
    recipes = _gain_recipes(runs)
    for recipe in recipes:
        color = f"C{palette.index(recipe) % 10}"
        paired = [s for s in sizes if gains(runs, s, recipe)]
        for size in paired:
            values = gains(runs, size, recipe)
            gain.scatter([image_steps(size)] * len(values), values, color=color, alpha=0.5)
        gain.errorbar(
            [image_steps(s) for s in paired],
            [np.mean(gains(runs, s, recipe)) for s in paired],
            yerr=[np.std(gains(runs, s, recipe)) for s in paired],
            marker="o",
            capsize=3,
            color=color,
            label=f"{recipe} - {BASELINE}: mean +- std over seeds (points: seeds)",
        )
    gain.axhline(0, color="grey", linewidth=1)
    gain.set_xlim(steps.get_xlim())  # the same budgets as the first panel, however few are paired
    gain.set_xlabel("budget: training images x epochs")
    gain.set_ylabel(f"gain over {BASELINE} at the same epochs (points)")
    if recipes:
        gain.legend(fontsize=8)
    for recipe in recipes:
        # The recipe against AT+KD trained longer for about the same arithmetic.
        pairs = [
            pair for pair in equal_arithmetic(runs, flops) if pair[0][0] == recipe and pair[1][0] == BASELINE
        ]
        if not pairs:
            continue
        equal.plot(
            [image_steps(size) for (_, size), _ in pairs],
            [_difference(runs, pair) for pair in pairs],
            marker="o",
            color=f"C{palette.index(recipe) % 10}",
            label=f"{recipe} - {BASELINE} with more epochs on the same images, about the same arithmetic",
        )
    equal.axhline(0, color="grey", linewidth=1)
    equal.set_xlim(steps.get_xlim())
    equal.set_xlabel("budget of the recipe: training images x epochs")
    equal.set_ylabel(f"gain over {BASELINE} at equal arithmetic (points)")
    if equal.get_legend_handles_labels()[0]:
        equal.legend(fontsize=8)
    else:  # a new study: AT+KD has not yet run for more epochs
        equal.text(
            0.5,
            0.5,
            f"no {BASELINE} run of about a recipe's arithmetic yet",
            ha="center",
            transform=equal.transAxes,
        )
    figure.tight_layout()
    figure.savefig(out / "budget.png", dpi=120)


if __name__ == "__main__":
    main()
