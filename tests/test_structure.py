"""The package keeps its shape (scripts/check_structure.py, the one structure check): no import cycles, short
functions, small modules, no pickle loading, and docs/architecture.md's layer table is the real import graph."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_structure", ROOT / "scripts" / "check_structure.py")
check_structure = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_structure)


def test_epic_hf_has_no_cycles_no_long_functions_and_no_large_modules():
    assert check_structure.check(ROOT / "epic_hf", ROOT / "docs" / "architecture.md") == []


def test_the_check_finds_pickle_loading(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("import torch\n\n\ndef f(p):\n    return torch.load(p)\n")
    (package / "b.py").write_text("import pickle\n")
    (package / "c.py").write_text("def g(torch, p):\n    return torch.load(p, weights_only=False)\n")
    problems = check_structure.check(package)
    assert [p.rsplit("/", 1)[-1] for p in problems] == [
        "a.py:5 loads pickles (torch.load()", "b.py:1 loads pickles (import pickle)",
        "c.py:2 loads pickles (torch.load()", "c.py:2 loads pickles (weights_only=False)"]


def _architecture(rows: str, diagram: str) -> str:
    return f"```\n{diagram}\n```\n\n| layer | unit | imports (inside `epic_hf`) |\n| --- | --- | --- |\n{rows}\n"


def test_the_check_holds_the_architecture_table_to_the_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from ..low import x\n")
    (package / "low.py").write_text("x = 1\n")
    graph = check_structure.unit_graph(package)
    assert graph == {"__init__": set(), "sub": {"low"}, "low": set()}
    good = _architecture("| 1 | `sub/` | `low` |\n| 0 | `__init__`, `low` | nothing |",
                         " layer  1: sub/\n layer  0: __init__ low")
    assert check_structure.architecture_problems(good, graph) == []
    stale = _architecture("| 1 | `sub/` | nothing |\n| 0 | `__init__`, `low` | nothing |",
                          " layer  1: sub/\n layer  0: __init__ low")
    assert check_structure.architecture_problems(stale, graph) == ["docs/architecture.md is out of date: sub imports `low`"]
    upside_down = _architecture("| 0 | `sub/` | `low` |\n| 1 | `__init__`, `low` | nothing |",
                                " layer  0: sub/\n layer  1: __init__ low")
    assert check_structure.architecture_problems(upside_down, graph) == [
        "docs/architecture.md: sub (layer 0) imports ['low'] from its own layer or above"]
    assert check_structure.lowest_layers(graph) == {"__init__": 0, "sub": 1, "low": 0}


def test_the_check_finds_cycles_through_function_and_type_checking_imports(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import f\n")
    (package / "b.py").write_text("def f():\n    from .a import g\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import x\n")
    (package / "d.py").write_text("from .c import y\n")
    problems = check_structure.check(package)
    assert problems == ["import cycle: pkg.a <-> pkg.b", "import cycle: pkg.c <-> pkg.d"]


def test_the_check_finds_long_functions_and_modules(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    body = "\n".join(f"    x{i} = {i}" for i in range(81))
    (package / "long.py").write_text(f"def long():\n{body}\n" + "\n" * 320)
    problems = check_structure.check(package)
    assert any("long is 82 lines" in p for p in problems)
    assert any(p.endswith("long.py has 402 lines (at most 400)") for p in problems)


def test_the_fast_tier_skips_the_local_hub_server_as_the_readme_says():
    """The module mark must be a real module-level ``pytestmark``, not text inside a script string."""
    import ast

    tree = ast.parse((Path(__file__).parent / "test_hub_server.py").read_text())
    marks = [node for node in tree.body if isinstance(node, ast.Assign)
             and any(isinstance(target, ast.Name) and target.id == "pytestmark" for target in node.targets)]
    assert len(marks) == 1 and ast.unparse(marks[0].value) == "pytest.mark.slow"
