"""Ships a trained network as a registry expert: `ctkd_tf/weights/<name>.keras` and its card.

    python apps/ship_expert.py --run_dir=runs/expert --name=cifar10_wrn40_1 \
        --data_note="JPEG copy of CIFAR-10"

--run_dir is a finished `apps/train.py --method=student` run; its student becomes the
expert `--name`, loadable with `--expert_weights=<name>` (see `ctkd_tf.experts.ship`).
"""

from absl import app, flags

from ctkd_tf import experts

_RUN_DIR = flags.DEFINE_string("run_dir", None, "A finished --method=student run.", required=True)
_NAME = flags.DEFINE_string("name", None, "The registry name, e.g. cifar10_wrn40_1.", required=True)
_DATA_NOTE = flags.DEFINE_string("data_note", "", "What the training images were, for the card.")
_NOTE = flags.DEFINE_string(
    "note", "", "Anything else the card should say, e.g. how the run departed from its command."
)


def main(argv):
    del argv
    try:
        card = experts.ship(_RUN_DIR.value, _NAME.value, _DATA_NOTE.value, note=_NOTE.value)
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from None
    print(
        f"Shipped {card['name']} ({card['network']}): test accuracy {100 * card['test_accuracy']:.2f} % "
        f"on {card['test_examples']} images of {card['test_split']}, sha256 {card['sha256']}"
    )


if __name__ == "__main__":
    app.run(main)
