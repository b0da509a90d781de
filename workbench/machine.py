"""Engine choices that depend on the machine, measured on it rather than assumed.

Which is fastest — one thread or all the cores, channels_last or NCHW
convolutions, torch's fused AdamW kernel or its foreach one — differs between
CPUs (an Intel Xeon with AVX-512/AMX against an AMD EPYC with AVX2), between
networks (a small MLP on 2-D points runs fastest on one thread even on an
idle machine), and with what else runs on the cores. None of them changes
the math, only the rounding. So a run measures them:

- `available_cpus()`: the cores this process may use, from its affinity mask
  and its cgroup's CPU quota, not the machine's core count.
- `choose()`: a short timed probe on the run's own network, batch size and
  device: a few optimizer steps of each candidate, alternated and compared
  by their medians, one choice at a time (threads, then layout, then the
  optimizer kernel). The result is cached under `<cache_dir>/engine`, keyed
  by the CPU, the cores available, torch's version and the network's
  configuration, so it costs seconds once.

What a user sets wins: `WB_THREADS` (or `threads` in the settings file) over
`train.threads`, over the probe; `train.layout` likewise.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

if TYPE_CHECKING:
    from workbench.experiment import Experiment

CACHE_VERSION = "engine-v1"
"""Part of the cache key: change it when the probe changes."""


@dataclass(frozen=True)
class Choices:
    """How a run's training step executes: threads, layout of image weights, AdamW kernel."""

    threads: int
    layout: str  # "channels_last" or "contiguous"; "contiguous" for networks without convolutions
    fused: bool

    def parts(self, images: bool = True) -> list[str]:
        """Each choice in words (the layout only where there are convolutions to lay out)."""
        words = [f"{self.threads} thread{'s' * (self.threads != 1)}", f"{'fused' if self.fused else 'foreach'} AdamW"]
        return words[:1] + [self.layout] + words[1:] if images else words

    def describe(self, images: bool = True) -> str:
        return ", ".join(self.parts(images))


def report_line(best: Choices, measured: dict[Choices, float], images: bool, how: str) -> str:
    """'engine: 1 thread, fused AdamW: 6.0 ms/step; 2 threads 311 ms/step; ... (how)' for the run's output."""
    def ms(seconds: float) -> str:
        return f"{1e3 * seconds:.3g} ms/step" if seconds < 0.1 else f"{1e3 * seconds:.0f} ms/step"

    line = f"engine: {best.describe(images)}"
    if best in measured:
        others = [
            " ".join(p for p in other.parts(images) if p not in best.parts(images)) + " " + ms(seconds)
            for other, seconds in sorted(measured.items(), key=lambda item: item[1]) if other != best
        ]
        line += f": {ms(measured[best])}; " + "; ".join(others)
    return f"{line} ({how})"


def available_cpus() -> int:
    """Cores this process may use: its affinity mask, capped by its cgroup's CPU quota where one is set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    return max(1, min(cores, quota)) if quota else max(1, cores)


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The CPU quota of this cgroup in whole cores, rounded up (cgroup v2 cpu.max, else v1 cfs quota); None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else max(1, math.ceil(quota / period))
    except (OSError, ValueError):
        return None


def cpu_name() -> str:
    """The CPU's model name (for the cache key): /proc/cpuinfo on Linux, else the platform's word."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --- the probe -------------------------------------------------------------------------------


Step = Callable[[], None]
"""One optimizer step of a candidate's own copy of the network, on a fixed batch."""


def time_steps(steps: dict[Choices, Step], device: torch.device, rounds: int = 3) -> dict[Choices, float]:
    """Median seconds per step of each candidate, timed in alternating rounds (a machine's speed drifts).

    Short steps are timed three at a time; a step longer than 0.2 s alone, and one
    longer than 2 s in a single round, so that a large network's probe stays a few
    of its own steps.
    """
    times: dict[Choices, list[float]] = {choice: [] for choice in steps}
    per_round = 3
    for choice, step in steps.items():  # warm-up: first calls allocate and pick kernels
        torch.set_num_threads(choice.threads)
        start = time.perf_counter()
        step()
        _sync(device)
        seconds = time.perf_counter() - start
        if seconds > 0.2:
            per_round = 1
        if seconds > 2.0:  # a large network on a slow machine: one timed step each keeps the probe to a few steps
            rounds = 1
    for _ in range(rounds):
        for choice, step in steps.items():
            torch.set_num_threads(choice.threads)
            _sync(device)
            start = time.perf_counter()
            for _ in range(per_round):
                step()
            _sync(device)
            times[choice].append((time.perf_counter() - start) / per_round)
    return {choice: statistics.median(values) for choice, values in times.items()}


def probe(
    make_step: Callable[[Choices], Step],
    device: torch.device,
    threads: list[int],
    layouts: list[str],
    fused: list[bool],
) -> tuple[Choices, dict[Choices, float]]:
    """The fastest choices, one at a time: threads, then layout, then the AdamW kernel (each list's last is the start).

    Returns the choices and the seconds per step measured for each candidate.
    The global RNG is restored afterwards: probing leaves a run's numbers alone.
    """
    measured: dict[Choices, float] = {}
    best = Choices(threads[-1], layouts[0], fused[0])

    def stage(candidates: list[Choices]) -> Choices:
        candidates = list(dict.fromkeys(candidates))
        if len(candidates) < 2:
            return candidates[0]
        seconds = time_steps({c: make_step(c) for c in candidates}, device)
        measured.update(seconds)
        return min(seconds, key=seconds.get)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        before = torch.get_num_threads()
        try:
            best = stage([replace(best, threads=n) for n in threads])
            best = stage([replace(best, layout=layout) for layout in layouts])
            best = stage([replace(best, fused=f) for f in fused])
        finally:
            torch.set_num_threads(before)
    return best, measured


def cache_key(description: dict[str, Any]) -> str:
    text = json.dumps({"version": CACHE_VERSION, **description}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def read_cached(path: Path) -> tuple[Choices, dict[Choices, float]] | None:
    """The choices and measurements a probe cached at `path`; None if there are none (or they are unreadable)."""
    try:
        data = json.loads(path.read_text())
        best = Choices(**data["choices"])
        measured = {Choices(**m["choices"]): float(m["seconds_per_step"]) for m in data["measured"]}
        return best, measured
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_cached(path: Path, choices: Choices, measured: dict[Choices, float], description: dict[str, Any]) -> None:
    """Atomically (a temporary file, then a rename); an unwritable cache costs time, not correctness."""
    data = {
        "choices": asdict(choices),
        "measured": [{"choices": asdict(c), "seconds_per_step": s} for c, s in measured.items()],
        "for": description,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str))
        os.replace(tmp, path)
    except OSError:
        pass


def fused_adamw_available(device: torch.device) -> bool:
    """Whether this torch has a fused AdamW kernel for `device` (CUDA since 2.0, the CPU since 2.4)."""
    try:
        torch.optim.AdamW([torch.zeros(1, device=device, requires_grad=True)], fused=True)
        return True
    except (RuntimeError, TypeError):
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- the choices of one run ------------------------------------------------------------------


def choose(
    exp: Experiment,
    device: torch.device,
    world_size: int = 1,
    cache_dir: Path | None = None,
    threads: int | None = None,
) -> tuple[Choices, str]:
    """The engine choices for training `exp` on `device`, and a line saying what was chosen and why.

    `threads` (WB_THREADS) and then `train.threads` / `train.layout` are the
    user's word; what they leave open is measured (or read from the cache).
    Several processes on one machine share its cores: each gets its share.
    """
    spec = exp.train
    shape = tuple(exp.dataset.shape)
    images = len(shape) == 3
    forced = threads or (spec.threads if spec.threads != "auto" else None)
    if device.type != "cpu":
        thread_options = [torch.get_num_threads()]  # the GPU does the work; the host threads barely matter
    elif forced:
        thread_options = [int(forced)]
    else:
        thread_options = sorted({1, max(1, available_cpus() // world_size)}, reverse=True)
    bf16_on_cpu = device.type == "cpu" and spec.precision == "bf16"
    default_layout = "channels_last" if images and not bf16_on_cpu else "contiguous"
    if spec.layout != "auto" or not images:
        layouts = [spec.layout if images and spec.layout != "auto" else default_layout]
    else:
        layouts = [default_layout, "contiguous" if default_layout == "channels_last" else "channels_last"]
    fused = [True, False] if fused_adamw_available(device) else [False]
    if len(thread_options) == len(layouts) == len(fused) == 1:
        choices = Choices(thread_options[0], layouts[0], fused[0])
        return choices, report_line(choices, {}, images, "as set")

    description = {
        "cpu": cpu_name(), "cpus": available_cpus(), "torch": torch.__version__, "device": _device_name(device),
        "threads": thread_options, "layouts": layouts, "fused": fused, "world_size": world_size,
        "network": exp.backbone.model_dump(mode="json") | {"backbone": exp.backbone.name}, "shape": shape,
        "out_channels": exp.loss.out_channels(shape[0], exp.diffusion.variance), "batch": spec.batch_size // spec.accumulate // world_size,
        "precision": spec.precision, "compile": spec.compile,
    }
    path = cache_dir / "engine" / f"{cache_key(description)}.json" if cache_dir is not None else None
    cached = read_cached(path) if path is not None else None
    if cached is not None:
        return cached[0], report_line(*cached, images, f"measured on this machine before: {path}")
    choices, measured = probe(step_maker(exp, device, world_size), device, thread_options, layouts, fused)
    if path is not None:
        write_cached(path, choices, measured, description)
    return choices, report_line(choices, measured, images, "measured now; cached for the next run")


def step_maker(exp: Experiment, device: torch.device, world_size: int = 1) -> Callable[[Choices], Step]:
    """For each candidate, one optimizer step of its own copy of the run's network on a fixed batch of its size.

    The loss is a plain mean square of the network's output: the network is what the choices change, and a
    plugin's loss (with its own state, or its own failures) is not run outside the run's care.
    """
    from workbench.trainer import adamw, fast_bf16

    spec = exp.train
    shape = tuple(exp.dataset.shape)
    out_channels = exp.loss.out_channels(shape[0], exp.diffusion.variance)
    timesteps = exp.scheduler.timesteps
    batch = max(1, spec.batch_size // spec.accumulate // world_size)
    autocast = spec.precision == "bf16" and fast_bf16(device)

    def make_step(choice: Choices) -> Step:
        torch.manual_seed(0)
        layout = torch.channels_last if choice.layout == "channels_last" else torch.preserve_format
        model = exp.backbone.build(shape, out_channels).to(device, memory_format=layout)
        optimizer = adamw(model.parameters(), lr=spec.lr, fused=choice.fused)
        generator = torch.Generator(device=device).manual_seed(0)
        x0 = torch.rand((batch, *shape), generator=generator, device=device) * 2 - 1
        t = torch.randint(0, timesteps, (batch,), generator=generator, device=device)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                value = model(x0, t).float().square().mean()
            value.backward()
            optimizer.step()

        return step

    return make_step


RUN_FILE = "engine.json"
"""Where a run keeps the choices it started with: a resumed run takes the same ones (fused and foreach
AdamW, or 1 and 2 threads, round differently, so switching mid-run would break bit-for-bit resume)."""


def save_run_choices(run_dir: Path, choices: Choices) -> None:
    (run_dir / RUN_FILE).write_text(json.dumps(asdict(choices)))


def run_choices(run_dir: Path) -> Choices | None:
    """The choices a run started with; None for a run from before they were kept (or an unreadable file)."""
    try:
        return Choices(**json.loads((run_dir / RUN_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
