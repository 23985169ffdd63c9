"""The README's commands are true: every one parses as the tool it calls would parse it, and every
option the README (or a docs/ page) names exists in the composed config.

A newcomer copies these lines first; an override renamed in conf/ or a flag dropped from the CLI
must fail here, not on their machine. Nothing trains: ``python train.py`` lines are composed with
Hydra's compose API (the same parser and struct checks ``train.py`` applies), ``ser`` lines are
parsed by the subcommand's own argparse parser, pip lines are checked against pyproject's extras.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from ser import cli

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CONF = REPO / "conf"
# The training command. Composed, never started: named here, out of the test functions, whose source
# conftest reads to mark tests that start runs as slow.
TRAIN = ["python", "train.py"]
# Programs a docs line may call besides python, ser and pip: the user's and the system's, not ours
# (the generated C CLI, make, Slurm's commands).
EXTERNAL = {"arecord", "tensorboard", "cd", "make", "./ser_cli", "squeue", "sacct", "sbatch", "sudo", "eval", "ruff"}  # ruff: tests/test_lint.py runs it
# Config groups selected to look an option up: a split's, a model's or a launcher's options exist
# only with that choice, so an option counts as real if one of these compositions has it.
CONTEXTS = [
    [],
    ["data=emodb"],
    ["data=manifest"],
    ["data/split=kfold"],
    ["data/split=loso"],
    ["data/split=speaker"],
    ["data/split=cross_corpus"],
    ["model=lightsernet"],
    ["experiment=nsl"],
    ["hydra/launcher=slurm"],
    ["hydra/launcher=joblib"],
    ["debug=fdr"],
]
GROUP_ROOTS = (
    "seed",
    "bit_budget",
    "paths",
    "data",
    "model",
    "trainer",
    "callbacks",
    "logger",
    "quant",
    "classic",
    "transfer",
    "recipe",
    "experiment",
    "debug",
    "hydra",
)
FILE_SUFFIXES = {"serq", "onnx", "pt", "json", "csv", "md", "yaml", "ckpt", "py", "wav", "png", "log", "c", "h"}
# `group.option` in a backtick span: a config root, then dotted keys (a file name is ruled out below);
# `+group.option` appends a key the config lacks, so it is not looked up.
ROOTS = "|".join(GROUP_ROOTS)
OPTION = re.compile(rf"(?<![\w./$+-])((?:{ROOTS})(?:\.[A-Za-z_]\w*)+)")
# `group=choice`, `group/sub=choice` at the start of a backtick span or after a space.
CHOICE = re.compile(rf"(?:^|\s)((?:{ROOTS})(?:/\w+)*)=(\w+)(?=\s|$)")


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {shlex.join(self.argv)}"


def bash_commands(text: str, page: str = "README.md") -> list[Command]:
    """Every simple command of the ```bash blocks: continuation lines joined, comments dropped,
    split at ``&&``, ``;`` and ``|``, leading ``NAME=value`` environment assignments removed."""
    commands, in_block, pending, start = [], False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith("```"):
            in_block = line.strip() == "```bash" and not in_block
            continue
        if not in_block:
            continue
        if not pending:
            start = number
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        lexer = shlex.shlex(pending, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words, pending = list(lexer), ""
        argv: list[str] = []
        for word in words + [";"]:
            if word in {"&&", ";", "|", "||"}:
                while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):
                    argv.pop(0)
                if argv:
                    commands.append(Command(page, start, tuple(argv)))
                argv = []
            else:
                argv.append(word)
    return commands


def prose(text: str) -> str:
    """``text`` without its fenced code blocks (their commands are checked as commands)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def backtick_spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", prose(text))


def named_options(text: str) -> set[str]:
    """The ``group.option`` keys named in backticks (``data.root=/x`` names ``data.root``)."""
    found = set()
    for span in backtick_spans(text):
        for key in OPTION.findall(span):
            if key.rsplit(".", 1)[-1] not in FILE_SUFFIXES:
                found.add(key)
    return found


def named_choices(text: str) -> set[tuple[str, str]]:
    """The ``group=choice`` selections named in backticks, e.g. ``("data/split", "kfold")``."""
    return {
        match
        for span in backtick_spans(text)
        for match in CHOICE.findall(span)
        if (CONF / match[0]).is_dir() or match[0].startswith("hydra/")
    }


def has_key(cfg: DictConfig, key: str) -> bool:
    node = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node.keys():  # `in` says no for a ??? value
            return False
        node = node._get_node(part)
    return True


def first_of_sweeps(overrides: list[str]) -> list[str]:
    """A multirun's overrides as one job's: a sweep (``seed=0,1,2``) becomes its first value."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    single = []
    for override, text in zip(parsed, overrides):
        if override.is_sweep_override():
            single.append(f"{override.get_key_element()}={next(override.sweep_string_iterator())}")
        else:
            single.append(text)
    return single


@pytest.fixture(scope="module")
def compose_train():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield lambda overrides: compose("train", overrides=list(overrides), return_hydra_config=True)


@pytest.fixture(scope="module")
def configs(compose_train) -> list[DictConfig]:
    return [compose_train(context) for context in CONTEXTS]


README_COMMANDS = bash_commands(README.read_text())
# Pages whose options are checked: all but results.md (measurements as they were run) and the changelog
# (names as they were).
PAGES = [
    "README.md",
    *sorted(
        str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md") if p.name not in ("results.md", "CHANGELOG.md")
    ),
]
COMMANDS = [c for page in PAGES for c in bash_commands((REPO / page).read_text(), page)]


def _id(command: Command) -> str:
    words = "-".join(a for a in command.argv[1:3] if "/" not in a)
    return f"{Path(command.page).stem}:{command.line}-{command.argv[0]}-{words}"[:60]


def test_readme_keeps_the_ci_test_command():
    # .ci/run runs exactly this; a README that drops it sends newcomers elsewhere than CI goes
    assert any(c.argv == ("python", "-m", "pytest", "-q") for c in README_COMMANDS)


def test_readme_has_commands_of_every_kind():
    programs = {c.argv[0] if c.argv[0] != "python" else c.argv[1] for c in README_COMMANDS}
    assert {"pip", TRAIN[1], "ser", "-m"} <= programs, programs


@pytest.mark.parametrize("command", COMMANDS, ids=_id)
def test_docs_command_parses(command: Command, compose_train, monkeypatch):
    argv = list(command.argv)
    if argv[0] in EXTERNAL:
        return
    if argv[:2] == TRAIN:
        overrides = [a for a in argv[2:] if a not in ("-m", "--multirun")]
        cfg = compose_train(first_of_sweeps(overrides))
        assert isinstance(cfg, DictConfig), command
        OmegaConf.to_container(cfg.data, resolve=True)  # every data interpolation resolves
        return
    if argv[0] == "pip":
        _check_pip(command)
        return
    if argv[:3] == ["python", "-m", "pytest"]:
        return
    if argv[0] == "python" and argv[1].startswith(("bench/", "docs/examples/")):  # the examples run in tests/quant
        assert (REPO / argv[1]).is_file(), f"{command}: no {argv[1]}"
        return
    if argv[:3] == ["python", "-m", "ser.cli"]:
        argv = ["ser", *argv[3:]]
    if argv[:3] == ["python", "-m", "ser.report"]:
        argv = ["ser", "report", *argv[3:]]
    assert argv[0] == "ser", f"{command}: not a command this test knows how to check"
    _check_ser(command, argv[1:], monkeypatch)


def _check_pip(command: Command) -> None:
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    assert command.argv[1] == "install", command
    for target in command.argv[2:]:
        match = re.fullmatch(r"\.\[([\w,-]+)\]", target)
        if match:
            missing = set(match.group(1).split(",")) - extras
            assert not missing, f"{command}: pyproject.toml has no extra {sorted(missing)}"


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace) -> None:
        self.namespace = namespace


def _check_ser(command: Command, argv: list[str], monkeypatch) -> None:
    """Parse ``argv`` with the subcommand's own parser, and stop before it does anything."""
    assert argv and argv[0] in cli.COMMANDS, f"{command}: no subcommand {argv[:1]} (has {', '.join(cli.COMMANDS)})"
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(parser, args=None, namespace=None):
        raise _Parsed(parse(parser, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    module = importlib.import_module(cli.COMMANDS[argv[0]])
    try:
        module.main(argv[1:])
    except _Parsed:
        return
    except SystemExit as exc:
        pytest.fail(f"{command}: its parser refuses it (exit status {exc.code})")
    pytest.fail(f"{command}: ran without parsing its arguments")


@pytest.mark.parametrize("page", PAGES)
def test_options_named_exist_in_the_composed_config(page: str, configs):
    options = named_options((REPO / page).read_text())
    missing = sorted(key for key in options if not any(has_key(cfg, key) for cfg in configs))
    assert not missing, f"{page} names options no composed config has: {missing}"


@pytest.mark.parametrize("page", PAGES)
def test_config_choices_named_exist(page: str, compose_train):
    choices = named_choices((REPO / page).read_text())
    for group, choice in sorted(choices):
        if group.startswith("hydra/"):
            compose_train([f"{group}={choice}"])  # a plugin's config: Hydra knows it or raises
        elif choice != "null":
            assert (CONF / group / f"{choice}.yaml").is_file(), (
                f"{page}: `{group}={choice}`: no conf/{group}/{choice}.yaml"
            )


def test_option_pattern_reads_keys_not_file_names():
    text = "`data.root=/x`, `ser listen model.serq -`, `quant.t_margin`, `data.features.*`, `ser.dsp.grid`, `+trainer.num_nodes=2`"
    assert named_options(text) == {"data.root", "quant.t_margin", "data.features"}
    assert len(named_options((REPO / "docs" / "configuration.md").read_text())) > 100  # the pages are read at all
    assert named_choices("`data/split=kfold` and `quant=laq_30kb`, not `data.normalize=speaker`") == {
        ("data/split", "kfold"),
        ("quant", "laq_30kb"),
    }


def listed_modules(page: str) -> set[str]:
    """The modules of the layout block of docs/development.md: ``ser/x.py`` lines, and ``  x.py`` lines
    under a ``ser/pkg/`` line."""
    listed, package = set(), None
    for line in page.splitlines():
        word = line.split()[0] if line.split() else ""
        if re.fullmatch(r"ser/\w+/", word) and not line.startswith(" "):
            package = word
        elif re.fullmatch(r"ser/\w+\.py", word) and not line.startswith(" "):
            listed.add(word)
            package = None
        elif line.startswith("  ") and package and re.fullmatch(r"\w+\.py", word):
            listed.add(package + word)
        elif not line.startswith(" "):
            package = None
    return listed


def test_development_page_lists_every_module():
    actual = {str(p.relative_to(REPO)) for p in (REPO / "ser").rglob("*.py") if p.name != "__init__.py"}
    listed = listed_modules((REPO / "docs" / "development.md").read_text())
    assert actual - listed == set(), f"docs/development.md does not list {sorted(actual - listed)}"
    assert listed - actual == set(), f"docs/development.md lists modules that do not exist: {sorted(listed - actual)}"


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation but ``-`` and ``_`` dropped, spaces to ``-``."""
    return {
        re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        for title in re.findall(r"^#+ (.*)$", prose(text), flags=re.MULTILINE)
    }


@pytest.mark.parametrize("page", [*PAGES, "docs/CHANGELOG.md"])
def test_relative_links_resolve(page: str):
    source = REPO / page
    broken = []
    for link in re.findall(r"\]\(([^)\s]+)\)", prose(source.read_text())):
        if re.match(r"\w+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = (source.parent / path).resolve() if path else source
        if not target.exists() or (
            anchor and target.suffix == ".md" and anchor not in heading_anchors(target.read_text())
        ):
            broken.append(link)
    assert not broken, f"{page}: broken links {broken}"
