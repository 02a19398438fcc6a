"""The docs are true: every command and code block of README.md and docs/*.md runs, or says why not.

How a page is read

* Fenced blocks, also indented ones inside lists. A block right after ``<!-- not run: REASON -->``
  is not executed (it is counted, with its reason, and must still pass every static check).
* Shell blocks (bash, sh, console, and untagged blocks for their ``epic-hf`` lines): each
  ``epic-hf ...`` or ``python -m epic_hf ...`` command, also behind ``accelerate launch ... -m
  epic_hf`` or ``torch.distributed.run ... -m epic_hf`` and in ``examples/distributed_fit.sh``, is
  parsed by the real ``epic-hf`` parser and its fit settings by ``FitConfig``: an unknown command,
  flag or value fails (fast). ``pip install`` and ``python -m pytest`` lines must be CI's (.ci/run).
  In blocks that run, every command goes through ``epic_hf.cli.main`` in this process and must
  exit 0; a command the runner cannot run here (a launcher, an install) fails unless marked.
* Python blocks: compiled; every ``epic_hf`` import must resolve, and attributes read from the
  usual names (``explainer``, ``explanation``, ``bank``, ``report``, ``channel``, ``p``) and the
  public classes must exist (fast). In blocks that run, they are executed in order in one
  namespace per page; blocks written as doctests (``>>>``) must print what they show.
* Prose: inline code naming a repository path, an ``epic_hf.`` object, a public class attribute,
  an ``epic-hf`` command or one of its flags must exist; relative links must point at existing
  files and headings (scripts/check_structure.py holds docs/architecture.md to the real imports), and
  docs/cli.md must list every FitConfig setting with its default.

Where blocks run (slow: fits and the local Hub server)

Each page runs in its own folder holding: ``my_images/`` (24 planted-shape PNGs in class
subfolders) and ``test_images/`` (8 more, another seed), both links to one shared copy so that a
folder has one absolute path (a fit's checkpoint names its data by it); ``robin.jpg``,
``cat.jpg``, ``dog.jpg``, ``image.jpg``; and ``runs/resnet50``, the fit that README's command
``epic-hf fit microsoft/resnet-50 ./my_images --output-dir runs/resnet50`` makes here (run once,
then copied). Hub repo ids such as ``me/resnet-50-epic`` are pushed to and pulled from the local
Hub server of tests/conftest_hub.py, for real; so is ``microsoft/resnet-50`` itself: the tiny random ResNet is
pushed there under that id, so a bank fit on it names its base model by Hub id, as on the real Hub.

``SUBSTITUTIONS`` (applied to command arguments, exactly or as a path prefix, and to string
literals in python blocks):

    /data/models/resnet-50, ./model                       ->  a tiny random ResNet's folder
    imagenet-1k, ./images                                 ->  my_images/ (an image folder)
    runs/in1k/bank                                        ->  runs/resnet50/bank (from a multi-GPU fit)
    path/or/hub-id-of-a-bank                              ->  runs/resnet50/bank

and the python name ``dataset`` is the ``datasets.Dataset`` of ``my_images/``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import doctest
import importlib
import importlib.util
import inspect
import io
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import epic_hf
from epic_hf import ChannelExplanation, EpicExplainer, Explanation, FitConfig, FitReport, PrototypeBank, PrototypeMatch
from epic_hf.adapters import ADAPTERS
from epic_hf.cli import build_parser, main
from epic_hf.cli.flags import config_from_args
from epic_hf.config import setting_fields
from epic_hf.audit import AuditConfig
from epic_hf.evaluation import EvaluationConfig
from epic_hf.evaluation import EvaluationReport

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = ("bash", "sh", "shell", "console", "")
NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<reason>.+?)\s*-->\s*$", re.S)
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
#: What the attributes read in docs belong to, by the names the docs give them.
VARIABLE_TYPES: dict[str, tuple[type, ...]] = {
    "explainer": (EpicExplainer,), "explanation": (Explanation,), "bank": (PrototypeBank,),
    "report": (FitReport, EvaluationReport), "channel": (ChannelExplanation,), "p": (PrototypeMatch,),
    **{name: (getattr(epic_hf, name),) for name in epic_hf.__all__ if isinstance(getattr(epic_hf, name), type)},
}
#: Flags of other tools that docs show in inline code (everything else must be an epic-hf flag).
OTHER_TOOLS_FLAGS = {"--check", "--help", "--version"}


# -- reading pages -----------------------------------------------------------------------------------
@dataclass
class Block:
    page: Path
    line: int
    lang: str
    body: str
    not_run: str | None  # the reason, when marked

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def is_python(self) -> bool:
        return self.lang == "python"

    @property
    def is_doctest(self) -> bool:
        return self.is_python and self.body.lstrip().startswith(">>>")

    @property
    def commands(self) -> list[list[str]]:
        """The shell commands; of an untagged block (formulas, file trees, output) only its `epic-hf` lines."""
        if self.lang not in SHELL_LANGUAGES:
            return []
        commands = shell_commands(self.body)
        return commands if self.lang else [c for c in commands if c[0] == "epic-hf"]

    @property
    def runnable(self) -> bool:
        """Whether the block has anything to run: python, or a command (untagged text blocks have none)."""
        if self.is_python:
            return True
        return bool(self.commands)


def read_blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    blocks, previous_end = [], 0
    for match in FENCE.finditer(text):
        indent = match.group("indent")
        body = "\n".join(line[len(indent):] if line.startswith(indent) else line
                         for line in match.group("body").splitlines())
        marker = NOT_RUN.search(text[previous_end:match.start()].rstrip())
        blocks.append(Block(page, text[:match.start()].count("\n") + 1, match.group("lang"), body + "\n",
                            marker.group("reason") if marker else None))
        previous_end = match.end()
    return blocks


def prose(page: Path) -> str:
    """The page without its fenced blocks."""
    return FENCE.sub("", page.read_text(encoding="utf-8"))


def shell_commands(body: str) -> list[list[str]]:
    """Each command of a shell block as tokens: continuation lines joined, comments dropped, split at && ; |."""
    commands: list[list[str]] = []
    for line in body.replace("\\\n", " ").splitlines():
        if line.lstrip().startswith("epic-hf:"):  # an error message shown as output, not a command
            continue
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue  # not shell (a formula or a file tree in an untagged block)
        current: list[str] = []
        for token in tokens + ["&&"]:
            if token in ("&&", ";", "|", "||"):
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(token)
    return commands


def kind(command: list[str]) -> str:
    """What a shell command is: epic-hf, launcher, example, install, pytest or other."""
    if command[0] == "epic-hf" or command[:3] == ["python", "-m", "epic_hf"]:
        return "epic-hf"
    if any(a == "-m" and b == "epic_hf" for a, b in zip(command, command[1:])):
        return "launcher"
    if command[0].startswith("examples/") or (command[0] == "python" and command[1:2]
                                              and command[1].startswith("examples/")):
        return "example"
    if command[:2] == ["pip", "install"]:
        return "install"
    if command[:3] == ["python", "-m", "pytest"]:
        return "pytest"
    return "other"


def epic_hf_args(command: list[str]) -> list[str] | None:
    """The arguments ``epic-hf`` gets from a command, or None when it is not an epic-hf command."""
    if command[0] == "epic-hf":
        return command[1:]
    for position in range(len(command) - 1):
        if command[position] == "-m" and command[position + 1] == "epic_hf":
            return command[position + 2:]
    script = command[1] if command[0] == "python" and len(command) > 1 else command[0]
    if script == "examples/distributed_fit.sh":
        model, dataset, output, *rest = command[command.index(script) + 1:]
        if rest and rest[0].isdigit():
            rest = rest[1:]
        return ["fit", model, dataset, "--output-dir", output, *rest]
    return None


BLOCKS = [block for page in PAGES for block in read_blocks(page)]


def page_ids(pages: list[Path]) -> list[str]:
    return [str(page.relative_to(ROOT)) for page in pages]


# -- static checks (fast) ------------------------------------------------------------------------------
def parse_epic_hf(args: list[str]) -> argparse.Namespace:
    """Parse like ``epic-hf`` would, turning argparse's exit into an assertion that names the command."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            parsed = build_parser().parse_args(args)
    except SystemExit as exited:
        if exited.code in (0, None):  # --help / --version
            return argparse.Namespace(command=None)
        raise AssertionError(f"`epic-hf {shlex.join(args)}` does not parse: {errors.getvalue().strip()}") from None
    settings = {"fit": FitConfig, "evaluate": EvaluationConfig, "audit": AuditConfig, "compare": AuditConfig}
    if parsed.command in settings:
        try:
            config_from_args(settings[parsed.command], parsed)
        except (TypeError, ValueError) as error:
            raise AssertionError(f"`epic-hf {shlex.join(args)}`: {error}") from None
    return parsed


@pytest.mark.parametrize("page", PAGES, ids=page_ids(PAGES))
def test_shell_commands_parse(page: Path):
    """Every epic-hf command of the page parses; every example script it names exists."""
    for block in read_blocks(page):
        for command in block.commands:
            args = epic_hf_args(command)
            if args is not None:
                parse_epic_hf(args)
            if kind(command) == "example":
                script = command[1] if command[0] == "python" else command[0]
                assert (ROOT / script).is_file(), f"{block.name}: {script} does not exist"


def test_shell_command_reader_and_parser_catch_rot():
    """The reader finds commands behind launchers and in scripts; the parser refuses a flag that does not exist."""
    command = shell_commands("accelerate launch --num_processes 2 -m epic_hf fit m d \\\n  --output-dir o  # c\n")[0]
    assert epic_hf_args(command) == ["fit", "m", "d", "--output-dir", "o"]
    assert epic_hf_args(["examples/distributed_fit.sh", "m", "d", "o", "8", "--streaming"]) == [
        "fit", "m", "d", "--output-dir", "o", "--streaming"]
    with pytest.raises(AssertionError, match="does not parse"):
        parse_epic_hf(["fit", "m", "d", "--output-dir", "o", "--no-such-flag"])
    with pytest.raises(AssertionError, match="schedule_steps"):
        parse_epic_hf(["fit", "m", "d", "--output-dir", "o", "--schedule-steps", "0"])


def instance_attributes(cls: type) -> set[str]:
    """Names a class's instances have: class attributes, dataclass fields, ``self.x = ...`` in its code."""
    names = set(dir(cls))
    for base in cls.__mro__:
        if dataclasses.is_dataclass(base):
            names.update(f.name for f in dataclasses.fields(base))
        if base.__module__.startswith("epic_hf"):
            names.update(re.findall(r"self\.(\w+)\s*(?::[^=\n]+)?=", inspect.getsource(base)))
    return names


def attribute_problems(source: str) -> list[str]:
    """epic_hf imports that do not resolve, and attributes of known names that do not exist."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "epic_hf":
            module = importlib.import_module(node.module)
            problems += [f"{node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)
                         and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
        elif isinstance(node, ast.Import):
            problems += [a.name for a in node.names if a.name.startswith("epic_hf")
                         and importlib.util.find_spec(a.name) is None]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in VARIABLE_TYPES:
            classes = VARIABLE_TYPES[node.value.id]
            if not any(node.attr in instance_attributes(cls) for cls in classes):
                problems.append(f"{node.value.id}.{node.attr} ({' or '.join(c.__name__ for c in classes)})")
    return problems


def python_source(block: Block) -> str:
    if block.is_doctest:
        return "".join(example.source for example in doctest.DocTestParser().get_examples(block.body))
    return block.body


@pytest.mark.parametrize("page", PAGES, ids=page_ids(PAGES))
def test_python_blocks_name_real_things(page: Path):
    for block in read_blocks(page):
        if block.is_python:
            source = python_source(block)
            compile(source, block.name, "exec")
            assert not attribute_problems(source), f"{block.name} names what does not exist: " \
                                                   f"{attribute_problems(source)}"


def test_attribute_check_catches_rot():
    assert attribute_problems("explanation.cls_contribution; bank.class_evidence; explainer.classifier") == []
    assert attribute_problems("explanation.no_such_field") == ["explanation.no_such_field (Explanation)"]
    assert attribute_problems("from epic_hf import no_such_name") == ["epic_hf.no_such_name"]


def all_flags() -> dict[str, set[str]]:
    """Every epic-hf command and its option strings ("" holds the global ones)."""
    parser = build_parser()
    flags = {"": {s for action in parser._actions for s in action.option_strings}}
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        flags[name] = {s for action in sub._actions for s in action.option_strings}
    return flags


def inline_problems(text: str) -> list[str]:
    """What inline code in ``text`` names that does not exist."""
    flags = all_flags()
    every_flag = set().union(*flags.values()) | OTHER_TOOLS_FLAGS
    problems = []
    for span in re.findall(r"`([^`\n]+)`", text):
        span = span.strip()
        path = re.match(r"^((?:epic_hf|scripts|tests|examples|benchmarks|docs)/[\w./-]*|\.ci/run)$", span)
        dotted = re.match(r"^epic_hf(\.\w+)+$", span)
        command = re.match(r"^epic-hf (\w+)", span)
        flag = re.match(r"^(--[a-z][a-z0-9-]*)(?=$|[\s=])", span)
        member = re.match(r"^(\w+)\.(\w+)", span)
        if member and re.fullmatch(r"\w+\.(html|json|png|jpg|md|py|sh|safetensors|f32|js|css)", span):
            member = None  # a file name, not an attribute
        if path and not (ROOT / path.group(1)).exists():
            problems.append(f"path {span}")
        elif dotted and not resolves(span):
            problems.append(f"object {span}")
        elif command:
            name = command.group(1)
            if name not in flags:
                problems.append(f"command {span}")
            else:
                problems += [f"flag {token} of `epic-hf {name}`" for token in span.split()
                             if token.startswith("--") and token not in flags[name] | flags[""]]
        elif flag and flag.group(1) not in every_flag:
            problems.append(f"flag {span}")
        elif member and member.group(1) in VARIABLE_TYPES and not dotted:
            classes = VARIABLE_TYPES[member.group(1)]
            if not any(member.group(2) in instance_attributes(cls) for cls in classes):
                problems.append(f"attribute {span}")
    return problems


def resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=page_ids(PAGES))
def test_inline_code_names_real_things(page: Path):
    assert inline_problems(prose(page)) == [], f"{page.name} names what does not exist"


def test_inline_check_catches_rot():
    assert inline_problems("`--no-such-flag`, `epic-hf fit --nope`, `epic_hf.nothing`, `explainer.gone()`, "
                           "`epic_hf/gone.py`, `epic-hf nocommand`") == [
        "flag --no-such-flag", "flag --nope of `epic-hf fit`", "object epic_hf.nothing", "attribute explainer.gone()",
        "path epic_hf/gone.py", "command epic-hf nocommand"]
    assert inline_problems("`--base-model PATH`, `epic-hf explain --strict`, `explainer.class_channels(label)`, "
                           "`epic_hf.fit.trainer.bound_condition`, `--multi_gpu`") == []


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in prose(page).splitlines() if re.match(r"^#{1,6} ", line)}


@pytest.mark.parametrize("page", PAGES, ids=page_ids(PAGES))
def test_relative_links_resolve(page: Path):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(page)):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(target)
    assert broken == [], f"{page.name} links to what does not exist"


def test_slugs_are_github_s():
    assert slug("Pooling after a LayerNorm (ConvNeXt, BEiT)") == "pooling-after-a-layernorm-convnext-beit"
    assert slug("`epic-hf explain`") == "epic-hf-explain"
    assert slug("Orthogonal or invertible U?") == "orthogonal-or-invertible-u"


def test_every_block_runs_or_says_why():
    """Each block is run, marked not run with a reason, or is plain text (a formula, a file tree, output)."""
    for block in BLOCKS:
        if block.not_run is not None:
            assert len(block.not_run) > 10, f"{block.name}: say why it is not run"
            assert block.runnable, f"{block.name} is marked not run but has nothing to run"
        elif block.lang not in SHELL_LANGUAGES + ("python",):
            raise AssertionError(f"{block.name}: the runner does not know ```{block.lang} blocks")
    assert sum(b.runnable and b.not_run is None for b in BLOCKS) >= 12  # the reader still finds the blocks


# -- facts the docs state --------------------------------------------------------------------------------
def ci_commands() -> list[list[str]]:
    return [shlex.split(line) for line in (ROOT / ".ci" / "run").read_text().splitlines()
            if line.startswith(("python -m pip install", "python -m pytest", "epic-hf "))]


def test_readme_commands_are_ci_s():
    """README's install + demo and install + test commands are what .ci/run runs (pins and extras included)."""
    ci = [c[2:] if c[:3] == ["python", "-m", "pip"] else c for c in ci_commands()]  # `python -m pip` = `pip`
    ci = [[t for t in c if t != "--quiet"] for c in ci]
    pins = next(c for c in ci if c[:2] == ["pip", "install"] and any(t.startswith("torch==") for t in c))
    readme = [block for block in BLOCKS if block.page.name == "README.md"]
    demo = next(b.commands for b in readme if any(c[:2] == ["epic-hf", "demo"] for c in b.commands))
    assert demo[0] == ["pip", "install", next(t for t in pins if t.startswith("torch=="))]
    assert demo[1] == ["pip", "install", "."] and demo[2][:2] == ["epic-hf", "demo"]
    assert any(c[:2] == ["epic-hf", "demo"] for c in ci), ".ci/run runs the demo"
    test = next(b.commands for b in readme if ["python", "-m", "pytest", "-q"] in b.commands)
    assert test == [pins, next(c for c in ci if c[:3] == ["pip", "install", "-e"]), ["python", "-m", "pytest", "-q"]]
    assert ["python", "-m", "pytest", "-q"] in ci
    fast = next(b.commands for b in readme if any(c[:3] == ["python", "-m", "pytest"] and "-m" in c[3:]
                                                  for c in b.commands))
    assert fast == [["python", "-m", "pytest", "-m", "not slow"]]


def test_readme_counts_supported_models_as_the_generated_table_does():
    table = (ROOT / "docs" / "supported_models.md").read_text(encoding="utf-8")
    version, total = re.search(r"\(transformers (\d+\.\d+): (\d+) model types\)", table).groups()
    supported, exact, cls, timm = re.search(
        r"\*\*(\d+) are supported\*\* \((\d+) exactly, (\d+) with a CLS term, (\d+) per timm architecture\)",
        table).groups()
    assert int(supported) == int(exact) + int(cls) + int(timm)
    rows = re.findall(r"^\| `[^`]+` \| (supported exactly|supported with a CLS term|per architecture[^|]*) \|", table, re.M)
    assert len(rows) == int(supported)  # the headline counts the table's own rows
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert f"{supported} of the {total} image-classification model types of transformers {version}: {exact} exactly, " \
           "`timm_wrapper` per timm architecture, " f"and {cls} with an exact CLS term" in readme
    assert "DINOv2 (with and without registers)" in readme


@pytest.mark.parametrize("command, settings", [("fit", FitConfig), ("evaluate", EvaluationConfig),
                                               ("audit", AuditConfig)])
def test_cli_doc_lists_every_setting_with_its_default(command, settings):
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8").split(f"## `epic-hf {command}`")[1].split("\n## ")[0]
    rows = dict(re.findall(r"^\| `(--[a-z-]+)[^`]*` \| ([^|]+) \|", text, re.M))
    for spec in setting_fields(settings):
        flag = "--" + spec.name.replace("_", "-")
        assert flag in rows, f"docs/cli.md does not list {flag}"
        shown = rows[flag].strip().strip("`")
        if isinstance(spec.default, bool):
            assert shown == ("on" if spec.default else "off"), flag
        elif isinstance(spec.default, (int, float)):
            assert float(shown) == spec.default, f"{flag}: the doc says {shown}, {settings.__name__} {spec.default}"
        elif isinstance(spec.default, str):
            assert shown == spec.default, flag




# -- running the pages (slow) ------------------------------------------------------------------------------
TINY_MODEL = "<tiny resnet>"
SUBSTITUTIONS = {
    "/data/models/resnet-50": TINY_MODEL, "./model": TINY_MODEL,
    "imagenet-1k": "<my_images>", "./images": "<my_images>",
    "runs/in1k/bank": "runs/resnet50/bank", "path/or/hub-id-of-a-bank": "runs/resnet50/bank",
}


@dataclass
class World:
    root: Path
    shared: Path  # my_images/, test_images/ and the tiny model: one absolute path for every page
    page_dirs: dict[str, Path] = field(default_factory=dict)

    def substitute(self, value: str) -> str:
        for key, replacement in SUBSTITUTIONS.items():
            if value == key or value.startswith(key + "/"):
                replacement = replacement.replace(TINY_MODEL, str(self.shared / "model"))
                replacement = replacement.replace("<my_images>", str(self.shared / "my_images"))
                return replacement + value[len(key):]
        return value

    def folder_for(self, page: Path, template: Path) -> Path:
        folder = self.root / page.stem
        shutil.copytree(template, folder, symlinks=True)
        return folder


def save_planted(directory: Path, count: int, seed: int, by_class: bool) -> None:
    from epic_hf.synthetic import planted_dataset

    dataset = planted_dataset(count, size=32, seed=seed)
    names = dataset.features["label"].names
    for index, example in enumerate(dataset):
        folder = directory / names[example["label"]].replace(" ", "_") if by_class else directory
        folder.mkdir(parents=True, exist_ok=True)
        example["image"].save(folder / f"{index:03d}.png")


@pytest.fixture(scope="module")
def world(tmp_path_factory, hub_server) -> tuple[World, Path]:
    from huggingface_hub import HfApi
    from tiny_models import save_tiny_model

    root = tmp_path_factory.mktemp("docs-world")
    shared = root / "shared"
    save_tiny_model("resnet", shared / "model")
    HfApi().create_repo("microsoft/resnet-50", exist_ok=True)
    HfApi().upload_folder(folder_path=str(shared / "model"), repo_id="microsoft/resnet-50")
    save_planted(shared / "my_images", 24, seed=0, by_class=True)
    save_planted(shared / "test_images", 8, seed=1, by_class=True)
    template = root / "template"
    template.mkdir()
    for name in ("my_images", "test_images"):
        (template / name).symlink_to(shared / name, target_is_directory=True)
    save_planted(root / "loose", 4, seed=2, by_class=False)
    for source, name in zip(sorted((root / "loose").glob("*.png")), ("robin.jpg", "cat.jpg", "dog.jpg", "image.jpg")):
        from PIL import Image

        Image.open(source).convert("RGB").save(template / name)
    the_world = World(root, shared)
    run_command(the_world, template, ["epic-hf", "fit", "microsoft/resnet-50", "./my_images", "--output-dir",
                                      "runs/resnet50"])
    return the_world, template


def run_command(world: World, cwd: Path, command: list[str]) -> str:
    """Run one epic-hf command in ``cwd`` through ``main``; returns its stdout."""
    args = [world.substitute(token) for token in epic_hf_args(command)]
    out, err = io.StringIO(), io.StringIO()
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as exited:
                code = int(exited.code or 0)
    finally:
        os.chdir(previous)
    assert code == 0, f"`{shlex.join(command)}` (run as epic-hf {shlex.join(args)}) exited {code}:\n" \
                      f"{out.getvalue()[-2000:]}\n{err.getvalue()[-4000:]}"
    return out.getvalue()


class _Substitute(ast.NodeTransformer):
    def __init__(self, world: World) -> None:
        self.world = world

    def visit_Constant(self, node: ast.Constant) -> ast.Constant:
        if isinstance(node.value, str):
            return ast.copy_location(ast.Constant(self.world.substitute(node.value)), node)
        return node


def run_python(world: World, cwd: Path, block: Block, namespace: dict[str, Any]) -> None:
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            if block.is_doctest:
                test = doctest.DocTestParser().get_doctest(block.body, dict(namespace), block.name,
                                                           str(block.page), block.line)
                output = io.StringIO()
                result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(test, out=output.write)
                assert result.failed == 0, output.getvalue()
            else:
                tree = ast.fix_missing_locations(_Substitute(world).visit(ast.parse(block.body)))
                exec(compile(tree, block.name, "exec"), namespace)  # noqa: S102 - the docs' own code
    finally:
        os.chdir(previous)


RUN_PAGES = sorted({b.page for b in BLOCKS if b.runnable and b.not_run is None}, key=PAGES.index)


@pytest.mark.slow
@pytest.mark.parametrize("page", RUN_PAGES, ids=page_ids(RUN_PAGES))
def test_page_runs(page: Path, world, hub_server):
    """Every block of the page not marked `not run`, in order, in the page's own folder."""
    the_world, template = world
    cwd = the_world.folder_for(page, template)
    namespace: dict[str, Any] = {"__name__": "__docs__", "dataset": _dataset(the_world)}
    registered = dict(ADAPTERS)  # a page may register adapters of its own (adding_a_family.md): undone after it
    try:
        for block in read_blocks(page):
            if block.not_run is not None or not block.runnable:
                continue
            if block.is_python:
                run_python(the_world, cwd, block, namespace)
                continue
            for command in block.commands:
                assert kind(command) == "epic-hf", \
                    f"{block.name}: cannot run `{shlex.join(command)}` here; mark the block <!-- not run: why -->"
                run_command(the_world, cwd, command)
    finally:
        ADAPTERS.clear()
        ADAPTERS.update(registered)


def _dataset(world: World) -> Any:
    import datasets

    return datasets.load_dataset("imagefolder", data_dir=str(world.shared / "my_images"))["train"]


def test_doctest_blocks_compare_their_output(tmp_path: Path):
    block = Block(ROOT / "README.md", 1, "python", ">>> 1 + 1\n3\n", None)
    with pytest.raises(AssertionError, match="Expected"):
        run_python(World(tmp_path, tmp_path), tmp_path, block, {})


def test_every_run_page_is_covered():
    """Pages with blocks to run are exactly those test_page_runs runs (none slips through unparametrised)."""
    assert set(RUN_PAGES) == {b.page for b in BLOCKS if b.runnable and b.not_run is None}
    assert ROOT / "README.md" in RUN_PAGES
