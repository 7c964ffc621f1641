"""The docs cannot go stale (#19): the generated parts are current, and the console examples print what the
docs say they print.

A ```console block in README.md or docs/*.md is a list of commands: a line starting with ``$ `` is a command,
the lines after it (until the next ``$ `` or the end of the block) are its shown output. Every command that
shows output is a claim, and runs here: in one bash per block, in a fresh directory (``examples`` linked in,
files the docs name written in) with a fresh ZOO_HOME (the docs write it ``/tmp/zoo-home``), no ZOO_*/HF_*
settings from the machine, offline (ZOO_OFFLINE=1, HF_HUB_OFFLINE=1). Its output (stdout and stderr) is
compared with the shown output after masking what differs per run (timings, throughputs, dates, the temporary
directories); a shown line ``...`` stands for any number of lines. Commands without output before a claim
are set-up steps and run too (``export``, damaging a file); those after the last claim are synopsis lines and
do not run.

Markers in the Markdown, as HTML comments on the line right before a block:

- ``<!-- not run by tests/test_docs.py: REASON -->``: the console block cannot run here (the network, minutes
  of CPU, files the docs do not create); it is counted as excluded, with its reason.
- ``<!-- tests/test_docs.py writes this block to NAME -->`` before any other block: its text is written to
  NAME in the directory of every later console block of the same file (the registry files that
  docs/registry-format.md shows, for instance).
- ``<!-- tests/test_docs.py runs this block in sequence NAME -->``: the console blocks of one file with the
  same NAME run as one, in order, in the same directory and ZOO_HOME (fetch, then list the cache, ...).

Commands that name ``../shared`` use the project's shared data; their block skips with
the reason where it is absent, as tests/conftest.py's ``require_shared`` does. Blocks that run a model (zoo
predict, eval, export...: seconds each on 2 cores) are marked slow.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import HF_ENV, REPO, SHARED, ZOO_ENV

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
EXCLUDE = re.compile(r"<!-- not run by tests/test_docs\.py: (?P<reason>.+?) -->")
WRITES = re.compile(r"<!-- tests/test_docs\.py writes this block to (?P<name>[\w.-]+) -->")
SEQUENCE = re.compile(r"<!-- tests/test_docs\.py runs this block in sequence (?P<name>[\w.-]+) -->")
# commands that import torch and run a model, or index torchvision's weights (seconds each on 2 cores): their
# blocks are marked slow
HEAVY = re.compile(
    r"\bzoo (predict|eval|finetune|sample|export|explain|bench|convert|register)\b|\bpython\b|torchrun|zoo list 'tv/"
)
DOCS_ZOO_HOME = "/tmp/zoo-home"  # how the docs write ZOO_HOME in commands; each block has its own
SEPARATOR = "@@test_docs step "
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<lang>[\w-]*)\s*$")
SHARED_REF = re.compile(r"\.\./shared/")
TIMEOUT_S = 120  # one command; the slowest that runs (zoo explain, zoo export) take seconds


def load_generator() -> ModuleType:
    """docs/generate.py as a module (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location("docs_generate", REPO / "docs" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the generated parts -----------------------------------------------------------------------------------


def test_generated_docs_are_current() -> None:
    """`python docs/generate.py --check` passes: docs/cli.md and README.md's models table match the code."""
    result = subprocess.run(
        [sys.executable, str(REPO / "docs" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_models_table_check_fails_when_a_card_changes() -> None:
    """The check compares README.md with a table made from the cards: a changed card makes it stale, and
    the check names README.md."""
    generate = load_generator()
    cards = generate.builtin_cards()
    readme = generate.README.read_text(encoding="utf-8")
    current = generate.updated_readme(readme, generate.models_table(cards))
    assert generate.stale_files({generate.README: current}) == []

    # a card that grew to twice its parameters: a figure the table shows
    changed = [replace(c, params=2 * (c.params or 0)) if c.name == "resnet20-cifar" else c for c in cards]
    stale_text = generate.updated_readme(readme, generate.models_table(changed))
    assert "| resnet20-cifar | classifier | 270K |" in current
    assert "| resnet20-cifar | classifier | 539K |" in stale_text
    assert generate.stale_files({generate.README: stale_text}) == [generate.README]
    # a card without weights or figures still gets a row, and its cells say so
    row = next(line for line in current.splitlines() if line.startswith("| fastestdet-imagenet |"))
    assert row == "| fastestdet-imagenet | detector | 244K | none | - |"


def test_cli_reference_check_fails_when_a_help_text_changes() -> None:
    """cli.md keeps its hand-written header; sections that differ from the commands' help make it stale."""
    generate = load_generator()
    text = generate.CLI_MD.read_text(encoding="utf-8")
    old = generate.updated_cli_md(text, "\n## zoo --help\n\n```\nUsage: zoo [OPTIONS] COMMAND [ARGS]...\n```\n")
    assert old.startswith(text[: text.index(generate.CLI_FIRST_SECTION)])
    assert generate.stale_files({generate.CLI_MD: old}) == [generate.CLI_MD]


def test_cli_reference_lists_every_command() -> None:
    """The walk over the click group finds nested commands and the built-in plugins' ones (`zoo data info`)."""
    from zoo.cli import cli

    generate = load_generator()
    commands = dict(cli.commands)
    try:
        paths = {" ".join(path) for path in generate.command_paths()}
    finally:  # the walk adds the plugins' commands to the one click group; other tests expect it untouched
        cli.commands.clear()
        cli.commands.update(commands)
    assert {"", "list", "cache", "cache ls", "predict", "data info"} <= paths
    text = generate.CLI_MD.read_text(encoding="utf-8")
    assert all(f"\n## {' '.join(['zoo', *p.split(), '--help'])}\n" in text for p in paths)


# -- the console examples ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    line: int  # 1-based line of the `$ ` line in its file
    text: str  # without the `$ `
    shown: tuple[str, ...]


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence (of the first block, for a sequence)
    commands: tuple[Command, ...]
    excluded: str | None  # the reason from the marker comment
    files: dict[str, str] = field(default_factory=dict)  # written into the block's directory first

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def claims(self) -> tuple[Command, ...]:
        return tuple(c for c in self.commands if c.shown)

    @property
    def steps(self) -> tuple[Command, ...]:
        """The commands that run: up to the last that shows output. Those before it without output are set-up
        steps (`export`, damaging a file); the synopsis lines after it do not run."""
        last = max((k for k, c in enumerate(self.commands) if c.shown), default=-1)
        return self.commands[: last + 1]

    @property
    def slow(self) -> bool:
        """Whether a step runs a model or builds torchvision's index: seconds each on a 2-core CPU."""
        return any(HEAVY.search(c.text) for c in self.steps)


def parse_blocks(path: Path) -> list[Block]:
    """Every ```console block of `path`, with the files the blocks before it declare; the blocks of one
    sequence are joined into the first."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    files: dict[str, str] = {}
    sequences: dict[str, int] = {}  # name -> index in blocks
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, lang = opening["indent"], opening["fence"], opening["lang"]
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == fence)
        body = [line[len(indent) :] if line.startswith(indent) else line.lstrip() for line in lines[i + 1 : end]]
        before = lines[i - 1].strip() if i else ""
        if lang == "console":
            commands: list[Command] = []
            for k, line in enumerate(body):
                if line.startswith("$ "):
                    commands.append(Command(i + 2 + k, line[2:], ()))
                elif commands:
                    commands[-1] = replace(commands[-1], shown=(*commands[-1].shown, line.rstrip()))
            excluded = EXCLUDE.fullmatch(before)
            block = Block(path, i + 1, tuple(commands), excluded["reason"] if excluded else None, dict(files))
            sequence = SEQUENCE.fullmatch(before)
            if sequence and sequence["name"] in sequences:
                first = sequences[sequence["name"]]
                blocks[first] = replace(blocks[first], commands=blocks[first].commands + block.commands)
            else:
                if sequence:
                    sequences[sequence["name"]] = len(blocks)
                blocks.append(block)
        elif written := WRITES.fullmatch(before):
            files[written["name"]] = "\n".join(body) + "\n"
        i = end + 1
    return blocks


ALL_BLOCKS = [block for path in DOC_FILES for block in parse_blocks(path)]
CLAIM_BLOCKS = [block for block in ALL_BLOCKS if block.claims]


def _volatile(text: str) -> str:
    """`text` with what differs per run replaced by fixed words."""
    text = re.sub(
        r"(?<![\w-])\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?", "<DATE>", text
    )
    text = re.sub(r"\b\d[\d,]*(\.\d+)? ?img/s\b", "<N> img/s", text)
    text = re.sub(r"\b\d+(\.\d+)? ?(s|ms|min)\b", "<TIME>", text)
    return text


DOCS_CHECKOUT = "/work/main"  # where the docs' examples show the repository (zoo info's "card file:")


def mask_shown(text: str) -> str:
    """A shown line: the docs' temporary directories (/tmp/<dir>) stand for the block's directory, and their
    checkout path for wherever this checkout is (CI runs a fresh clone elsewhere)."""
    return _volatile(re.sub(r"/tmp/[\w.-]+", "<DIR>", text.replace(DOCS_CHECKOUT, "<REPO>")))


def mask_actual(text: str, directory: Path, home: Path) -> str:
    """An output line: the block's directory and ZOO_HOME as the docs write them."""
    for path, word in ((home, "<DIR>"), (directory / "work", "<DIR>"), (directory, "<DIR>"), (REPO, "<REPO>")):
        for form in {str(path), str(path.resolve())}:
            text = text.replace(form, word)
    return _volatile(text)


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def matches(shown: Sequence[str], actual: Sequence[str]) -> bool:
    """Whether `actual` is `shown` line by line, a shown `...` standing for any number of lines."""
    if not shown:
        return not actual
    if shown[0].strip() == "...":
        return any(matches(shown[1:], actual[k:]) for k in range(len(actual) + 1))
    return bool(actual) and shown[0].rstrip() == actual[0].rstrip() and matches(shown[1:], actual[1:])


def block_env(directory: Path, home: Path) -> dict[str, str]:
    """The machine's environment without zoo's and Hugging Face's settings, one thread, and offline: a command
    that would download fails at once instead of reaching the network (ZOO_OFFLINE, HF_HUB_OFFLINE)."""
    env = {k: v for k, v in os.environ.items() if k not in ZOO_ENV + HF_ENV and not k.startswith("ZOO_")}
    env.update(
        ZOO_HOME=str(home),
        HF_HUB_CACHE=str(directory / "hf-cache"),
        HF_HUB_OFFLINE="1",
        ZOO_OFFLINE="1",
        OMP_NUM_THREADS="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        COLUMNS="200",
    )
    env.pop("PYTHONPATH", None)
    return env


def run_steps(block: Block, directory: Path) -> dict[int, list[str]]:
    """Run the block's steps in order in one bash, in `directory` with its own ZOO_HOME; the output of each
    step, stdout and stderr together, by the step's index."""
    home, work = directory / "zoo-home", directory / "work"
    home.mkdir()
    work.mkdir()
    (work / "examples").symlink_to(REPO / "examples")
    if SHARED.exists():  # `../shared` as in a checkout next to it
        (directory / "shared").symlink_to(SHARED)
    for name, text in block.files.items():
        (work / name).write_text(text, encoding="utf-8")
    script = ["exec 2>&1"]
    for k, command in enumerate(block.steps):
        script += [f"printf '\\n{SEPARATOR}{k}\\n'", command.text.replace(DOCS_ZOO_HOME, str(home))]
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=work,
        env=block_env(directory, home),
        stdout=subprocess.PIPE,
        text=True,
        timeout=TIMEOUT_S * len(block.steps),
    )
    outputs: dict[int, list[str]] = {}
    current: list[str] = []
    for line in result.stdout.splitlines():
        if line.startswith(SEPARATOR):
            current = outputs.setdefault(int(line[len(SEPARATOR) :]), [])
        else:
            current.append(line)
    return outputs


def run_block(block: Block, directory: Path) -> list[str]:
    """Run the block; one message per command whose output differs from the docs."""
    outputs = run_steps(block, directory)
    home = directory / "zoo-home"
    failures = []
    for k, command in enumerate(block.steps):
        if not command.shown:
            continue
        actual = _trim([mask_actual(line, directory, home).rstrip() for line in outputs.get(k, [])])
        shown = _trim([mask_shown(line) for line in command.shown])  # a blank line before the next `$ ` is layout
        if not matches(shown, actual):
            failures.append(
                f"{block.path.relative_to(REPO)}:{command.line}: $ {command.text}\n"
                + "--- shown (masked)\n"
                + "\n".join(shown)
                + "\n--- got (masked)\n"
                + "\n".join(actual)
            )
    return failures


def _marks(block: Block) -> tuple[pytest.MarkDecorator, ...]:
    if block.excluded:
        return (pytest.mark.skip(reason=block.excluded),)
    return (pytest.mark.slow,) if block.slow else ()


@pytest.mark.parametrize(
    "block",
    [pytest.param(b, id=b.where, marks=_marks(b)) for b in CLAIM_BLOCKS],
)
def test_console_example(block: Block, tmp_path: Path) -> None:
    """The block's commands print what the docs show."""
    if any(SHARED_REF.search(c.text) for c in block.steps) and not SHARED.exists():
        pytest.skip(f"needs {SHARED} (../shared is only present on the project's CI and dev machines)")
    failures = run_block(block, tmp_path)
    assert not failures, "\n\n".join(failures)


def test_console_examples_are_mostly_run() -> None:
    """Counts what runs and what is excluded (with the reasons); most claims must run, and an exclusion must
    name a block that shows output (a marker on a synopsis-only block would hide nothing and mean nothing)."""
    run = sum(len(b.claims) for b in CLAIM_BLOCKS if not b.excluded)
    reasons = Counter(b.excluded for b in CLAIM_BLOCKS for _ in b.claims if b.excluded)
    excluded = sum(reasons.values())
    print(f"\nconsole examples: {run} commands with shown output run, {excluded} excluded")
    for reason, count in reasons.most_common():
        print(f"  {count:3d}  {reason}")
    pointless = [b.where for b in ALL_BLOCKS if b.excluded and not b.claims]
    assert not pointless, f"exclusion markers on blocks that show no output: {pointless}"
    assert run > excluded, f"only {run} of {run + excluded} console examples run"


def test_parse_blocks(tmp_path: Path) -> None:
    """Commands, their shown output, the markers: what the console-example tests are built from."""
    doc = tmp_path / "doc.md"
    doc.write_text(
        "<!-- tests/test_docs.py writes this block to a.yaml -->\n```yaml\nschema: 1\n```\n\n"
        "<!-- tests/test_docs.py runs this block in sequence s -->\n```console\n$ zoo fetch x\nfetched\n\n"
        "$ zoo list --json   # synopsis\n```\n\n"
        "<!-- not run by tests/test_docs.py: needs the network -->\n```console\n$ zoo fetch y\nError: y\n```\n\n"
        "<!-- tests/test_docs.py runs this block in sequence s -->\n"
        "```console\n$ export A=1\n$ zoo cache ls\n...\n```\n"
    )
    first, excluded = parse_blocks(doc)
    assert first.files == excluded.files == {"a.yaml": "schema: 1\n"}
    assert [(c.line, c.text, c.shown) for c in first.commands] == [
        (8, "zoo fetch x", ("fetched", "")),
        (11, "zoo list --json   # synopsis", ()),
        (22, "export A=1", ()),
        (23, "zoo cache ls", ("...",)),
    ]
    assert [c.text for c in first.steps] == [
        "zoo fetch x",
        "zoo list --json   # synopsis",
        "export A=1",
        "zoo cache ls",
    ]
    assert first.excluded is None and excluded.excluded == "needs the network"
    assert not first.slow and excluded.line == 15


@pytest.mark.parametrize(
    ("shown", "actual", "ok"),
    [
        (["a", "...", "d"], ["a", "b", "c", "d"], True),
        (["a", "...", "d"], ["a", "d"], True),
        (["a", "...", "d"], ["a", "b", "c"], False),
        (["a", "b"], ["a", "b", "c"], False),
        (["a", "..."], ["a"], True),
        (["x"], ["y"], False),
    ],
)
def test_matching(shown: list[str], actual: list[str], ok: bool) -> None:
    """`...` is any number of lines, anything else is one line exactly."""
    assert matches(shown, actual) is ok


def test_masking() -> None:
    """Timings, throughputs and the temporary directory are masked alike on both sides; other numbers are not."""
    directory, home = Path("/tmp/pytest-7/x0"), Path("/tmp/pytest-7/x0/zoo-home")
    assert mask_actual(f"{home}/weights/a", directory, home) == mask_shown("/tmp/zoo-home/weights/a")
    actual = mask_actual("wrote /tmp/pytest-7/x0/r18.onnx in 3.2 s, 1,234 img/s, top1 93.32", directory, home)
    assert actual == mask_shown("wrote /tmp/demo/r18.onnx in 12.9 s, 87 img/s, top1 93.32")
    assert actual != mask_shown("wrote /tmp/demo/r18.onnx in 12.9 s, 87 img/s, top1 93.33")
