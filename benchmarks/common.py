"""What every benchmark shares: the machine's description, timing on a noisy machine, markdown tables.

Each benchmark is a script that prints its tables as markdown (so that
`run_all.py` can paste them into RESULTS.md as they are) and takes
`--smoke` for a toy size that only checks that it still runs.

Timing: a shared virtual machine's speed drifts by tens of percent from one
second to the next. A ratio of two programs is only trustworthy when both are
timed in alternation, round after round, in one process; `interleaved` does
that and the tables report medians over rounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from workbench.machine import cpu_name

# `python benchmarks/x.py` puts benchmarks/ on sys.path; the package itself is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent))


def machine_title() -> str:
    """What tells one machine's figures from another's: the CPU, the cores, the GPU."""
    gpu = f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    return f"{cpu_name()}, {os.cpu_count()} cores, {gpu}"


def machine() -> str:
    """One line naming the machine and the software every figure was measured with."""
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (
        f"{cpu_name()} ({platform.machine()}, {os.cpu_count()} cores){gpu}; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def sync(device: torch.device | str = "cpu") -> None:
    """Wait for queued GPU work, so that a wall-clock time covers it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved(
    functions: dict[str, Callable[[], object]], rounds: int, repeat: int = 1, warmup: int = 1,
    device: torch.device | str = "cpu",
) -> dict[str, list[float]]:
    """Seconds per call of each function, timed in alternation: `rounds` rounds, each `repeat` calls of each.

    Alternating makes every round's figures share the machine's state of that
    moment, so per-round ratios are far steadier than separately timed runs.
    """
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            start = time.perf_counter()
            for _ in range(repeat):
                fn()
            sync(device)
            times[name].append((time.perf_counter() - start) / repeat)
    return times


def median_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """The median over rounds of numerator[i] / denominator[i] (two series from `interleaved`)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def matmul_peak(dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", n: int = 2048,
                rounds: int = 5) -> float:
    """This machine's measured matrix-multiply rate in FLOP/s: the best of `rounds` n x n products.

    It stands for the peak that the 'fraction of peak' columns divide by: the
    rate the BLAS reaches on a large, well-shaped product, measured here rather
    than read from a data sheet.
    """
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    times = interleaved({"mm": lambda: a @ b}, rounds=rounds, repeat=3, warmup=2, device=device)["mm"]
    return 2 * n**3 / min(times)


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]], note: str = "") -> str:
    """A markdown section: a level-3 title, an optional note, and a pipe table."""
    def cell(value: object) -> str:
        return value if isinstance(value, str) else f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = [f"### {title}", ""]
    if note:
        lines += [note, ""]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join(" --- " for _ in headers) + "|")
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def optional_diffusers(skipped: str):
    """The diffusers module, or None with one line saying what is skipped without it."""
    try:
        import diffusers
    except ImportError:
        print(f"diffusers is not installed: {skipped} (pip install -e '.[bench]')\n", flush=True)
        return None
    return diffusers


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes: --smoke and --threads."""
    p = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    p.add_argument("--smoke", action="store_true", help="a toy size: checks that the benchmark runs, measures nothing")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    return p


def setup(args: argparse.Namespace) -> None:
    """Apply the common options and print the machine line."""
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine()}\n", flush=True)
