"""Run every benchmark and write benchmarks/RESULTS.md: machine, versions, date, and each benchmark's tables.

Each benchmark runs in a fresh interpreter, one after the other, so that none
inherits another's threads, caches or compiled kernels. A benchmark that
fails is reported in RESULTS.md with its error output, and this script then
exits non-zero after running the rest.

RESULTS.md has one part per machine ("# Machine: CPU, cores, GPU"): a run
replaces only its own machine's part, and with `--only` only those
benchmarks in it, so figures from an Intel Xeon with AMX and from an AMD
EPYC with AVX2 stand side by side, each with its own date. Sections that
no script here writes (measured by hand, e.g. the conditional-generation
tables) are kept as they are.

    python benchmarks/run_all.py [--only training samplers] [--output benchmarks/RESULTS.md] [--smoke]
    make bench        # the same, after installing the `bench` extra (diffusers)
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (title, what it answers); the script is benchmarks/<name>.py.
BENCHMARKS = {
    "training": ("Training throughput against diffusers' UNet2DModel", "examples/s, GFLOP/s, fraction of peak, engine overhead"),
    "samplers": ("Sampling against diffusers' schedulers", "model evaluations and wall time to a fixed quality"),
    "quality": ("Quality for the compute: digits at a fixed wall-clock budget", "fd and nll against a diffusers training loop"),
    "cli_startup": ("CLI start-up", "`wb --help` and `wb list` wall time"),
    "distributed": ("Training throughput with 1 and 2 processes", "DDP on gloo; one GPU when present"),
}


def versions() -> str:
    found = []
    for package in ("workbench", "torch", "diffusers", "numpy", "scikit-learn"):
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            found.append(f"{package} (not installed)")
    return ", ".join(found) + f"; Python {platform.python_version()}"


def run(name: str, extra: list[str]) -> tuple[str, bool, float]:
    """One benchmark's markdown output (its machine line dropped), whether it succeeded, and its wall time."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *extra], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = [line for line in result.stdout.splitlines() if not line.startswith("machine: ")]
    text = "\n".join(lines).strip() + "\n"
    if result.returncode != 0:
        text += f"\n**failed** (exit {result.returncode}):\n\n```\n{result.stderr.strip()[-4000:]}\n```\n"
    return text, result.returncode == 0, seconds


MACHINE = "\n# Machine: "


def machine_parts(text: str) -> tuple[dict[str, str], list[str]]:
    """The parts of an earlier RESULTS.md by machine title, in their order."""
    parts = text.split(MACHINE)[1:]
    found = {part.split("\n", 1)[0]: part.split("\n", 1)[1].strip("\n") + "\n" for part in parts}
    return found, list(found)


def sections(part: str) -> dict[str, str]:
    """The '## title' sections of one machine's part, by title."""
    return {chunk.split("\n", 1)[0]: "## " + chunk.rstrip("\n") + "\n" for chunk in part.split("\n## ")[1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--smoke", action="store_true", help="toy sizes: checks that every benchmark runs")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from common import machine

    from common import machine_title

    extra = ["--smoke"] if args.smoke else []
    measured: dict[str, str] = {}
    failed = []
    for name in args.only:
        title, what = BENCHMARKS[name]
        print(f"running {name}.py ({what}) ...", flush=True)
        text, ok, seconds = run(name, extra)
        print(text, flush=True)
        if not ok:
            failed.append(name)
        measured[title] = (f"## {title}\n\n`python benchmarks/{name}.py{' --smoke' if args.smoke else ''}`, "
                           f"{datetime.date.today().isoformat()}, {seconds:.0f} s\n\n{text}")
    parts, order = machine_parts(args.output.read_text()) if args.output.exists() else ({}, [])
    this = machine_title()
    earlier = sections(parts.get(this, ""))
    kept = earlier if set(args.only) != set(BENCHMARKS) else {}
    ordered = [measured.get(title) or kept.get(title) for title, _ in BENCHMARKS.values()]
    ordered += [text for title, text in earlier.items() if title not in measured and title not in dict(BENCHMARKS.values())]
    parts[this] = (
        f"- machine: {machine()}\n"
        f"- versions: {versions()}\n"
        + ("- **smoke run: toy sizes, the figures mean nothing**\n" if args.smoke else "")
        + "\n" + "\n".join(section for section in ordered if section)
    )
    header = (
        "# Benchmark results\n\n"
        "Written by `python benchmarks/run_all.py` (`make bench`), one part per machine; each section names the "
        "command and the date of the run that measured it. A run replaces only its own machine's part.\n"
    )
    titles = order + ([this] if this not in order else [])
    body = "".join(f"{MACHINE}{title}\n\n{parts[title].rstrip()}\n" for title in titles)
    args.output.write_text(header + body)
    print(f"wrote {args.output}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
