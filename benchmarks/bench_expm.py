"""What does one EPIC optimizer step's matrix exponential cost: ``epic_hf.expm.matrix_exp`` vs torch?

Each EPIC optimizer step computes ``U = exp(A)`` once and backpropagates through it once, so the
cost that matters is forward + backward. For each width D and each 1-norm of the generator A
(skew-symmetric as for the default orthogonal U, or ``--general`` for the invertible kind), one run
measures, interleaved round-robin after one warm-up per width:

* ours: ``epic_hf.expm.matrix_exp(A)`` (forward) and ``.backward(G)`` (backward);
* torch: ``torch.linalg.matrix_exp(A)`` and its own autograd backward;
* with ``--against REV``: the ``epic_hf/expm.py`` of git revision REV, loaded from ``git show``;

and prints medians, the degree m and squarings s that ours chose, and the relative errors of both
forwards and both gradients against float64 references (``torch.linalg.matrix_exp``; for the
gradient ``epic_hf.expm.frechet_exp`` in float64, which the tests check against torch's float64
autograd). A D x D product is timed too: it is the unit the costs are made of, and the
extra cost of a product ``U_base @ exp(A)`` per step (dynamic trivialization).

Run::

    python benchmarks/bench_expm.py --small            # D = 64, 128: a few seconds
    python benchmarks/bench_expm.py                    # D = 512, 1280, 2048: a few minutes on 2 cores
    python benchmarks/bench_expm.py --against HEAD~1   # also time an older epic_hf/expm.py
    python benchmarks/bench_expm.py --threads 1 --clock cpu   # steadier on a machine others share
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from epic_hf import expm  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="D = 64, 128 and at most 2 repeats: a few seconds")
    parser.add_argument("--dims", type=int, nargs="+", default=[512, 1280, 2048])
    parser.add_argument("--norms", type=float, nargs="+", default=[0.05, 1.0, 10.0, 100.0],
                        help="1-norms of the generator A")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per case (median reported)")
    parser.add_argument("--large-repeats", type=int, default=2,
                        help="repeats for D >= --large-dim, where torch's backward takes seconds")
    parser.add_argument("--large-dim", type=int, default=2048)
    parser.add_argument("--general", action="store_true", help="general A (invertible kind), not skew-symmetric")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--against", metavar="REV", help="also time epic_hf/expm.py as of this git revision")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: this process's CPU time (time.process_time), steadier than wall time on a "
                             "machine other jobs share; use it with --threads 1")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.small:
        args.dims, args.repeats = [64, 128], min(args.repeats, 2)
    return args


def load_revision(rev: str) -> ModuleType:
    """``epic_hf/expm.py`` as of ``rev``, imported under another name (it needs only torch)."""
    source = subprocess.run(["git", "show", f"{rev}:epic_hf/expm.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "expm_at_revision.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("expm_at_revision", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return module


def generator_matrix(dim: int, norm: float, general: bool, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """A random generator with the given 1-norm: skew-symmetric (orthogonal U) unless ``general``."""
    A = torch.randn(dim, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    if not general:
        A = A - A.T
    return (A * (norm / torch.linalg.matrix_norm(A, ord=1))).to(dtype)


#: The clock every timing reads; ``--clock cpu`` swaps in ``time.process_time``.
clock: Callable[[], float] = time.perf_counter


def forward_backward(exp: Callable[[torch.Tensor], torch.Tensor], A: torch.Tensor,
                     G: torch.Tensor) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """(forward seconds, backward seconds, exp(A), gradient) for one call, as an optimizer step does it."""
    leaf = A.detach().clone().requires_grad_()
    start = clock()
    X = exp(leaf)
    middle = clock()
    X.backward(G)
    end = clock()
    return middle - start, end - middle, X.detach(), leaf.grad


def time_product(dim: int, dtype: torch.dtype, repeats: int) -> float:
    """Median seconds of one D x D product (after one warm-up)."""
    X = torch.randn(dim, dim, dtype=dtype)
    Y = torch.randn(dim, dim, dtype=dtype)
    X @ Y
    times = []
    for _ in range(repeats):
        start = clock()
        X @ Y
        times.append(clock() - start)
    return statistics.median(times)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def relative(x: torch.Tensor, reference: torch.Tensor) -> float:
    return float((x.double() - reference.double()).norm() / reference.double().norm())


def measure_case(methods: dict[str, Callable], A: torch.Tensor, G: torch.Tensor, repeats: int) -> dict:
    """Interleaved repeats of every method on one generator; medians and accuracy."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    results = {}
    for _ in range(repeats):
        for name, exp in methods.items():
            forward, backward, X, grad = forward_backward(exp, A, G)
            times[name].append((forward, backward))
            results[name] = (X, grad)
    reference = torch.linalg.matrix_exp(A.double())
    # the exact gradient L(A^T, G) in float64 by ours (tests/test_expm.py checks it against torch's autograd
    # in float64 to 1e-8); torch's own float64 autograd would take minutes at D = 2048
    reference_grad = expm.frechet_exp(A.double().mT, G.double())
    row = {
        name: {
            "forward": statistics.median(t[0] for t in runs),
            "backward": statistics.median(t[1] for t in runs),
            "total": statistics.median(t[0] + t[1] for t in runs),
        }
        for name, runs in times.items()
    }
    row["error_ours"] = relative(results["ours"][0], reference)
    row["error_torch"] = relative(results["torch"][0], reference)
    row["grad_error_ours"] = relative(results["ours"][1], reference_grad)
    row["grad_error_torch"] = relative(results["torch"][1], reference_grad)
    return row


def run(args: argparse.Namespace) -> list[str]:
    """Measure every (D, norm) case; return the markdown lines of the report."""
    dtype = getattr(torch, args.dtype)
    methods: dict[str, Callable] = {"ours": expm.matrix_exp, "torch": torch.linalg.matrix_exp}
    if args.against:
        methods["before"] = load_revision(args.against).matrix_exp
    header = ["D", "norm", "m", "s", "ours fwd", "ours bwd", "ours fwd+bwd", "in products", "torch fwd+bwd",
              "torch/ours"]
    if args.against:
        header += [f"{args.against} fwd+bwd", f"{args.against}/ours"]
    header += ["fwd err ours", "fwd err torch", "grad err ours", "grad err torch", "D^3 product"]
    lines = ["| " + " | ".join(header) + " |", "|" + " ---: |" * len(header)]
    for dim in args.dims:
        repeats = args.large_repeats if dim >= args.large_dim else args.repeats
        G = torch.randn(dim, dim, generator=torch.Generator().manual_seed(args.seed + 1)).to(dtype)
        warm = generator_matrix(dim, 1.0, args.general, dtype, args.seed)
        for exp in methods.values():
            forward_backward(exp, warm, G)
        product = time_product(dim, dtype, max(repeats, 3))
        for norm in args.norms:
            A = generator_matrix(dim, norm, args.general, dtype, args.seed)
            degree, squarings = expm.choose_approximant(norm, dtype)
            row = measure_case(methods, A, G, repeats)
            ours, theirs = row["ours"], row["torch"]
            cells = [dim, norm, degree, squarings, ms(ours["forward"]), ms(ours["backward"]), ms(ours["total"]),
                     f"{ours['total'] / product:.1f}", ms(theirs["total"]), f"{theirs['total'] / ours['total']:.2f}x"]
            if args.against:
                before = row["before"]["total"]
                cells += [ms(before), f"{before / ours['total']:.2f}x"]
            cells += [f"{row[key]:.1e}" for key in ("error_ours", "error_torch", "grad_error_ours", "grad_error_torch")]
            cells.append(ms(product))
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
            print(lines[-1], file=sys.stderr, flush=True)
    return lines


def main(argv: list[str] | None = None) -> None:
    global clock
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    started = time.perf_counter()
    lines = run(args)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    kind = "general" if args.general else "skew-symmetric"
    print(f"## bench_expm: {stamp}, {platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.dtype}, {kind} A, {args.clock} clock\n")
    print("milliseconds per call, medians of interleaved repeats after one warm-up per D "
          f"({args.repeats} repeats, {args.large_repeats} at D >= {args.large_dim}); m, s: the Padé degree and "
          "squarings ours chose; in products: ours fwd+bwd / one D^3 product; errors are relative Frobenius errors against float64 references "
          "(torch.linalg.matrix_exp; the gradient by epic_hf.expm in float64)\n")
    print("\n".join(lines))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
