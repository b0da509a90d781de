"""Training throughput of the `unet` backbone with 1 and 2 processes (DDP, gloo on CPU; NCCL on CUDA).

Runs the engine's own train step (global batch drawn, sharded, DDP-averaged)
for a fixed number of steps after a warm-up, and reports examples/s and
the speed-up of 2 processes over 1 on this machine. With CUDA available,
also one GPU with fp32, bf16 autocast and torch.compile.

    python benchmarks/distributed.py [--steps 20] [--batch 64] [--size 16]
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from common import parser, setup, table

EXPERIMENT = """\
[bench]
description = "U-Net training throughput"
dataset   = {{ name = "shapes", size = {size}, n = 2048 }}
scheduler = {{ name = "cosine", timesteps = 1000 }}
backbone  = {{ name = "unet", channels = 32, channel_mult = [1, 2], num_res_blocks = 1, attention_resolutions = [{attn}], groups = 8 }}
train     = {{ steps = 1000000, batch_size = {batch}, precision = "{precision}", compile = {compile} }}
"""


def examples_per_second(file: str, device: str, steps: int, context=None) -> float:
    from workbench import distributed
    from workbench.experiment import load_experiment
    from workbench.training import prepare

    context = context or distributed.SINGLE
    trainer, train_data, _ = prepare(load_experiment("bench", file=file), torch.device(device), context)
    spec = trainer.exp.train
    batches = trainer.batches(train_data)
    for _ in range(3):
        trainer.step(batches)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    distributed.barrier(context)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step(batches)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    distributed.barrier(context)
    return steps * spec.batch_size / (time.perf_counter() - start)


def _worker(rank: int, world: int, port: int, file: str, steps: int, threads: int, out: str) -> None:
    from workbench import distributed

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    context, _ = distributed.init(torch.device("cpu"))
    rate = examples_per_second(file, "cpu", steps, context)
    if rank == 0:
        Path(out).write_text(str(rate))
    distributed.finish(context)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_experiment(folder: str, args, precision: str = "fp32", compile: bool = False) -> str:
    path = Path(folder) / f"bench-{precision}-{compile}.toml"
    path.write_text(EXPERIMENT.format(size=args.size, attn=args.size // 2, batch=args.batch, precision=precision, compile=str(compile).lower()))
    return str(path)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=16)
    args = p.parse_args()
    setup(args)
    if args.smoke:
        args.steps, args.batch, args.size = 2, 8, 8
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        file = write_experiment(folder, args)
        torch.set_num_threads(cores)
        one = examples_per_second(file, "cpu", args.steps)
        rows.append(["CPU, 1 process", f"{cores} threads", f"{one:.1f}", "x1.00"])
        out = str(Path(folder) / "rate")
        threads = max(1, cores // 2)
        mp.spawn(_worker, args=(2, free_port(), file, args.steps, threads, out), nprocs=2, join=True)
        two = float(Path(out).read_text())
        rows.append(["CPU, 2 processes (gloo)", f"{threads} threads each", f"{two:.1f}", f"x{two / one:.2f}"])
        if torch.cuda.is_available():
            base = None
            for precision, compile in (("fp32", False), ("bf16", False), ("bf16", True)):
                rate = examples_per_second(write_experiment(folder, args, precision, compile), "cuda", args.steps)
                base = base or rate
                rows.append([f"1 GPU, {precision}" + (" + compile" if compile else ""), "", f"{rate:.1f}", f"x{rate / base:.2f}"])
    note = (f"`unet` on 3x{args.size}x{args.size}, global batch {args.batch}, {args.steps} timed steps of the engine's "
            "own train step after 3 warm-up steps" + ("" if torch.cuda.is_available() else "; no CUDA device here: GPU rows skipped"))
    print(table("Training throughput by process count", ["setting", "threads", "examples/s", "speed-up"], rows, note))


if __name__ == "__main__":
    main()
