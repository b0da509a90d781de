"""Distributed training on CPU (gloo): the CLI's --nproc, N-independence of the numbers, resume across N."""

from __future__ import annotations

import itertools
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

import pytest
import torch
import torch.multiprocessing as mp

from workbench import distributed, runs
from workbench.experiment import load_experiment
from workbench.trainer import Trainer
from workbench.training import prepare, train

from roundoff import U64, assert_within, traced_steps, unit_roundoff

TINY = """\
[tiny]
description = "a tiny swiss roll run"
seed = 3
dataset   = { name = "swissroll", n = 512 }
scheduler = { name = "linear", timesteps = 50, scale_with_timesteps = false, beta_end = 0.2 }
backbone  = { name = "mlp", width = 32, depth = 2 }
train     = { steps = 6, batch_size = 64, lr = 1e-2, log_every = 3, checkpoint_every = 3, grad_clip = 0.5 }
eval      = { samples = 64, metrics = [] }

[tiny_streamed]
description = "a small U-Net on a folder of images read as it trains"
seed = 3
dataset   = { name = "folder", path = "images", size = 8, in_memory_limit = 0 }
scheduler = { name = "linear", timesteps = 50, scale_with_timesteps = false, beta_end = 0.2 }
backbone  = { name = "unet", channels = 8, channel_mult = [1, 2], groups = 4, num_heads = 2 }
train     = { steps = 4, batch_size = 12, lr = 1e-2, log_every = 2, checkpoint_every = 2 }
eval      = { samples = 4, metrics = [] }
"""


# Two processes and one take the same steps in exact arithmetic and differ by rounding: the ranks
# sum their shards, then the all-reduce sums the ranks. The comparisons below hold them to bounds
# derived in tests/roundoff.py, not to a tolerance tuned on one CPU: the first step's gradient in
# float32, as trained; several steps' weights in float64, where rounding (~1e-16) and a wrong step
# (~lr = 1e-2) are far apart; and, through the CLI, several float32 steps against the bound that
# admits a rounding-flipped AdamW step only where rounding can flip it.

# The gradient as all-reduced: clipping would rescale a wrongly averaged gradient back to the right norm.
UNCLIPPED = ["train.grad_clip=1e9"]

# The timestep sampler's history holds each example's bound term L_t (bits/dim, of order 1), in
# float64 here: rounding moves an entry by ~1e-13 (u64 times the few thousand operations behind it,
# and the weights' difference above), a misrecorded entry (another example's, another t's) by
# order 1. sqrt(u64) = 1.5e-8, relative and absolute, lies 1e5 from either.
HISTORY = {"rtol": math.sqrt(U64), "atol": math.sqrt(U64)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(file: str | Path, name: str, overrides: list[str], device: str | torch.device = "cpu",
          context: distributed.Context = distributed.SINGLE, dtype: torch.dtype = torch.float32) -> tuple[Trainer, Any]:
    """The trainer of experiment `name`, its network and optimizer in `dtype`, and its training data."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # the network and what the trainer builds with it
    try:
        trainer, train_data, _ = prepare(load_experiment(name, file=file, overrides=overrides), torch.device(device), context)
    finally:
        torch.set_default_dtype(before)  # a step's own float32 bookkeeping
    return trainer, train_data


def cast(batches: Iterable[Any], dtype: torch.dtype) -> Iterator[Any]:
    """The batches with their examples in `dtype` (a conditional run's labels as they are)."""
    for batch in batches:
        yield (batch[0].to(dtype), *batch[1:]) if isinstance(batch, tuple) else batch.to(dtype)


def _worker(rank: int, world: int, port: int, name: str, file: str, overrides: list[str], steps: int, out: str,
            device: str = "cpu") -> None:
    """One rank: join the group (gloo on the CPU, NCCL on CUDA); save this rank's all-reduced gradient of
    the first step in float32, then its weights and timestep-sampler state after `steps` steps in float64."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    context, device = distributed.init(torch.device(device))
    trainer, data = start(file, name, overrides + UNCLIPPED, device, context)
    if isinstance(data, torch.Tensor):  # batches drawn by each trainer's generator, between its t and noise
        first = later = None
    else:  # a streamed set's batches follow from its seed alone: one loader (seconds to start) serves both runs
        first = later = list(itertools.islice(trainer.batches(data), steps * trainer.exp.train.accumulate))
    trainer.step(cast(first or trainer.batches(data), torch.float32))
    grads = {key: p.grad.cpu() for key, p in trainer.model.named_parameters()}
    trainer, data = start(file, name, overrides, device, context, torch.float64)
    batches = cast(later or trainer.batches(data), torch.float64)
    for _ in range(steps):
        trainer.step(batches)
    model = {key: value.cpu() for key, value in trainer.model.state_dict().items()}
    torch.save({"grad": grads, "model": model, "timesteps": trainer.timesteps.state_dict()}, Path(out) / f"rank{rank}.pt")
    distributed.finish(context)


def traced(file: str | Path, name: str, overrides: list[str], steps: int, device: str = "cpu",
           dtype: torch.dtype = torch.float32) -> tuple[Trainer, tuple[dict, dict], dict[str, torch.Tensor]]:
    """One process's `steps` steps: (its trainer, (the first step's gradients, their rounding bound),
    the weights' rounding bound)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # networks this small, and a vector-Jacobian product per example, run fastest on one
    try:
        trainer, data = start(file, name, overrides, device, dtype=dtype)
        batches = cast(trainer.batches(data), dtype)
        first, weights = traced_steps(trainer, lambda: trainer.step(batches), steps, unit_roundoff(dtype))
    finally:
        torch.set_num_threads(threads)
    return trainer, first, weights


def assert_as_one(ranks: list[dict], file: Path, name: str, overrides: list[str], steps: int, device: str = "cpu") -> Trainer:
    """What `_worker` saved on 2 ranks against 1 process: the ranks agree exactly, and differ from the
    process by no more than rounding can. Returns the process's float64 trainer."""
    _, (grads, bound), _ = traced(file, name, overrides + UNCLIPPED, 1, device)
    for key, value in grads.items():
        assert torch.equal(ranks[0]["grad"][key], ranks[1]["grad"][key]), f"ranks disagree on the gradient of {key}"
        assert_within(ranks[0]["grad"][key], value, bound[key], f"the first step's gradient of {key}, 2 processes against 1")
    single, _, tolerance = traced(file, name, overrides, steps, device, torch.float64)
    for key, value in single.model.state_dict().items():
        assert torch.equal(ranks[0]["model"][key], ranks[1]["model"][key]), f"ranks disagree on {key}"
        assert_within(ranks[0]["model"][key], value, tolerance.get(key, 0.0), f"{key} after {steps} steps, 2 processes against 1")
    assert ranks[0]["timesteps"].keys() == ranks[1]["timesteps"].keys() == single.timesteps.state_dict().keys()
    for key, value in single.timesteps.state_dict().items():
        assert torch.equal(ranks[0]["timesteps"][key], ranks[1]["timesteps"][key]), f"ranks disagree on the sampler's {key}"
        torch.testing.assert_close(ranks[0]["timesteps"][key], value.cpu(), **HISTORY,
                                   msg=lambda m: f"the sampler's {key}, 2 processes against 1\n{m}")
    return single


def assert_within_rounding_of_one_process(state: dict[str, torch.Tensor], file: Path, steps: int) -> None:
    """`state`, the weights of a run of `tiny` after `steps` float32 steps however taken, against one
    process's, with the bound of tests/roundoff.py."""
    straight, _, tolerance = traced(file, "tiny", [], steps)
    for key, value in straight.model.state_dict().items():
        assert_within(state[key], value, tolerance.get(key, 0.0), f"{key} after {steps} steps, against 1 process")


# T = 10 steps fills the history (10 losses for every t) within 3 steps of 64, so that
# the later steps draw t from it: they differ from one process unless every rank records
# the global batch.
IMPORTANCE = ["loss.name=vlb", "loss.importance_sampling=true", "scheduler.timesteps=10"]
# Labels and label dropout: the coins are drawn for the global batch and sharded, like t and noise.
CONDITIONAL = ['dataset.name="moons"', "condition.labels=true", "condition.dropout=0.3"]


@pytest.mark.parametrize(
    ("name", "overrides"),
    [("tiny", []), ("tiny", ["train.accumulate=2"]), ("tiny", IMPORTANCE), ("tiny_streamed", []), ("tiny", CONDITIONAL)],
    ids=["plain", "accumulate", "importance-sampling", "streamed", "conditional"],
)
def test_two_processes_take_the_same_steps_as_one(tmp_path, monkeypatch, png_folder, name, overrides):
    monkeypatch.chdir(tmp_path)  # the folder's relative path, for this process and the spawned ranks
    file = tmp_path / "experiments.toml"
    file.write_text(TINY)
    steps = 6 if overrides == IMPORTANCE else 4 if name == "tiny_streamed" else 2
    mp.spawn(_worker, args=(2, free_port(), name, str(file), overrides, steps, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    single = assert_as_one(ranks, file, name, overrides, steps)
    if overrides == IMPORTANCE:
        assert single.timesteps.probabilities() is not None, "the history never filled"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices (NCCL)")
def test_two_gpus_with_nccl_take_the_same_steps_as_one(tmp_path):
    file = tmp_path / "experiments.toml"
    file.write_text(TINY)
    mp.spawn(_worker, args=(2, free_port(), "tiny", str(file), [], 2, str(tmp_path), "cuda"), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True, map_location="cpu") for r in range(2)]
    assert_as_one(ranks, file, "tiny", [], 2, device="cuda:0")


def test_a_two_process_cli_run_then_resume_with_one_process(tmp_path):
    (tmp_path / "experiments.toml").write_text(TINY)
    env = {**os.environ, "WB_RUNS_DIR": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "workbench", "run", "tiny", "--nproc", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()  # one run directory, written by rank 0
    state = runs.load_checkpoint(run_dir / runs.CHECKPOINT)
    assert state["step"] == 6
    assert [r["step"] for r in runs.read_metrics(run_dir)] == [3, 6]
    assert result.stdout.count("tiny: a tiny swiss roll run") == 1  # only rank 0 speaks

    # Continue the 2-process run with one process, to step 9; compare with 9 steps on one process.
    resumed = load_experiment("tiny", file=run_dir / runs.EXPERIMENT, overrides=["train.steps=9"])
    train(resumed, resume_dir=run_dir, runs_dir=tmp_path / "runs", evaluate_at_end=False)
    final = runs.load_checkpoint(run_dir / runs.CHECKPOINT)
    assert final["step"] == 9
    assert_within_rounding_of_one_process(final["model"], tmp_path / "experiments.toml", 9)


def test_two_nodes_meet_at_the_rendezvous_endpoint_and_train_as_one(tmp_path):
    """`--nnodes 2 --node-rank R --rdzv-endpoint HOST:PORT` on each node, here two nodes on one machine."""
    (tmp_path / "experiments.toml").write_text(TINY)
    env = {**os.environ, "WB_RUNS_DIR": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "workbench", "run", "tiny", "--nproc", "1", "--nnodes", "2",
             "--node-rank", str(node), "--rdzv-endpoint", endpoint],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for node in range(2)
    ]
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, stderr) in zip(nodes, outputs):
        assert node.returncode == 0, stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    state = runs.load_checkpoint(run_dir / runs.CHECKPOINT)
    assert state["step"] == 6
    assert sum(stdout.count("tiny: a tiny swiss roll run") for stdout, _ in outputs) == 1  # global rank 0 only
    assert_within_rounding_of_one_process(state["model"], tmp_path / "experiments.toml", 6)


def test_ctrl_c_stops_every_rank_at_a_step_boundary_with_one_message_and_a_checkpoint(tmp_path):
    """Ctrl-C in a terminal reaches the launcher and every worker (one process group)."""
    (tmp_path / "experiments.toml").write_text(TINY.replace("steps = 6,", "steps = 1000000,"))
    env = {**os.environ, "WB_RUNS_DIR": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "workbench", "run", "tiny", "--nproc", "2"], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    for line in process.stdout:  # wait for the first logged step
        if line.startswith("step "):
            break
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    assert err.count("interrupted at step") == 1 and "wb run tiny --resume" in err  # rank 0 alone speaks
    assert "Traceback" not in err
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    assert runs.load_checkpoint(run_dir / runs.CHECKPOINT)["step"] > 0
    assert runs.read_json(run_dir / runs.SUMMARY)["status"] == "interrupted"


def test_a_workers_mistake_ends_the_launch_with_its_message_and_exit_code(tmp_path):
    (tmp_path / "experiments.toml").write_text(
        TINY + '[bad]\nextends = "tiny_streamed"\ndataset = { path = "no/such/folder" }\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "workbench", "run", "bad", "--nproc", "2"], cwd=tmp_path,
        env={**os.environ, "WB_RUNS_DIR": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2  # ConfigError's
    assert "'no/such/folder' does not exist" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs" / "bad").exists()


def test_more_processes_than_gpus_is_a_clear_error_before_any_worker_starts(monkeypatch):
    from workbench.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"--nproc 2 on CUDA needs 2 GPUs on this node, and it has 1") as excinfo:
        distributed.check_devices(torch.device("cuda"), 2)
    assert "--nproc 1" in excinfo.value.hint
    distributed.check_devices(torch.device("cuda"), 1)
    distributed.check_devices(torch.device("cpu"), 8)  # gloo: any number of processes


def test_the_batch_must_split_over_processes_and_micro_batches():
    from workbench.errors import ConfigError

    with pytest.raises(ConfigError, match=r"batch_size \(10\) must be divisible by train.accumulate x processes \(2 x 3 = 6\)"):
        distributed.check_batch(10, 2, distributed.Context(0, 3, 0), "tiny")
    assert distributed.shard(torch.arange(6), distributed.Context(1, 3, 1)).tolist() == [2, 3]
