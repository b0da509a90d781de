"""Distributed training on CPU (gloo): the CLI's --nproc, N-independence of the numbers, resume across N."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from rich.console import Console

from workbench import distributed, runs
from workbench.experiment import load_experiment
from workbench.training import Trainer, train

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


# Float tolerance of 2 processes against 1: the ranks' smaller batches sum in another order.
# A wrong shard or gradient average moves weights by ~lr = 1e-2.
CLOSE = {"rtol": 1e-4, "atol": 1e-5}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, name: str, file: str, overrides: list[str], steps: int, out: str,
            device: str = "cpu") -> None:
    """One rank: join the group (gloo on the CPU, NCCL on CUDA), train `steps` steps, save this rank's state."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    context, device = distributed.init(torch.device(device))
    trainer = Trainer(load_experiment(name, file=file, overrides=overrides), device, Console(quiet=True), context)
    spec = trainer.exp.train
    batches = trainer._batches(spec.batch_size // spec.accumulate)
    for _ in range(steps):
        trainer.train_step(batches)
    torch.save({"model": trainer.model.state_dict(), "loss": trainer.loss.state_dict()}, Path(out) / f"rank{rank}.pt")
    distributed.finish(context)


def single_process_trainer(file: Path, overrides: list[str], steps: int, name: str = "tiny", device: str = "cpu") -> Trainer:
    trainer = Trainer(load_experiment(name, file=file, overrides=overrides), torch.device(device), Console(quiet=True))
    spec = trainer.exp.train
    batches = trainer._batches(spec.batch_size // spec.accumulate)
    for _ in range(steps):
        trainer.train_step(batches)
    return trainer


def single_process_weights(file: Path, overrides: list[str], steps: int) -> dict[str, torch.Tensor]:
    return single_process_trainer(file, overrides, steps).model.state_dict()


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], **CLOSE, msg=lambda m: f"{what}: {key}\n{m}")


# T = 10 steps fills the history (10 losses for every t) within 3 steps of 64, so that
# the later steps draw t from it: they differ from one process unless every rank records
# the global batch.
IMPORTANCE = ["loss.name=vlb", "loss.importance_sampling=true", "scheduler.timesteps=10"]


@pytest.mark.parametrize(
    ("name", "overrides"),
    [("tiny", []), ("tiny", ["train.accumulate=2"]), ("tiny", IMPORTANCE), ("tiny_streamed", [])],
    ids=["plain", "accumulate", "importance-sampling", "streamed"],
)
def test_two_processes_take_the_same_steps_as_one(tmp_path, monkeypatch, png_folder, name, overrides):
    monkeypatch.chdir(tmp_path)  # the folder's relative path, for this process and the spawned ranks
    file = tmp_path / "experiments.toml"
    file.write_text(TINY)
    steps = 6 if overrides == IMPORTANCE else 4 if name == "tiny_streamed" else 2
    mp.spawn(_worker, args=(2, free_port(), name, str(file), overrides, steps, str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    single = single_process_trainer(file, overrides, steps, name)
    for key, value in single.model.state_dict().items():
        assert torch.equal(rank0["model"][key], rank1["model"][key]), f"ranks disagree on {key}"
        torch.testing.assert_close(rank0["model"][key], value, **CLOSE, msg=lambda m: f"{key}: 2 processes != 1\n{m}")
    assert_same_state(rank0["loss"], rank1["loss"], "the ranks' loss states")
    assert_same_state(rank0["loss"], single.loss.state_dict(), "2 processes' loss state against 1's")
    if overrides == IMPORTANCE:
        assert single.loss.timestep_probabilities(10, torch.device("cpu")) is not None, "the history never filled"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices (NCCL)")
def test_two_gpus_with_nccl_take_the_same_steps_as_one(tmp_path):
    file = tmp_path / "experiments.toml"
    file.write_text(TINY)
    mp.spawn(_worker, args=(2, free_port(), "tiny", str(file), [], 2, str(tmp_path), "cuda"), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True, map_location="cpu") for r in range(2)]
    single = single_process_trainer(file, [], 2, device="cuda:0")
    for key, value in single.model.state_dict().items():
        assert torch.equal(ranks[0]["model"][key], ranks[1]["model"][key]), f"ranks disagree on {key}"
        torch.testing.assert_close(ranks[0]["model"][key], value.cpu(), **CLOSE)


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
    straight = single_process_weights(tmp_path / "experiments.toml", [], 9)
    final = runs.load_checkpoint(run_dir / runs.CHECKPOINT)
    assert final["step"] == 9
    for key, value in straight.items():
        torch.testing.assert_close(final["model"][key], value, **CLOSE)


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
    for key, value in single_process_weights(tmp_path / "experiments.toml", [], 6).items():
        torch.testing.assert_close(state["model"][key], value, **CLOSE)


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
