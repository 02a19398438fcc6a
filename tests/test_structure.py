"""The package keeps its shape: no import cycles, short functions, small modules (scripts/check_structure.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_structure", ROOT / "scripts" / "check_structure.py")
check_structure = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_structure)


def test_epic_hf_has_no_cycles_no_long_functions_and_no_large_modules():
    assert check_structure.check(ROOT / "epic_hf") == []


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
