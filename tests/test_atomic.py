"""Every file epic_hf writes is written whole or not at all, by one writer: epic_hf.atomic.

The writer is tested on real failures (an exception half-way, a PIL format it cannot write);
then a static check reads every module of the package and refuses any other way of writing a
file, so a new writer that forgets the atomic path fails here, not after a crash in the field.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from epic_hf.atomic import TEMP_PREFIX, atomic_path, atomic_stream, create_exclusive, write_atomic

PACKAGE = Path(__file__).resolve().parent.parent / "epic_hf"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX))


def test_text_and_bytes_replace_the_file_whole(tmp_path):
    target = tmp_path / "report.json"
    assert write_atomic(target, "first ✓") == target
    assert target.read_text(encoding="utf-8") == "first ✓"
    write_atomic(target, b"\x00second")
    assert target.read_bytes() == b"\x00second" and _leftovers(tmp_path) == []


def test_an_exception_mid_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "index_vectors.f32"
    write_atomic(target, b"old content")
    with pytest.raises(RuntimeError, match="disk gone"), atomic_stream(target) as stream:
        stream.write(b"half of the new")
        raise RuntimeError("disk gone")
    assert target.read_bytes() == b"old content" and _leftovers(tmp_path) == []
    with pytest.raises(RuntimeError), atomic_stream(tmp_path / "never.bin") as stream:
        stream.write(b"x")
        raise RuntimeError("stop")
    assert not (tmp_path / "never.bin").exists() and _leftovers(tmp_path) == []


def test_a_path_writer_that_fails_keeps_the_old_picture(tmp_path):
    picture = tmp_path / "purity.png"
    Image.new("RGB", (4, 4), "red").save(picture)
    with pytest.raises(ValueError), atomic_path(tmp_path / "purity.unknown-format") as partial:
        Image.new("RGB", (4, 4), "blue").save(partial)  # PIL knows no such extension
    with pytest.raises(KeyboardInterrupt), atomic_path(picture) as partial:
        Image.new("RGB", (4, 4), "blue").save(partial, format="PNG")
        raise KeyboardInterrupt
    with Image.open(picture) as kept:
        assert kept.getpixel((0, 0)) == (255, 0, 0)
    assert _leftovers(tmp_path) == [] and not (tmp_path / "purity.unknown-format").exists()


def test_a_safetensors_file_gets_the_mode_of_an_ordinary_file(tmp_path):
    """safetensors makes its files 0600; a bank written for others to read must not be."""
    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "bank.safetensors") as partial:
            save_file({"S": torch.ones(2, 2)}, str(partial))
    finally:
        os.umask(umask)
    assert (tmp_path / "bank.safetensors").stat().st_mode & 0o777 == 0o644
    assert torch.equal(load_file(str(tmp_path / "bank.safetensors"))["S"], torch.ones(2, 2))


def test_exclusive_creation_never_replaces(tmp_path):
    assert create_exclusive(tmp_path / ".epic.lock", '{"pid": 1}')
    assert not create_exclusive(tmp_path / ".epic.lock", '{"pid": 2}')
    assert (tmp_path / ".epic.lock").read_text() == '{"pid": 1}' and _leftovers(tmp_path) == []


# -- the static check: no module but epic_hf/atomic.py writes a file ----------------------------------------

#: Calls that write, move or copy files by themselves.
WRITING_CALLS = {"write_text", "write_bytes", "rename", "replace_file", "touch", "symlink_to", "hardlink_to",
                 "os.replace", "os.rename", "os.link", "os.symlink", "os.fdopen", "os.truncate", "shutil.copy",
                 "shutil.copy2", "shutil.copyfile", "shutil.copytree", "shutil.move", "tempfile.mkstemp",
                 "tempfile.NamedTemporaryFile", "np.save", "np.savez", "numpy.save", "torch.save", "json.dump",
                 "tofile", "save_to_disk", "savefig"}
#: Table writers that write a file when given a path, and return text when given nothing.
TABLE_WRITERS = {"to_parquet", "to_csv", "to_json"}
#: Writers that take a path (or a buffer): allowed only into an ``atomic_path`` block's temporary path.
PATH_WRITERS = {"save", "save_file"}
#: Receivers whose ``.save`` is the package's own method, itself written through epic_hf.atomic.
PACKAGE_SAVERS = {"state": "EvaluationState.save", "e": "Explanation.save", "explanation": "Explanation.save",
                  "explanations[0]": "Explanation.save"}
#: The one file written outside epic_hf.atomic, and why.
EXEMPT = {("fit/index.py", "tempfile.mkstemp"): "the pooled index's scratch spill, memory-mapped during the fit and "
          "deleted after it; never read by a later run (the checkpoint's copy goes through atomic_stream)",
          ("fit/index.py", "os.fdopen"): "the same scratch spill",
          ("fit/index.py", "np.memmap"): "the same scratch spill, mapped for writing"}
WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND"}


def _name(node: ast.AST) -> str:
    return ast.unparse(node)


def _mode_writes(call: ast.Call, position: int) -> bool:
    mode = call.args[position] if len(call.args) > position else next(
        (k.value for k in call.keywords if k.arg == "mode"), None)
    if mode is None:
        return False
    return not (isinstance(mode, ast.Constant) and isinstance(mode.value, str) and not set("wax+") & set(mode.value))


class _Writes(ast.NodeVisitor):
    """The direct file writes of one module: (line, call) for each."""

    def __init__(self, where: str) -> None:
        self.where, self.found = where, []
        self.atomic_names: list[str] = []  # the `as` names of the enclosing atomic_path blocks
        self.buffers: set[str] = set()  # names bound to io.BytesIO(): in-memory writes

    def visit_With(self, node: ast.With) -> None:
        names = [_name(item.optional_vars) for item in node.items
                 if item.optional_vars is not None and _name(item.context_expr.func if isinstance(
                     item.context_expr, ast.Call) else item.context_expr).endswith("atomic_path")]
        self.atomic_names.extend(names)
        self.generic_visit(node)
        del self.atomic_names[len(self.atomic_names) - len(names):]

    def visit_Assign(self, node: ast.Assign) -> None:
        if isinstance(node.value, ast.Call) and _name(node.value.func).endswith("BytesIO"):
            self.buffers.update(_name(t) for t in node.targets)
        self.generic_visit(node)

    def _flag(self, node: ast.Call, call: str) -> None:
        if (self.where, call) not in EXEMPT:
            self.found.append(f"{self.where}:{node.lineno} {_name(node)[:90]}")

    def visit_Call(self, node: ast.Call) -> None:
        func = _name(node.func)
        short = func.rsplit(".", 1)[-1]
        # the path is save_file's second argument, the first of any other path writer
        target = node.args[1 if short == "save_file" else 0] if len(node.args) > (short == "save_file") else None
        first = _name(target) if target is not None else ""
        if short in TABLE_WRITERS:
            if node.args or node.keywords:  # with no argument they return the text instead
                self._flag(node, func)
        elif func in WRITING_CALLS or (isinstance(node.func, ast.Attribute) and short in WRITING_CALLS):
            self._flag(node, func)
        elif func == "open" and _mode_writes(node, 1):
            self._flag(node, func)
        elif func == "os.open" and any(isinstance(n, ast.Attribute) and n.attr in WRITE_FLAGS
                                       for n in ast.walk(node)):
            self._flag(node, func)
        elif short == "memmap" and _mode_writes(node, 2) and not any(
                k.arg == "mode" and isinstance(k.value, ast.Constant) and k.value.value in ("r", "c")
                for k in node.keywords):
            self._flag(node, func)
        elif short in PATH_WRITERS:
            into_temporary = first in self.atomic_names or first in {f"str({n})" for n in self.atomic_names}
            receiver = _name(node.func.value) if isinstance(node.func, ast.Attribute) else ""
            if not (into_temporary or first in self.buffers or receiver in PACKAGE_SAVERS):
                self._flag(node, func)
        self.generic_visit(node)


def direct_writes(source: str, where: str) -> list[str]:
    visitor = _Writes(where)
    visitor.visit(ast.parse(source))
    return visitor.found


def test_the_check_finds_each_kind_of_direct_write():
    """Not a vacuous check: each way of writing past epic_hf.atomic is caught, and the atomic ways are not."""
    bad = '''
Path(p).write_text("a")
image.save(path)
save_file(tensors, str(path))
with open(path, "wb") as f: pass
os.open(path, os.O_CREAT | os.O_WRONLY)
os.replace(a, b)
shutil.copy(a, b)
frame.to_csv(path)
np.memmap(path, dtype=np.float32, mode="w+", shape=(2,))
'''
    assert len(direct_writes(bad, "x.py")) == 9, direct_writes(bad, "x.py")
    good = '''
with atomic_path(path) as partial:
    image.save(partial, format="PNG")
    save_file(tensors, str(partial))
buffer = io.BytesIO()
image.save(buffer, format="PNG")
with open(path, "rb") as f: pass
np.memmap(path, dtype=np.float32, mode="c", shape=(2,))
text.replace("a", "b")
write_atomic(path, config.to_json())
'''
    assert direct_writes(good, "x.py") == []


def test_every_file_the_package_writes_goes_through_the_atomic_writer():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE).as_posix()
        if where != "atomic.py":
            found += direct_writes(path.read_text(encoding="utf-8"), where)
    assert found == [], "write these through epic_hf.atomic (write_atomic, atomic_path, atomic_stream):\n" + \
        "\n".join(found)
