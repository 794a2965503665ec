"""The benchmarks' recipes and the budget study's bookkeeping (the runs themselves are benchmarks)."""

import dataclasses
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ctkd_tf import methods, models, train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import ablate  # noqa: E402
import budget_study  # noqa: E402
import photo_students  # noqa: E402

import common  # noqa: E402


@pytest.mark.parametrize("row", photo_students.ROWS)
def test_every_photo_student_row_is_a_valid_photos_config(row, tmp_path):
    args = SimpleNamespace(weights="w.h5", epochs=10, size=96, expert_size=192)
    options = {**common.config_options("photos.flags"), "image_size": (96,)}
    config = train.TrainConfig(**{**options, **photo_students.row_options(row, args, tmp_path)})
    distilled = row not in ("expert", "finetuned", "v3_alone")
    assert bool(config.expert_image_size) == distilled and (config.student_init == "w.h5") == (
        "v3" not in row
    )
    assert (config.expert_weights == str(tmp_path / "student.keras")) == distilled
    if distilled:  # the rows' own weights, whatever the flagfile's
        assert (config.attention_weight, config.expert_kd_weight) == {
            "kd": (0.0, 1.0),
            "ctkd": (0.0, 1.0),
            "at100_kd": (100.0, 1.0),
        }.get(row, (1000.0, 1.0))


@pytest.mark.parametrize("name", sorted(common.VARIANTS))
def test_every_recipe_is_a_valid_config(name):
    config = train.TrainConfig(**common.VARIANTS[name])
    assert config.method in methods.names()


def test_processes_sharing_a_series_of_runs_skip_the_run_another_trains(tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr(
        train, "train_and_evaluate", lambda config: trained.append(config) or {"student_accuracy": 0.5}
    )
    config, result = train.TrainConfig(), tmp_path / "run.json"
    holder = subprocess.Popen(  # another process training the run: it holds the run's lock
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "run.lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert common.run_once(config, result) is None and not trained and not result.exists()
    finally:
        holder.kill()  # killed: the system releases its lock
        holder.wait()
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
    assert common.run_once(config, result, method="mine") == {
        "student_accuracy": 0.5,
        "config": dataclasses.asdict(config),
        "intra_op_threads": "1",
        "machine": common.machine(),
        "method": "mine",
    }
    assert trained == [config] and json.loads(result.read_text())["method"] == "mine"
    assert not (tmp_path / "run.lock").exists()
    assert common.run_once(config, result)["student_accuracy"] == 0.5 and trained == [config]  # not again


HOLD_LOCK = """
import fcntl, sys, time
lock = open(sys.argv[1], "w")
fcntl.flock(lock, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(600)
"""


def test_an_archive_is_unpacked_whole_once_and_an_incomplete_copy_is_replaced(tmp_path, monkeypatch, capsys):
    archive, cache = tmp_path / "cifar10-jpeg.zip", tmp_path / "ctkd_cifar10-jpeg"
    with zipfile.ZipFile(archive, "w") as zipped:
        for split in ("train", "test"):
            zipped.writestr(f"cifar10/{split}/cat/0.jpg", b"jpeg")
    monkeypatch.setattr(common, "UNPACKED", tmp_path)
    (cache / "cifar10" / "train").mkdir(parents=True)  # a killed unpack: no test/, no marker
    targets, extract = [], zipfile.ZipFile.extractall
    monkeypatch.setattr(
        zipfile.ZipFile, "extractall", lambda z, path: targets.append(path) or extract(z, path)
    )
    source = common.cifar10(str(archive))
    assert source == common.Data(
        "image_folder", str(cache / "cifar10"), "CIFAR-10 from the image folder cifar10-jpeg.zip"
    )
    assert capsys.readouterr().out == "data: CIFAR-10 from the image folder cifar10-jpeg.zip\n"  # says which
    # Unpacked beside the cache and renamed into place: a reader never sees it half-written.
    assert len(targets) == 1 and targets[0].parent == tmp_path and targets[0] != cache
    assert (cache / "cifar10" / "test" / "cat" / "0.jpg").read_bytes() == b"jpeg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar10-jpeg.zip", "ctkd_cifar10-jpeg"]
    assert common.cifar10(str(archive)).data_dir == str(cache / "cifar10") and len(targets) == 1  # once


def test_cifar10_comes_from_tfds_or_a_folder_and_a_wrong_folder_says_so(tmp_path, capsys):
    assert common.cifar10(None) == common.Data("cifar10", None, "CIFAR-10 from TFDS")
    for split in ("train", "test"):
        (tmp_path / "images" / split / "cat").mkdir(parents=True)
    assert common.cifar10(str(tmp_path / "images")).data_dir == str(tmp_path / "images")
    said = capsys.readouterr().out.splitlines()
    assert said == ["data: CIFAR-10 from TFDS", "data: CIFAR-10 from the image folder images"]
    with pytest.raises(SystemExit, match="does not exist"):
        common.cifar10(str(tmp_path / "missing"))
    with pytest.raises(SystemExit, match="holds train/ and test/"):
        common.cifar10(str(tmp_path / "images" / "train"))


def test_the_study_runs_the_first_seed_everywhere_before_the_other_seeds():
    args = SimpleNamespace(
        train_examples="500,5000",
        methods="student,at_kd,both_kd",
        seeds="0,1",
        all_seeds_methods="both_kd,at_kd",
    )
    assert budget_study.queue(args) == [
        ("student", 500, 0),
        ("at_kd", 500, 0),
        ("both_kd", 500, 0),
        ("student", 5000, 0),
        ("at_kd", 5000, 0),
        ("both_kd", 5000, 0),
        ("at_kd", 500, 1),
        ("both_kd", 500, 1),
        ("at_kd", 5000, 1),
        ("both_kd", 5000, 1),
    ]


def test_the_gain_pairs_the_recipe_and_at_kd_by_seed(tmp_path):
    accuracies = {("both_kd", 0): 0.70, ("both_kd", 1): 0.69, ("at_kd", 0): 0.68, ("at_kd", 2): 0.5}
    for (method, seed), accuracy in accuracies.items():
        result = dict(method=method, seed=seed, train_examples=100, epochs=10, student_accuracy=accuracy)
        (tmp_path / f"{method}_n100_e10_seed{seed}.json").write_text(json.dumps(result))
    runs = budget_study.load(tmp_path)
    assert sorted(runs) == ["at_kd", "both_kd"] and list(runs["at_kd"]) == [(100, 10)]
    assert budget_study.gains(runs, (100, 10)) == pytest.approx([2.0])  # seed 0 only: the others are unpaired


def test_the_report_puts_longer_runs_in_rows_of_their_own_and_counts_the_arithmetic(tmp_path):
    runs = [
        ("both_kd", 100, 10, 0, 0.70),
        ("both_kd", 100, 10, 1, 0.66),
        ("at_kd", 100, 10, 0, 0.69),
        ("at_kd", 100, 25, 0, 0.72),
        ("at_kd", 250, 10, 0, 0.71),  # the recipe's cost at 100 x 10 too, but on other images
        ("student", 100, 50, 0, 0.75),
        ("both_kd_correct", 100, 10, 0, 0.72),  # the variant that joined the study: its own gain
    ]
    for method, n, epochs, seed, accuracy in runs:
        config = dataclasses.asdict(train.TrainConfig(epochs=epochs, seed=seed, **common.VARIANTS[method]))
        result = dict(
            method=method,
            seed=seed,
            train_examples=n,
            epochs=epochs,
            eval_split="test",
            student_accuracy=accuracy,
            scratch_accuracy=0.75 if method.startswith("both_kd") else None,
            expert_accuracy=0.905,
            wall_time_s=60.0 * epochs,
            config=config,
            **({"intra_op_threads": "1"} if epochs == 25 else {}),  # others predate the field
            machine="machine B" if epochs == 25 else "machine A",
            data="CIFAR-10 from the image folder c.zip",
        )
        (tmp_path / f"{method}_n{n}_e{epochs}_seed{seed}.json").write_text(json.dumps(result))
    budget_study.report(tmp_path)
    table = (tmp_path / "table.md").read_text()
    accuracies = table.split("Wall time")[0]
    rows = [line for line in accuracies.splitlines() if line.startswith(("| 1,000 |", "| 2,500 |"))]
    assert "| gain (both_kd - at_kd) | gain (both_kd_correct - at_kd) |" in accuracies
    assert rows == [
        "| 1,000 | 100 x 10 |  | 69.00 (n=1) | 68.00 +- 2.00 (n=2) [75.00] | 72.00 (n=1) [75.00] "
        "| +1.00 (n=1) | +3.00 (n=1) |",
        "| 2,500 | 100 x 25 |  | 72.00 (n=1) |  |  |  |  |",
        "| 2,500 | 250 x 10 |  | 71.00 (n=1) |  |  |  |  |",
    ]
    # WRN-16-1 trained (3 passes) + WRN-40-1 expert (1), and + WRN-40-1 scratch teacher (3).
    student, teacher = (common.forward_flops(models.get(name, 10)) for name in ("wrn16_1", "wrn40_1"))
    assert f"at_kd {(3 * student + teacher) / 1e9:.3f}" in table
    assert f"both_kd {(3 * student + 4 * teacher) / 1e9:.3f}" in table
    assert "intra-op threads: 1, default; one thread each is two runs at a time" in table
    assert "expert `None` (90.50 % on the same images)" in table
    assert "; machine A and machine B. Mean" in table  # what each run was trained on
    assert "on `test` of CIFAR-10 from the image folder c.zip, WRN-16-1" in table  # and the data it read
    # AT+KD for 25 epochs and the student alone for 50 cost about what the recipe costs for 10
    # on the same 100 images: each is set beside it (not AT+KD on 250 images, of the same cost).
    equal = [line for line in table.splitlines() if line.startswith("- both_kd at 100 x 10")]
    assert len(equal) == 2 and "; student at 100 x 50 (" in equal[0] and "; at_kd at 100 x 25 (" in equal[1]
    assert sum(line.startswith("- both_kd_correct at 100 x 10") for line in table.splitlines()) == 2
    assert equal[0].endswith(": 75.00 (n=1); difference -7.00 points.")
    assert equal[1].endswith(": 72.00 (n=1); difference -4.00 points.")
    assert (tmp_path / "budget.png").stat().st_size > 0


def test_the_report_has_no_gain_column_before_the_recipe_and_at_kd_have_run(tmp_path):
    config = dataclasses.asdict(train.TrainConfig(epochs=10, **common.VARIANTS["student"]))
    result = dict(method="student", seed=0, train_examples=100, epochs=10, eval_split="test")
    result.update(
        student_accuracy=0.5, scratch_accuracy=None, wall_time_s=60.0, config=config, machine="m", data="d"
    )
    (tmp_path / "student_n100_e10_seed0.json").write_text(json.dumps(result))
    budget_study.report(tmp_path)
    table = (tmp_path / "table.md").read_text()
    assert "| 1,000 | 100 x 10 | 50.00 (n=1) |\n" in table
    assert "gain" not in table and "no expert in these runs yet" in table


def test_the_variant_table_describes_its_runs_and_refuses_two_series_in_one_folder(tmp_path):
    def write(name, seed, accuracy, **options):
        config = train.TrainConfig(
            train_split="train[:300]", eval_split="train[900:]", epochs=3, lr_schedule="cosine", seed=seed
        )
        config = dataclasses.asdict(dataclasses.replace(config, **{**common.VARIANTS[name], **options}))
        result = dict(
            student_accuracy=accuracy,
            expert_accuracy=0.9,
            wall_time_s=120.0,
            config=config,
            machine="m",
            data="d",
        )
        (tmp_path / f"{name}_seed{seed}.json").write_text(json.dumps(result))

    write("both_kd", 0, 0.61, expert_weights="e100")
    write("both_kd", 1, 0.63, expert_weights="e100")
    write("weak_expert", 0, 0.55)  # its own expert (expert_weights=None) is the variant's option
    ablate.write_table(tmp_path)
    table = (tmp_path / "table.md").read_text()
    assert "on `train[900:]` (validation: training images no student sees) of d;" in table
    assert "on `train[900:]`" in table and "`train[:300]`, 3 epochs (cosine), expert `e100`; m." in table
    assert "| both_kd | " in table and "| 2 | 62.00 +- 1.00 | 61.00, 63.00 |" in table
    for seed in (0, 1):
        (tmp_path / f"both_kd_seed{seed}.json").unlink()
    ablate.write_table(tmp_path)  # weak_expert alone: the expert is its own option
    assert "expert `per variant`" in (tmp_path / "table.md").read_text()
    write("at_kd", 0, 0.60, expert_weights="e100", epochs=5)  # another series: another folder
    with pytest.raises(SystemExit, match="more than one series.*'epochs': \\[3, 5\\]"):
        ablate.write_table(tmp_path)


def test_the_rewritten_convolution_gradients_equal_tensorflows():
    import profile_step

    kernels = {name: fn().numpy() for name, fn in profile_step.conv_kernel_functions(2).items()}
    for rewrite, reference in (
        ("input gradient as forward conv", "input gradient"),
        ("kernel gradient as forward conv", "kernel gradient"),
        ("kernel gradient as im2col matmul", "kernel gradient"),
    ):
        np.testing.assert_allclose(kernels[rewrite], kernels[reference], rtol=1e-4, atol=1e-4)
