"""Training throughput: our `unet` against diffusers' UNet2DModel at a matched configuration, and the engine's overhead.

1. The bare step. Both networks are built with the same widths, residual
   blocks per level, attention resolutions, heads and group norm (the
   configuration that tests/test_backbones.py proves computes the same
   function), so they have the same parameters and the same FLOPs: the
   table shows both counts, the forward FLOPs per example and the training
   step's FLOPs (forward + backward, counted by torch's FLOP counter). One step
   is forward + MSE + backward + AdamW on a fixed batch. Rows:
   - ours, as the engine runs it (its optimizer and memory format: exactly
     the objects `wb run` builds);
   - diffusers as its training example runs it (torch.optim.AdamW with its
     defaults, NCHW tensors);
   - diffusers given the engine's optimizer and memory format, to show how
     much of the difference those choices make.
   Each is timed in alternation with the others (benchmarks/common.py) and
   reported as examples/s, achieved GFLOP/s, the fraction of this machine's
   measured matmul rate at the same precision, and the median per-round
   ratio against diffusers as its example runs it. fp32 always; bf16
   autocast too where the device has fast bf16 (CUDA, or a CPU with AMX /
   AVX512-BF16), with the bf16 matmul rate as its peak.

2. The engine's overhead: a whole `wb run` training step (batch drawn from
   the in-memory set, t and noise drawn, q_sample, the loss, gradient
   clipping, EMA, logging every `log_every` = 50 steps) against the bare step
   of the same network, batch and optimizer. The overhead per step is about
   fixed, so it is measured where it weighs most: on the small 8x8x1 network.
   Goal: under 5%.

    python benchmarks/training.py [--rounds 7] [--device cpu] [--configs 8x8x1 32x32x3] [--smoke]
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from common import interleaved, matmul_peak, median, median_ratio, optional_diffusers, parser, setup, table

import workbench as wb


@dataclass(frozen=True)
class Config:
    """One matched configuration: the data's shape, the batch, and the U-Net's options."""

    shape: tuple[int, int, int]
    batch: int
    unet: dict
    dataset: str  # a workbench dataset table with examples of `shape`, for the engine-overhead row
    window: int | None  # steps per timing of the engine-overhead table (None: not measured)

    def experiment(self, log_every: int) -> str:
        """The same network and batch as a workbench experiment."""
        options = ", ".join(f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in self.unet.items())
        return (
            f"[bench]\ndataset = {self.dataset}\nbackbone = {{ name = \"unet\", {options} }}\n"
            f"train = {{ steps = 1000000, batch_size = {self.batch}, log_every = {log_every} }}\n"
        )


CONFIGS = {
    # The `digits` experiment's U-Net on 8x8 grey images.
    "8x8x1": Config((1, 8, 8), 128, dict(channels=32, channel_mult=[1, 2], num_res_blocks=1,
                                         attention_resolutions=[4], head_channels=8, groups=8, scale_shift=False),
                    '{ name = "digits" }', 50),
    # The `shapes32` experiment's U-Net (the DDPM CIFAR-10 layout at 64 channels) on 32x32 RGB.
    "32x32x3": Config((3, 32, 32), 32, dict(channels=64, channel_mult=[1, 2, 2], num_res_blocks=2,
                                            attention_resolutions=[8], head_channels=32, groups=32, scale_shift=False),
                      '{ name = "shapes", size = 32, n = 2048 }', None),
}
SMOKE = Config((1, 8, 8), 4, dict(channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[4],
                                  head_channels=4, groups=4, scale_shift=False), '{ name = "digits" }', 5)


# --- the two networks ---------------------------------------------------------------------------


def our_unet(config: Config) -> tuple[torch.nn.Module, object]:
    """Our U-Net exactly as an experiment builds it, and its backbone component."""
    component = wb.build("backbone", "unet", **config.unet)
    return component.build(config.shape, config.shape[0]), component


def diffusers_unet(config: Config, component) -> torch.nn.Module:
    """diffusers' UNet2DModel with the same layout: the twin that tests/test_backbones.py checks."""
    import diffusers

    return diffusers.UNet2DModel(**component.diffusers_config(config.shape, config.shape[0]))


# --- one bare training step ---------------------------------------------------------------------


class BareStep:
    """forward + MSE + backward + optimizer step of one network on a fixed batch."""

    def __init__(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...],
                 bf16: bool, returns_output_object: bool = False) -> None:
        self.net, self.optimizer, self.batch = net, optimizer, batch
        self.bf16 = bf16
        self.unwrap = returns_output_object  # diffusers returns UNet2DOutput(sample=...)

    def __call__(self) -> None:
        x, t, target = self.batch
        self.optimizer.zero_grad(set_to_none=True)
        device = x.device.type
        with torch.autocast(device, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext():
            out = self.net(x, t)
            out = out.sample if self.unwrap else out
        F.mse_loss(out.float(), target).backward()
        self.optimizer.step()


def fixed_batch(config: Config, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(config.batch, *config.shape, generator=g)
    t = torch.randint(0, 1000, (config.batch,), generator=g)
    target = torch.randn(config.batch, *config.shape, generator=g)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.to(device).contiguous(memory_format=fmt), t.to(device), target.to(device)


def step_flops(step: BareStep) -> int:
    """FLOPs of one training step (forward + backward; the optimizer's elementwise work is not counted)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def forward_flops(net: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> int:
    x, t, _ = batch
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x, t)
    return counter.get_total_flops()


def bare_steps(name: str, config: Config, device: torch.device, bf16: bool, rounds: int, peak: float) -> str:
    """The table of part 1 for one configuration and precision."""
    from workbench.pipeline import memory_format
    from workbench.trainer import adamw

    torch.manual_seed(0)
    ours, component = our_unet(config)
    theirs = diffusers_unet(config, component)
    params_ours = sum(p.numel() for p in ours.parameters())
    params_theirs = sum(p.numel() for p in theirs.parameters())

    fmt = memory_format(config.shape, device, "bf16" if bf16 else "fp32")
    channels_last = fmt == torch.channels_last
    # Ours: the network, optimizer and memory format that the engine itself makes.
    net = ours.to(device, memory_format=fmt)
    ours_step = BareStep(net, adamw(net.parameters(), lr=1e-4),
                         fixed_batch(config, device, channels_last), bf16)
    # diffusers as its example trains: AdamW with torch's defaults, NCHW.
    plain = copy.deepcopy(theirs).to(device)
    plain_step = BareStep(plain, torch.optim.AdamW(plain.parameters(), lr=1e-4),
                          fixed_batch(config, device, False), bf16, returns_output_object=True)
    # diffusers given the engine's optimizer and memory format.
    tuned = copy.deepcopy(theirs).to(device, memory_format=fmt)
    tuned_step = BareStep(tuned, adamw(tuned.parameters(), lr=1e-4),
                          fixed_batch(config, device, channels_last), bf16, returns_output_object=True)
    steps = {"ours (engine)": ours_step, "diffusers (example)": plain_step, "diffusers + engine's choices": tuned_step}
    flops = step_flops(steps["ours (engine)"])
    flops_theirs = step_flops(steps["diffusers (example)"])
    fwd = forward_flops(ours, steps["ours (engine)"].batch) / config.batch
    fwd_theirs = forward_flops(theirs, steps["diffusers (example)"].batch) / config.batch
    times = interleaved(steps, rounds=rounds, warmup=2, device=device)
    base = times["diffusers (example)"]
    rows = []
    for label, seconds in times.items():
        count = flops if label.startswith("ours") else flops_theirs
        t = median(seconds)
        rows.append([
            label, f"{config.batch / t:.1f}", f"{count / t / 1e9:.1f}", f"{100 * count / t / peak:.0f}%",
            f"x{median_ratio(base, seconds):.2f}",
        ])
    precision = "bf16 autocast" if bf16 else "fp32"
    note = (
        f"{config.shape[0]}x{config.shape[1]}x{config.shape[2]}, batch {config.batch}, {precision}, {device}; "
        f"parameters: ours {params_ours:,}, diffusers {params_theirs:,}; forward MFLOP per example: ours "
        f"{fwd / 1e6:.1f}, diffusers {fwd_theirs / 1e6:.1f}; training step GFLOP: ours {flops / 1e9:.2f}, diffusers "
        f"{flops_theirs / 1e9:.2f}. Peak = measured {precision.split()[0]} matmul rate, {peak / 1e9:.0f} GFLOP/s. "
        f"Medians over {rounds} alternating rounds; the last column is the median per-round speed-up over "
        "diffusers as its example trains."
    )
    text = table(f"Training step, {name}, {precision}", ["network", "examples/s", "GFLOP/s", "of peak", "vs diffusers"],
                 rows, note)
    if not bf16:
        shown = {k: steps[k] for k in ("ours (engine)", "diffusers (example)")}
        text += "\n" + breakdown(name, shown, 1 if rounds < 3 else 3)
    return text


# --- where the time goes -----------------------------------------------------------------------

# Operator families, by the names torch's profiler gives the ATen operators (self CPU time).
FAMILIES = [
    ("convolutions (forward and backward)", ("convolution",)),
    ("group norm", ("group_norm",)),
    ("SiLU", ("silu",)),
    ("attention", ("attention",)),
    ("linear layers", ("aten::mm", "aten::addmm", "aten::bmm")),
    ("optimizer", ("adam", "_foreach")),
]


def time_shares(step: BareStep, steps: int) -> dict[str, float]:
    """The share of a step's operator time in each family of FAMILIES (the rest is 'other')."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    shares = {label: 0.0 for label, _ in FAMILIES}
    for e in events:
        label = next((label for label, keys in FAMILIES if any(k in e.key for k in keys)), "other")
        shares[label] = shares.get(label, 0.0) + e.self_cpu_time_total / total
    return shares


def breakdown(name: str, steps: dict[str, BareStep], repeat: int) -> str:
    shares = {label: time_shares(step, repeat) for label, step in steps.items()}
    families = list(next(iter(shares.values())))
    rows = [[family, *(f"{100 * s[family]:.1f}%" for s in shares.values())] for family in families]
    note = ("Share of the step's operator time (torch.profiler, self CPU time of ATen operators, fp32) in each "
            f"family, over {repeat} steps. The convolutions run in the same oneDNN kernels for both networks: "
            "whatever the rest costs bounds how much faster one can be than the other at the same FLOPs.")
    return table(f"Where a training step's time goes, {name}", ["operators", *shares], rows, note)


# --- the engine's overhead ----------------------------------------------------------------------


def engine_overhead(name: str, config: Config, device: torch.device, rounds: int, window: int) -> str:
    """Part 2: `window` steps of the engine's loop against `window` bare steps, in alternation."""
    from workbench import runs
    from workbench.events import Events
    from workbench.experiment import load_experiment
    from workbench.handle import Run
    from workbench.pipeline import memory_format
    from workbench.trainer import adamw
    from workbench.training import Interrupt, prepare, train_loop

    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "bench.toml"
        file.write_text(config.experiment(log_every=window))
        exp = load_experiment("bench", file=file)
        trainer, train_data, held_out = prepare(exp, device)
        run = Run(runs.new_run_dir(Path(folder) / "runs", "bench"))
        source = trainer.batches(train_data)

        def engine_window() -> None:  # the loop of `wb run`, logging and checkpoints included, no output
            train_loop(trainer, source, held_out, run, Events(), trainer.steps_done + window, Interrupt())

        # The bare step trains the same network with an optimizer like the engine's (and state of its own).
        optimizer = adamw(trainer.model.parameters(), lr=exp.train.lr)
        channels_last = memory_format(config.shape, device) == torch.channels_last
        bare = BareStep(trainer.model, optimizer, fixed_batch(config, device, channels_last), False)

        def bare_window() -> None:
            for _ in range(window):
                bare()

        times = interleaved({"engine": engine_window, "bare": bare_window}, rounds=rounds, warmup=1,
                            device=device)
    overhead = median_ratio(times["engine"], times["bare"]) - 1
    rows = [
        ["bare step", f"{1e3 * median(times['bare']) / window:.2f}", "-"],
        ["`wb run` step", f"{1e3 * median(times['engine']) / window:.2f}", f"{100 * overhead:+.1f}%"],
    ]
    note = (f"{name}, batch {config.batch}, fp32, {device}; {window} steps per timing, the last of them a logging "
            "step (train.log_every), "
            f"medians over {rounds} alternating rounds. Goal: overhead under 5%.")
    return table(f"Engine overhead, {name}", ["", "ms per step", "overhead"], rows, note)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--rounds", type=int, default=7, help="alternating timing rounds (medians are reported)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--skip-overhead", action="store_true")
    args = p.parse_args()
    setup(args)
    device = torch.device(args.device)
    configs = {"smoke 8x8x1": SMOKE} if args.smoke else {name: CONFIGS[name] for name in args.configs}
    rounds = 2 if args.smoke else args.rounds
    if optional_diffusers("the side-by-side tables need it") is None:
        return
    from workbench.trainer import fast_bf16

    precisions = [False] + ([True] if fast_bf16(device) else [])
    peaks = {bf16: matmul_peak(torch.bfloat16 if bf16 else torch.float32, device, n=256 if args.smoke else 2048)
             for bf16 in precisions}
    for name, config in configs.items():
        for bf16 in precisions:
            print(bare_steps(name, config, device, bf16, rounds, peaks[bf16]), flush=True)
        if not args.skip_overhead and config.window:
            print(engine_overhead(name, config, device, rounds, config.window), flush=True)


if __name__ == "__main__":
    main()
