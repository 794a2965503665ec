"""The docs can be followed: links resolve, commands use flags that exist, nothing points off the repo."""

import dataclasses
import re
from pathlib import Path

import pytest

from ctkd_tf.config import TrainConfig
from ctkd_tf.tune import SearchConfig

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# A command: `python <script> ...`, with the lines a trailing backslash continues.
COMMAND = re.compile(r"python ((?:apps|bench)/\w+\.py)((?:\\\n|[^`\n|])*)")


def slug(heading):
    """The anchor GitHub makes of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # a code block's comments are no headings
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    for target in LINK.findall(page.read_text()):
        if re.match(r"https?://", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor:
            assert anchor in anchors(resolved), f"{page.name}: #{anchor} is not a heading of {resolved.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_nothing_points_outside_the_repository(page):
    text = page.read_text()
    assert "../shared" not in text and "/work/" not in text  # this project's machines
    for number in re.findall(r"(?<![\w/&])#(\d+)", text):  # a tracker's issue, not a URL's
        pytest.fail(f"{page.name} cites issue #{number}, which users cannot open")


def script_flags(script):
    """The flags a script of apps/ or bench/ accepts."""
    source = (ROOT / script).read_text()
    if script.startswith("apps/"):
        fields = [f.name for f in dataclasses.fields(TrainConfig)]
        if script == "apps/tune.py":
            fields += [f.name for f in dataclasses.fields(SearchConfig)]
        fields += re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", source)
        return {"flagfile", "help", "helpfull", *fields, *(f"no{name}" for name in fields)}
    names = set(re.findall(r"add_argument\(\s*\"--(\w+)\"", source))
    if "add_data_flag(parser)" in source:
        names.add("data_dir")
    return names


# A table whose last column completes a command its header starts: "command: `python <script> ...` and".
TABLE_COMMAND = re.compile(
    r"^\|.*command: `python ((?:apps|bench)/\w+\.py)[^`]*` and \|\n((?:\|.*\n)+)", re.M
)


def commands():
    for page in PAGES:
        text = page.read_text()
        for script, arguments in COMMAND.findall(text):
            yield page.name, script, arguments
        for script, rows in TABLE_COMMAND.findall(text):
            for row in rows.splitlines()[1:]:  # after the |---| line
                yield page.name, script, " ".join(re.findall(r"`([^`]*)`", row.rsplit("|", 2)[1]))


def test_the_commands_are_found_and_a_wrong_flag_is_caught():
    found = list(commands())
    assert len(found) > 40 and {s for _, s, _ in found} >= {"apps/train.py", "bench/budget_study.py"}
    continued = [a for _, s, a in found if s == "apps/train.py" and "--model_dir=runs/at_kd_e3" in a]
    assert continued, "a command's continued lines are part of it"
    ablate = script_flags("bench/ablate.py")
    assert "kd_weight" not in ablate and {"data_dir", "variants"} <= ablate
    rows = [a for p, s, a in found if p == "README.md" and s == "bench/budget_study.py"]
    assert "--methods=at_kd --epochs=25 --seeds=0" in rows  # a results table's row, with its script


@pytest.mark.parametrize("page, script, arguments", list(commands()))
def test_every_command_uses_flags_its_script_has(page, script, arguments):
    assert (ROOT / script).exists(), f"{page}: {script} does not exist"
    unknown = set(re.findall(r"(?<![\w-])--(\w+)", arguments)) - script_flags(script)
    assert not unknown, f"{page}: `{script}` has no flags {sorted(unknown)}"
