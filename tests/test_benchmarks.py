"""Every benchmark script runs in its ``--small`` mode and prints its table.

The scripts are the issue's speed checks; they import the library's internals (the index pass,
the feature store, the trainer), so a restructuring that breaks them should fail here, not when
someone next measures. These tests check that each script runs and reports, not its numbers
(small mode measures tiny models on a shared machine). Each script is one subprocess of a few
seconds (most of it importing torch and transformers).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"

#: The header line of the table each script must print (the start of the line is enough).
HEADERS = {
    "bench_app.py": "| case | s/request (median) | s/request (min) | ratio vs explain | ratio vs explain + sheet |",
    "bench_explain.py": "| case | s/batch (median) | s/batch (min) | images/s | baseline | ratio vs baseline |",
    "bench_faithfulness.py": "| case | seconds (median) | its limit (forwards of the batch) | ratio vs forward |",
    "bench_fit.py": "| case | seconds (median) | images/s | ratio vs (a) |",
    "bench_perceiver.py": "| config | pixels M | latents N | width D | layers |",
    "bench_real_width.py": "| D | index pass s | training s | other s | total s | total / index pass |",
    "bench_vit_quality.py": "| metric | tiny ResNet (D=32) | tiny ViT (2 layers, D=64, CLS token) |",
}
#: Tables a script prints besides its first one.
MORE_HEADERS = {
    "bench_fit.py": ["| step | N | pairs | (c) library s | (d) reference s |", "| case | seconds | purity before |"],
    "bench_real_width.py": ["| step | N | pairs | optimizer steps | seconds |",
                            "| model | D | how | generator 1-norm |"],
}
#: Other lines a script's small mode must print.
EXPECTED = {
    "bench_app.py": ["launch to ready:", "goal: a request from the page < 1.2x", "| app request (page) |"],
    # the small mode is the one where the library fit (c) and the reference-style fit (d) run in full
    "bench_fit.py": ["| (d) reference-style fit |", "measured in full", "speedup (d)/(c) ="],
    "bench_explain.py": ["goal: explain <= 1.3x a plain forward"],
    "bench_faithfulness.py": ["| epic_hf deletion + insertion |", "goal: epic_hf deletion + insertion <= 1.5x"],
    "bench_real_width.py": ["goal: whole fit < 120 s on 2 CPU cores"],
    "bench_perceiver.py": ["the split would cost"],
    "bench_vit_quality.py": ["| concept hits |", "| patch share | 1.000 |"],
}
#: bench_expm.py belongs to the matrix-exponential work (another change set): its columns are
#: its own business, so only its heading and a markdown table are checked, and only while the
#: script exists and has a --small mode.
EXPM = "bench_expm.py"


def _scripts() -> list[str]:
    return sorted(path.name for path in BENCHMARKS.glob("*.py"))


def run_small(script: str) -> str:
    """stdout of ``python benchmarks/<script> --small``; fails with the end of stderr on a non-zero exit."""
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), "--small"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{script} --small exited {result.returncode}:\n{result.stderr[-4000:]}"
    return result.stdout


def table_rows(stdout: str, header: str) -> list[str]:
    """The data rows of the markdown table whose header line starts with ``header``."""
    lines = stdout.splitlines()
    for number, line in enumerate(lines):
        if line.startswith(header):
            assert lines[number + 1].startswith("| ---") or lines[number + 1].startswith("|---"), lines[number + 1]
            rows = []
            for row in lines[number + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(row)
            return rows
    raise AssertionError(f"no table with header {header!r} in:\n{stdout}")


def table_columns(stdout: str, header: str) -> int:
    """How many ``|`` the full header line (starting with ``header``) has."""
    return next(line for line in stdout.splitlines() if line.startswith(header)).count("|")


def test_every_benchmark_script_is_covered():
    assert set(_scripts()) - {EXPM} == set(HEADERS), "a new benchmark needs its header in HEADERS"


@pytest.mark.parametrize("script", sorted(HEADERS))
def test_benchmark_runs_in_small_mode_and_prints_its_tables(script):
    stdout = run_small(script)
    assert f"## {Path(script).stem}:" in stdout
    for header in [HEADERS[script], *MORE_HEADERS.get(script, [])]:
        rows = table_rows(stdout, header)
        assert rows, f"{script}: the table {header!r} has no rows"
        columns = table_columns(stdout, header)
        assert all(row.count("|") == columns for row in rows), rows
        assert not any("nan" in [cell.strip() for cell in row.split("|")] for row in rows), rows
    for text in EXPECTED.get(script, []):
        assert text in stdout, f"{script}: {text!r} missing from\n{stdout}"


# -- bench_expm.py (matrix-exponential work; see EXPM above) -------------------------------------
def test_bench_expm_runs_in_small_mode_when_present():
    path = BENCHMARKS / EXPM
    if not path.is_file():
        pytest.skip(f"benchmarks/{EXPM} is not in this tree")
    if "--small" not in path.read_text():
        pytest.skip(f"benchmarks/{EXPM} has no --small mode")
    stdout = run_small(EXPM)
    assert "## bench_expm" in stdout
    lines = stdout.splitlines()
    assert any(line.startswith("|") and following.startswith(("| ---", "|---"))
               for line, following in zip(lines, lines[1:])), stdout
