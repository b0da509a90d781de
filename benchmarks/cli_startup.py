"""CLI start-up time: `wb --help`, `wb list`, `wb list schedulers -v`, against `import torch`.

Goal (issue 7): `wb list` under 0.5 s. Each command runs in a fresh
interpreter `--repeat` times; the table shows the median and the best wall
time, and the ratio to a bare `python -c "import torch"` on this machine.

    python benchmarks/cli_startup.py [--repeat 7]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from common import parser, setup, table

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
    p = parser(__doc__)
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args()
    setup(args)
    repeat = 1 if args.smoke else args.repeat
    results = {name: wall_times(cmd, repeat) for name, cmd in COMMANDS.items()}
    torch_median = statistics.median(results["python -c 'import torch'"])
    rows = [
        [f"`{name}`", f"{statistics.median(times):.3f}", f"{min(times):.3f}", f"{statistics.median(times) / torch_median:.2f}"]
        for name, times in results.items()
    ]
    wb_list = statistics.median(results["wb list"])
    print(table("CLI start-up", ["command", "median s", "best s", "/ import torch"], rows,
                f"Each command in a fresh interpreter, {repeat} runs each."))
    print(f"Goal `wb list` under 0.5 s: {'met' if wb_list < 0.5 else 'missed'} ({wb_list:.3f} s median).")


if __name__ == "__main__":
    main()
