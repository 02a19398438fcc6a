"""The one structure check: the package's shape, and docs/architecture.md's picture of it.

* no import cycle, no function over 80 lines, no module over 400 lines;
* nothing loads pickles (no ``torch.load``, ``pickle`` or ``weights_only=False``): banks and
  checkpoints are safetensors and JSON;
* the layer table of docs/architecture.md is the real import graph between units (a top-level
  module, or a subpackage as one unit), and every unit imports only from layers below its own.

Every import counts as an edge: at module top, inside functions, and under ``if TYPE_CHECKING:``
(a type-only import still ties two modules together for a reader and for other tools).
Usage: ``python scripts/check_structure.py [package_dir]`` exits 1 listing each violation;
``--table`` prints the unit graph as the architecture table's rows, with the lowest layers it allows.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400
#: What would let a file run code when it is loaded.
UNSAFE_LOADING = re.compile(r"\btorch\.load\(|^\s*import pickle|^\s*from pickle |weights_only\s*=\s*False", re.M)
ROW = re.compile(r"^\| (\d+) \| (.+?) \| (.+?) \|$", re.M)
DIAGRAM = re.compile(r"^ layer +(\d+): ([^—\n]+)", re.M)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The package modules a module imports (at any depth of its code)."""
    tree = ast.parse(path.read_text())
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {module for module in found if module in known and module != name}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [f"{path}:{node.lineno} {node.name} is {node.end_lineno - node.lineno + 1} lines"
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


def module_graph(root: Path) -> tuple[dict[str, Path], dict[str, set[str]]]:
    files = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    graph = {name: imports_of(path, name, path.name == "__init__.py", set(files)) for name, path in files.items()}
    return files, graph


def unit_graph(root: Path) -> dict[str, set[str]]:
    """Imports between the units of the package: a top-level module, or a subpackage as one unit."""
    _, graph = module_graph(root)

    def unit(module: str) -> str:
        parts = module.split(".")
        return "__init__" if len(parts) == 1 else parts[1]

    units: dict[str, set[str]] = {}
    for name, targets in graph.items():
        units.setdefault(unit(name), set()).update(unit(t) for t in targets)
    return {name: targets - {name} for name, targets in units.items()}


def lowest_layers(graph: dict[str, set[str]]) -> dict[str, int]:
    """Each unit's lowest possible layer: one above the highest unit it imports (an acyclic graph)."""
    layers: dict[str, int] = {}

    def layer(name: str) -> int:
        if name not in layers:
            layers[name] = 1 + max((layer(t) for t in graph[name]), default=-1)
        return layers[name]

    for name in graph:
        layer(name)
    return layers


def architecture_problems(text: str, graph: dict[str, set[str]]) -> list[str]:
    """Where the layer table and diagram of docs/architecture.md differ from the real unit graph."""
    layers, documented = {}, {}
    for layer, units, imports in ROW.findall(text):
        for name in (u.strip("`/") for u in re.findall(r"`[^`]+`", units)):
            layers[name] = int(layer)
            documented[name] = {i.strip("`/") for i in re.findall(r"`[^`]+`", imports)}
    problems = [f"docs/architecture.md: unit {name} is missing from the table" for name in sorted(set(graph) -
                                                                                                  set(documented))]
    problems += [f"docs/architecture.md: {name} is no unit of the package" for name in sorted(set(documented) -
                                                                                              set(graph))]
    for name, targets in sorted(graph.items()):
        if name not in documented:
            continue
        if documented[name] != targets:
            row = ", ".join(f"`{t}`" for t in sorted(targets)) or "nothing"
            problems.append(f"docs/architecture.md is out of date: {name} imports {row}")
        above = sorted(t for t in targets if t in layers and layers[t] >= layers[name])
        if above:
            problems.append(f"docs/architecture.md: {name} (layer {layers[name]}) imports {above} from its own "
                            "layer or above")
    diagram = {u.strip("/"): int(n) for n, units in DIAGRAM.findall(text) for u in units.split()}
    if diagram != layers:
        problems.append("docs/architecture.md: the layer diagram and the table disagree")
    return problems


def check(root: Path, architecture: Path | None = None) -> list[str]:
    files, graph = module_graph(root)
    problems = [f"import cycle: {' <-> '.join(cycle)}" for cycle in find_cycles(graph)]
    for path in files.values():
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            problems.append(f"{path} has {lines} lines (at most {MAX_MODULE_LINES})")
        problems.extend(long_functions(path))
        problems.extend(f"{path}:{text[:match.start()].count(chr(10)) + 1} loads pickles ({match.group().strip()})"
                        for match in UNSAFE_LOADING.finditer(text))
    if architecture is not None and not problems:
        problems.extend(architecture_problems(architecture.read_text(encoding="utf-8"), unit_graph(root)))
    return problems


def table(root: Path) -> str:
    graph = unit_graph(root)
    layers = lowest_layers(graph)
    rows = [f"| {layers[name]} | `{name}` | {', '.join(f'`{t}`' for t in sorted(graph[name])) or 'nothing'} |"
            for name in sorted(graph, key=lambda n: (-layers[n], n))]
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    project = Path(__file__).resolve().parents[1]
    arguments = [a for a in argv[1:] if a != "--table"]
    root = Path(arguments[0]) if arguments else project / "epic_hf"
    if "--table" in argv:
        print(table(root))
        return 0
    doc = project / "docs" / "architecture.md"
    problems = check(root, doc if root.resolve() == (project / "epic_hf").resolve() and doc.is_file() else None)
    for problem in problems:
        print(problem)
    print(f"{len(problems)} structure problem(s) in {root}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
