"""CLI start-up time: `wb --help`, `wb list`, `wb list schedulers -v`, against `import torch`.

Goal (issue 7): `wb list` under 0.5 s. Each command runs in a fresh
interpreter `--repeat` times; the table shows the median and the best wall
time, and the ratio to a bare `python -c "import torch"` on this machine.

    python benchmarks/cli_startup.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "wb --help": [sys.executable, "-m", "workbench", "--help"],
    "wb list": [sys.executable, "-m", "workbench", "list"],
    "wb list schedulers -v": [sys.executable, "-m", "workbench", "list", "schedulers", "-v"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
}


def wall_times(command: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    results = {name: wall_times(cmd, args.repeat) for name, cmd in COMMANDS.items()}
    torch_median = statistics.median(results["python -c 'import torch'"])
    print(f"machine: {platform.machine()} {platform.processor() or ''}, Python {platform.python_version()}, "
          f"{args.repeat} runs each")
    print(f"{'command':<28} {'median s':>9} {'best s':>8} {'/ import torch':>15}")
    for name, times in results.items():
        median = statistics.median(times)
        print(f"{name:<28} {median:>9.3f} {min(times):>8.3f} {median / torch_median:>15.2f}")


if __name__ == "__main__":
    main()
