"""The benchmarks keep working: each runs at its toy size (`--smoke`) and prints its tables.

Nothing here measures speed: a smoke run's figures mean nothing. What is
checked is that every benchmark exits 0, prints the markdown tables that
RESULTS.md is made of, and computes its goal lines from what it measured.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# Each benchmark and titles of tables its smoke run must print (cli_startup runs through run_all below).
EXPECTED = {
    "training": ["### Training step, smoke 8x8x1, fp32", "### Where a training step's time goes", "### Engine overhead"],
    "samplers": ["### Sample quality against model evaluations", "### Model evaluations to reach DDPM-1000 quality",
                 "### Time per model evaluation, ours against diffusers"],
    "quality": ["### Quality for the compute"],
    "distributed": ["### Training throughput by process count"],
}


def run_benchmark(name: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), "--smoke", "--threads", "1", *args],
        capture_output=True, text=True, timeout=600, cwd=cwd,
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_benchmark_runs_at_its_toy_size_and_prints_its_tables(name, tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    monkeypatch.setenv("WB_CACHE_DIR", str(tmp_path / "cache"))
    result = run_benchmark(name, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("machine: ")
    for title in EXPECTED[name]:
        assert title in result.stdout, f"{title!r} missing from:\n{result.stdout}"
    assert "| --- |" in result.stdout  # markdown tables, as RESULTS.md takes them


def test_run_all_writes_results_with_machine_versions_date_and_every_section(tmp_path):
    output = tmp_path / "RESULTS.md"
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run_all.py"), "--smoke", "--only", "cli_startup", "--output", str(output)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    text = output.read_text()
    for part in ("# Benchmark results", "- machine: ", "- versions: ", "torch ", "## CLI start-up",
                 "`python benchmarks/cli_startup.py --smoke`, 20", "### CLI start-up", "smoke run"):
        assert part in text, part


def test_run_all_only_replaces_the_sections_it_runs_and_keeps_other_machines(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from common import machine_title
    finally:
        sys.path.remove(str(BENCHMARKS))
    output = tmp_path / "RESULTS.md"
    output.write_text(
        "# Benchmark results\n\nintro\n"
        "\n# Machine: Another CPU, 64 cores, no GPU\n\n- machine: another\n\n## CLI start-up\n\nthe other machine's figures\n"
        f"\n# Machine: {machine_title()}\n\n- machine: this one\n\n## Sampling against diffusers' schedulers\n\n"
        "earlier figures\n\n## CLI start-up\n\nstale figures\n\n## Measured by hand\n\nhand figures\n"
    )
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run_all.py"), "--smoke", "--only", "cli_startup", "--output", str(output)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    text = output.read_text()
    assert "earlier figures" in text and "stale figures" not in text and "### CLI start-up" in text
    assert "the other machine's figures" in text and text.count("# Machine: ") == 2
    assert "## Measured by hand\n\nhand figures" in text  # a section no script writes is kept
    this = text.index(f"# Machine: {machine_title()}")
    assert this < text.index("## Sampling against", this) < text.index("## CLI start-up", this)  # the benchmarks' order