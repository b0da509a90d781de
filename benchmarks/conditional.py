"""Class-conditional runs against their checks (issue 15): prints markdown tables for RESULTS.md.

    python benchmarks/conditional.py gaussians RUN_DIR   # share of samples nearest the component asked for
    python benchmarks/conditional.py digits RUN_DIR      # accuracy and fd at guidance 0, 1, 2, 4

RUN_DIR is a finished run of `gaussians_cond` or `digits_cond` (`wb run gaussians_cond`).
The gaussians check: at guidance 1 and above, at least 95% of the samples asked
for class k land nearest component k (the eight centres are known exactly).
"""

from __future__ import annotations

import math
import sys

import torch

import workbench as wb
from workbench.evaluation import evaluate, make_evaluation


def gaussians(run_dir: str, per_class: int = 500, scales=(0.0, 1.0, 2.0, 3.0, 4.0)) -> None:
    from workbench.plugins.data.toy2d import EXTENT

    run = wb.open_run(run_dir)
    angles = torch.arange(8) * 2 * math.pi / 8
    centres = EXTENT * torch.stack([angles.cos(), angles.sin()], 1)
    labels = torch.arange(8).repeat_interleave(per_class)
    print(f"{per_class} samples per class, seed 1, the experiment's sampler ({run.experiment.sampler.name})\n")
    print("| guidance s | nearest the class asked for | worst class |")
    print("| --- | --- | --- |")
    for s in scales:
        x = run.sample(len(labels), labels=labels, guidance=s, seed=1)
        hit = (torch.cdist(x, centres).argmin(1) == labels).double()
        worst = min(float(hit[labels == k].mean()) for k in range(8))
        print(f"| {s:g} | {float(hit.mean()):.2%} | {worst:.2%} |", flush=True)


def digits(run_dir: str, scales=(0.0, 1.0, 2.0, 4.0)) -> None:
    run = wb.open_run(run_dir)
    pipeline = run.pipeline()
    _, held_out = pipeline.load_data()
    metrics = [wb.build("metric", "accuracy"), wb.build("metric", "fd")]
    print(f"{pipeline.exp.eval.samples} samples (every digit equally often) against {len(held_out)} held-out digits\n")
    print("| guidance s | accuracy | fd | worst digit (accuracy) |")
    print("| --- | --- | --- | --- |")
    for s in scales:
        sampler = pipeline.sampler(None, {"guidance": s})
        evaluation = make_evaluation(pipeline, pipeline.model, held_out, sampler=sampler)
        results = evaluate(metrics, evaluation)
        per_class = results.artifacts["accuracy.json"]["per_class"]
        worst = min(per_class, key=per_class.get)
        print(f"| {s:g} | {results.values['accuracy']:.1%} | {results.values['fd']:.2f} | {worst}: {per_class[worst]:.0%} |", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    {"gaussians": gaussians, "digits": digits}[sys.argv[1]](sys.argv[2])
