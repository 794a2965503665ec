"""Draws docs/method.png: CTKD's three networks and the loss terms that join them.

Run: python docs/draw_method.py  (needs matplotlib: `pip install -e ".[bench]"`)

Solid: the paper's CTKD. Dashed: the two terms the configs' recipe adds
(`--attention_target=both`, `--expert_kd_weight=1`); `configs/paper.flags` leaves them out.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parent / "method.png"
NETWORK, LOSS, EXTRA = "#dbe9f6", "#fdf0d5", "#eeeeee"


def box(axis, x, y, width, height, title, lines, colour, dashed=False):
    """A rounded box centred on (x, y): a bold title over smaller lines."""
    axis.add_patch(
        FancyBboxPatch(
            (x - width / 2, y - height / 2),
            width,
            height,
            boxstyle="round,pad=0.02,rounding_size=0.15",
            facecolor=colour,
            edgecolor="#444444",
            linestyle="--" if dashed else "-",
            linewidth=1.2,
        )
    )
    axis.text(
        x, y + (0.17 * height if lines else 0), title, ha="center", va="center", fontsize=11, weight="bold"
    )
    axis.text(x, y - 0.2 * height, "\n".join(lines), ha="center", va="center", fontsize=8.5)


def arrow(axis, start, end, label="", dashed=False, blocked=False, label_at=None):
    axis.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops=dict(arrowstyle="-|>", color="#333333", linestyle="--" if dashed else "-", lw=1.2),
    )
    middle = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
    if blocked:  # the gradient stops here: the hint trains the student only
        axis.text(*middle, "//", ha="center", va="center", fontsize=13, color="#b00020", weight="bold")
    if label:
        x, y = label_at or (middle[0], middle[1] + 0.18)
        axis.text(x, y, label, ha="center", va="bottom", fontsize=8, style="italic")


def main():
    figure, axis = plt.subplots(figsize=(11, 5.6))
    axis.set_xlim(0, 13.2)
    axis.set_ylim(0, 7)
    axis.axis("off")

    box(axis, 1.0, 3.5, 1.6, 1.3, "batch", ["images x", "labels y"], "white")
    expert, student, scratch = (4.1, 5.9), (4.1, 3.5), (4.1, 1.1)
    box(axis, *expert, 2.8, 1.3, "expert teacher", ["pre-trained, frozen", "inference mode"], NETWORK)
    box(axis, *student, 2.8, 1.3, "student", ["small; the one you keep"], NETWORK)
    box(
        axis,
        *scratch,
        2.8,
        1.3,
        "scratch teacher",
        ["larger, trained from scratch", "alongside the student"],
        NETWORK,
    )
    for network in (expert, student, scratch):
        arrow(axis, (1.8, 3.5), (network[0] - 1.45, network[1]))

    attention, hint = (8.4, 4.7), (8.4, 2.3)
    box(
        axis,
        *attention,
        3.7,
        1.3,
        "attention transfer",
        ["attention_weight x sum over layer pairs j", "mean_hw (a(A_student^j) - a(A_expert^j))^2"],
        LOSS,
    )
    box(
        axis,
        *hint,
        3.7,
        1.3,
        "hint",
        ["hint_weight x sum_c", "(stop_grad(z_scratch) - z_student)^2"],
        LOSS,
    )
    arrow(
        axis,
        (expert[0] + 1.45, expert[1]),
        (attention[0] - 1.9, attention[1] + 0.3),
        "attention maps",
        label_at=(7.3, 5.55),
    )
    arrow(axis, (student[0] + 1.45, student[1] + 0.2), (attention[0] - 1.9, attention[1] - 0.3))
    arrow(axis, (student[0] + 1.45, student[1] - 0.2), (hint[0] - 1.9, hint[1] + 0.3), "logits")
    arrow(axis, (scratch[0] + 1.45, scratch[1]), (hint[0] - 1.9, hint[1] - 0.3), blocked=True)

    ce_student, ce_scratch = (12.0, 3.5), (12.0, 1.1)
    box(axis, *ce_student, 2.0, 0.9, "CE(y, z_student)", [], LOSS)
    box(axis, *ce_scratch, 2.0, 0.9, "CE(y, z_scratch)", [], LOSS)
    axis.annotate(
        "",
        xy=(ce_student[0] - 1.05, ce_student[1]),
        xytext=(student[0] + 1.45, student[1]),
        arrowprops=dict(arrowstyle="-|>", color="#333333", lw=1.2, connectionstyle="arc3,rad=0.0"),
    )
    arrow(axis, (scratch[0] + 1.45, scratch[1] - 0.35), (ce_scratch[0] - 1.05, ce_scratch[1] - 0.2))

    expert_kd = (12.0, 5.9)
    box(axis, *expert_kd, 2.2, 1.1, "expert KD", ["T^2 KL(expert || student)", "(the recipe)"], EXTRA, True)
    arrow(axis, (expert[0] + 1.45, expert[1] + 0.3), (expert_kd[0] - 1.15, expert_kd[1]), "logits", True)
    axis.annotate(
        "",
        xy=(scratch[0] - 1.2, scratch[1] + 0.65),
        xytext=(expert[0] - 1.2, expert[1] - 0.65),
        arrowprops=dict(
            arrowstyle="-|>", color="#777777", linestyle="--", lw=1.2, connectionstyle="arc3,rad=0.35"
        ),
    )
    axis.text(
        1.75,
        1.95,
        "the recipe: the expert's\nattention on the scratch\nteacher too",
        ha="center",
        va="center",
        fontsize=8,
        style="italic",
        color="#555555",
    )
    axis.text(
        6.6,
        0.12,
        "One loss, the sum of the terms; one optimiser step trains student and scratch teacher together. "
        "// : no gradient. Dashed: added by the configs' recipe.",
        ha="center",
        fontsize=8.5,
    )
    figure.tight_layout()
    figure.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
