"""Quality for the compute: `digits` trained for a fixed wall-clock budget by our engine and by a minimal diffusers loop.

Both sides get the same seconds of training (`--budget`, default 120 s
each), in the same process, one after the other, with the same torch
threads, on the same training tensor (the `digits` experiment's split of
experiments.toml, values in [-1, 1], 17 levels). Both are scored with the
workbench's own metrics on the same held-out tensor, each from its EMA
weights. Goal: better fd and better nll than the diffusers loop.

- Ours: the engine exactly as `wb run digits` trains (workbench.trainer.Trainer:
  eps prediction, cosine schedule, mse loss, AdamW lr 2e-3 with 100 warm-up
  steps, batch 64, EMA 0.995), `train_step` called until the budget is
  spent (the time is checked after each step). Sampled with the experiment's
  own sampler, dpm_solver with 20 steps.

- Theirs: diffusers' examples/unconditional_image_generation/train_unconditional.py
  with its documented defaults, written out as a minimal loop:
  DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear",
  prediction_type="epsilon") (installed defaults: beta 1e-4..0.02,
  variance_type "fixed_small", clip_sample True); AdamW lr 1e-4, betas
  (0.95, 0.999), weight_decay 1e-6, eps 1e-8; get_scheduler("cosine") with
  500 warm-up steps; gradient-norm clipping at 1.0; batch 16 from a
  shuffling DataLoader, epoch after epoch (no flip: the script's
  --random_flip is off by default); loss F.mse_loss(model_output, noise);
  EMAModel(decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3/4)
  (the script's values; the installed EMAModel's own defaults are
  use_ema_warmup False and power 2/3, which the script overrides).
  Inference with their DDPMPipeline at 1000 steps (`--ddpm-steps`), the
  script's default. The cosine schedule needs its total step count, which
  the script takes from its epochs; here the schedule should end with the
  budget. Its warm-up does not depend on the total, so the total is set
  when the 500 warm-up steps end, within the budgeted run: 500 + the
  seconds left x their steps/s over warm-up steps 100-500 (the machine's
  speed drifts, so a rate measured before the run can be far off). The
  table's note gives the planned total and the steps taken. A second row
  samples the same diffusers model with our dpm_solver (20 steps), which is
  not their default and is labelled so: it separates training from sampling.

- The model: diffusers' UNet2DModel with our digits U-Net's layout
  (UNetBackbone.diffusers_config, which tests/test_backbones.py checks): block_out_channels
  (32, 64), layers_per_block 1, attention at the 4x4 level and in the middle
  block, 4 heads of 16 channels, norm_num_groups 8. Our U-Net's scale_shift
  (AdaGN) maps to resnet_time_scale_shift="scale_shift"; with it diffusers
  drops the middle attention's group norm unless attn_norm_num_groups is
  given, so it is. The two networks then compute the same function (with
  one's weights copied into the other; the same parameter count, which the
  table shows): only the training and the sampling differ.

- fd: the Frechet distance in the features of the workbench's digits
  classifier (plugins/nets/features.py, configured as the experiment's `fd`
  metric), N samples (default 500, as the experiment) against the held-out
  set; the fd of N real training examples against that set is printed as
  the floor for this N. nll: workbench.nll in bits/dim on the held-out
  examples (all of them by default; the experiment uses 64), with their model read through
  Diffusion(their betas in float64, prediction "eps", variance
  "fixed_small"). Sampling and nll seconds are outside the budget; the
  table reports them.

Their DDPM sampling at 1000 steps costs 1000 forward passes of the batch of
N (several minutes on a 2-core CPU), and each nll 1000 passes of its batch;
on a shared machine, `--threads 1` avoids the slowdown of oversubscribed
cores. `--smoke` runs every path at a toy size (2 s each, 32 samples, nll on
4 examples, 10 DDPM steps) with T = 100 on both sides, so that nll's T model
calls are few, and their warm-up cut to 20 steps, so that the sizing of
their schedule runs too; its numbers mean nothing.

    python benchmarks/quality.py [--budget 120] [--samples 500] [--nll-examples N] [--ddpm-steps 1000] [--threads N] [--smoke]
"""

from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common import optional_diffusers, parser, setup, table

import workbench as wb
from workbench.experiment import load_experiment
from workbench.plugins.nets.features import FeatureConfig, feature_frechet_distance, feature_network
from workbench.pipeline import Pipeline
from workbench.sampling import draw_samples
from workbench.trainer import Trainer
from workbench.training import prepare

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments.toml"
CPU = torch.device("cpu")

# train_unconditional.py's defaults.
THEIR_BATCH = 16
THEIR_LR = 1e-4
THEIR_ADAM = dict(betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
THEIR_WARMUP = 500
THEIR_EMA = dict(decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
THEIR_GRAD_CLIP = 1.0


def log(message: str) -> None:
    """Progress on stderr, so that stdout holds only the machine line and the table."""
    print(message, file=sys.stderr, flush=True)


# --- ours --------------------------------------------------------------------------------


def train_ours(exp, budget: float) -> tuple[Trainer, float]:
    """The engine's Trainer, stepped until `budget` seconds have passed; returns it and the seconds used."""
    trainer, train_data, _ = prepare(exp, CPU)
    batches = trainer.batches(train_data)
    start = time.perf_counter()
    while time.perf_counter() - start < budget:
        trainer.step(batches)
    return trainer, time.perf_counter() - start


# --- theirs ------------------------------------------------------------------------------


def their_unet(exp):
    """diffusers' UNet2DModel with our experiment's U-Net layout (the twin tests/test_backbones.py checks)."""
    import diffusers

    shape = tuple(exp.dataset.shape)
    return diffusers.UNet2DModel(**exp.backbone.diffusers_config(shape, shape[0]))


class TheirLoop:
    """train_unconditional.py's model, optimizer, lr schedule, EMA and step, on an in-memory tensor."""

    def __init__(self, exp, data: torch.Tensor, timesteps: int = 1000, warmup: int = THEIR_WARMUP) -> None:
        from diffusers import DDPMScheduler
        from diffusers.training_utils import EMAModel

        torch.manual_seed(exp.seed)
        self.steps = self.examples = 0
        self.warmup = warmup
        self.unet = their_unet(exp).train()
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=timesteps, beta_schedule="linear", prediction_type="epsilon")
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=THEIR_LR, **THEIR_ADAM)
        self.total_steps = warmup + 1  # provisional: the warm-up's rates do not depend on it
        self.set_total_steps(self.total_steps)
        self.ema = EMAModel(self.unet.parameters(), **THEIR_EMA)
        self.loader = torch.utils.data.DataLoader(data, batch_size=THEIR_BATCH, shuffle=True,
                                                  generator=torch.Generator().manual_seed(exp.seed))

    def set_total_steps(self, total: int) -> None:
        """get_scheduler("cosine") for `total` steps, resumed at the current step."""
        from diffusers.optimization import get_scheduler

        self.total_steps = total
        self.lr_scheduler = get_scheduler("cosine", optimizer=self.optimizer, num_warmup_steps=self.warmup,
                                          num_training_steps=total, last_epoch=self.steps - 1)

    def batches(self):
        while True:  # epoch after epoch, as the script's loop over num_epochs
            yield from self.loader

    def step(self, clean: torch.Tensor) -> None:
        noise = torch.randn(clean.shape)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (len(clean),)).long()
        noisy = self.noise_scheduler.add_noise(clean, noise, timesteps)
        model_output = self.unet(noisy, timesteps).sample
        loss = F.mse_loss(model_output.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), THEIR_GRAD_CLIP)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad()
        self.ema.step(self.unet.parameters())
        self.steps += 1
        self.examples += len(clean)

    def ema_unet(self):
        """A copy of the network holding the EMA weights, in eval mode (what the script samples from)."""
        unet = copy.deepcopy(self.unet).eval().requires_grad_(False)
        self.ema.copy_to(unet.parameters())
        return unet

    def betas(self) -> torch.Tensor:
        """Their linear betas, recomputed in float64 (DDPMScheduler stores them in float32)."""
        config = self.noise_scheduler.config
        betas = torch.linspace(config.beta_start, config.beta_end, config.num_train_timesteps, dtype=torch.float64)
        torch.testing.assert_close(betas.float(), self.noise_scheduler.betas)
        return betas


def train_theirs(exp, data: torch.Tensor, budget: float, timesteps: int, warmup: int = THEIR_WARMUP,
                 ) -> tuple[TheirLoop, float, float | None]:
    """Their loop for `budget` seconds; when the warm-up ends, its cosine schedule is sized to the time left.

    Returns the loop, the seconds used and the steps/s the schedule was sized
    with (None when the budget ended within the warm-up).
    """
    loop = TheirLoop(exp, data, timesteps, warmup)
    batches = loop.batches()
    start = time.perf_counter()
    rate, first = None, warmup // 5  # the rate is measured from warm-up step 100 of 500
    at_first = start
    while time.perf_counter() - start < budget:
        loop.step(next(batches))
        if loop.steps == first:
            at_first = time.perf_counter()
        if loop.steps == warmup:
            now = time.perf_counter()
            rate = (warmup - first) / (now - at_first)
            loop.set_total_steps(warmup + max(1, math.ceil((budget - (now - start)) * rate)))
    return loop, time.perf_counter() - start, rate


class Eps:
    """`model(x_t, t)` for the workbench's samplers and nll: the diffusers network's `.sample`."""

    def __init__(self, unet) -> None:
        self.unet = unet

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t).sample


def ddpm_pipeline_samples(unet, scheduler, n: int, steps: int, seed: int) -> torch.Tensor:
    """Their DDPMPipeline, as the script samples, mapped back from [0, 1] to [-1, 1]."""
    from diffusers import DDPMPipeline

    pipeline = DDPMPipeline(unet=unet, scheduler=copy.deepcopy(scheduler))
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline(batch_size=n, generator=torch.Generator().manual_seed(seed), num_inference_steps=steps,
                      output_type="pt").images
    return images * 2 - 1


# --- scoring, the same for both --------------------------------------------------------------


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def bits_per_dim(model, diffusion: wb.Diffusion, held_out: torch.Tensor, levels: int, seed: int) -> torch.Tensor:
    """The nll bound of each held-out example [B]; both sides draw the same noise (one seed)."""
    with torch.no_grad():
        return wb.nll(model, diffusion, held_out, levels=levels, generator=torch.Generator().manual_seed(seed + 1))


def mean_se(values: torch.Tensor) -> tuple[float, float]:
    """The mean and its standard error."""
    return float(values.mean()), float(values.std() / len(values) ** 0.5) if len(values) > 1 else float("nan")


def with_se(values: torch.Tensor) -> str:
    mean, se = mean_se(values)
    return f"{mean:.4g} ± {se:.2g}"


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--budget", type=float, default=120.0, help="seconds of training for each side")
    p.add_argument("--samples", type=int, default=500, help="samples for fd (the digits experiment: 500)")
    p.add_argument("--nll-examples", type=int, default=None,
                   help="held-out examples for nll (default: all of them, so that the difference can show)")
    p.add_argument("--ddpm-steps", type=int, default=1000, help="their DDPMPipeline's steps (their default: 1000)")
    args = p.parse_args()
    # --smoke: every path at a toy size, with T = 100 and their warm-up 20 steps (see the docstring).
    timesteps, warmup = (100, 20) if args.smoke else (1000, THEIR_WARMUP)
    if args.smoke:
        args.budget, args.samples, args.nll_examples, args.ddpm_steps = 2.0, 32, 4, 10
    setup(args)

    overrides = [f"scheduler.timesteps={timesteps}"] if args.smoke else []
    exp = load_experiment("digits", file=str(EXPERIMENTS), overrides=overrides)
    pipeline = Pipeline(exp, CPU)
    train_data, held_out = pipeline.load_data()
    levels, shape, seed = pipeline.levels, pipeline.shape, exp.seed
    nll_data = held_out[: args.nll_examples]
    fd_options = next(m for m in exp.metrics if m.name == "fd")
    features = feature_network(exp.dataset, FeatureConfig(**fd_options.model_dump()), progress=log)

    def fd(samples: torch.Tensor) -> float:
        return feature_frechet_distance(features, samples, held_out)

    floor = fd(train_data[torch.randperm(len(train_data), generator=torch.Generator().manual_seed(seed))[: args.samples]])

    diffusers = optional_diffusers("their rows are skipped")

    log(f"training ours for {args.budget:g} s")
    trainer, our_seconds = train_ours(exp, args.budget)
    their = None
    if diffusers is not None:
        log(f"training theirs for {args.budget:g} s")
        their = train_theirs(exp, train_data, args.budget, timesteps, warmup)

    n_shape = (args.samples, *shape)
    batch = exp.eval.batch_size
    log(f"ours: {args.samples} samples ({exp.sampler.name} {exp.sampler.steps}), nll on {len(nll_data)}")
    with torch.no_grad():
        ours_samples, our_sampling = timed(lambda: draw_samples(
            exp.sampler, trainer.ema, trainer.diffusion, n_shape, torch.Generator().manual_seed(seed), batch))
    our_nll, our_nll_s = timed(lambda: bits_per_dim(trainer.ema, trainer.diffusion, nll_data, levels, seed))
    steps_ours = trainer.steps_done
    rows = [[
        f"workbench (`wb run digits`), {exp.sampler.name} {exp.sampler.steps}", f"{trainer.parameters:,}",
        steps_ours, steps_ours * exp.train.batch_size, round(our_seconds, 1),
        fd(ours_samples), with_se(our_nll), round(our_sampling, 1), round(our_nll_s, 1),
    ]]
    note = [
        f"`digits`, {args.budget:g} s of training each, {torch.get_num_threads()} torch threads; fd on "
        f"{args.samples} samples against the {len(held_out)} held-out examples (N real training examples "
        f"score {floor:.4g}: the floor), nll on {len(nll_data)} held-out examples (± its standard error); each side's EMA weights."
    ]
    if their is not None:
        loop, their_seconds, rate = their
        unet = loop.ema_unet()
        their_params = sum(p.numel() for p in unet.parameters())
        their_diffusion = wb.Diffusion(loop.betas(), prediction="eps", variance="fixed_small")
        assert loop.noise_scheduler.config.variance_type == "fixed_small"
        log(f"theirs: {args.samples} samples (DDPMPipeline {args.ddpm_steps}), nll on {len(nll_data)}")
        with torch.no_grad():
            ddpm_samples, ddpm_s = timed(lambda: ddpm_pipeline_samples(unet, loop.noise_scheduler, args.samples,
                                                                      args.ddpm_steps, seed))
            log(f"theirs: {args.samples} samples ({exp.sampler.name} {exp.sampler.steps}, ours)")
            dpm_samples, dpm_s = timed(lambda: draw_samples(
                exp.sampler, Eps(unet), their_diffusion, n_shape, torch.Generator().manual_seed(seed), batch))
        their_nll, their_nll_s = timed(lambda: bits_per_dim(Eps(unet), their_diffusion, nll_data, levels, seed))
        default = "their default" if args.ddpm_steps == timesteps else f"their default is {timesteps}"
        ddpm_fd, dpm_fd = fd(ddpm_samples), fd(dpm_samples)
        common_cells = [f"{their_params:,}", loop.steps, loop.examples, round(their_seconds, 1)]
        rows.append([f"diffusers train_unconditional defaults, DDPMPipeline {args.ddpm_steps} ({default})",
                     *common_cells, ddpm_fd, with_se(their_nll), round(ddpm_s, 1), round(their_nll_s, 1)])
        rows.append([f"diffusers model as above, sampled by our {exp.sampler.name} {exp.sampler.steps} (not their default)",
                     *common_cells, dpm_fd, with_se(their_nll), round(dpm_s, 1), "same model"])
        if rate is None:
            note.append(f"The budget ended within their {warmup} warm-up steps: their cosine decay never began.")
        else:
            note.append(f"Their cosine lr schedule was sized at the end of its {warmup}-step warm-up to "
                        f"{loop.total_steps} steps ({rate:.1f} steps/s over warm-up steps {warmup // 5}-{warmup}); "
                        f"they took {loop.steps}.")
        if their_params != trainer.parameters:
            note.append(f"Parameter counts differ by {their_params - trainer.parameters:+,}.")
        our_fd = rows[0][5]
        ours_bpd, theirs_bpd = float(our_nll.mean()), float(their_nll.mean())
        difference, se = mean_se(our_nll - their_nll)  # paired: the same examples, the same noise
        verdict = ("met" if difference < -2 * se else "NOT met" if difference > 2 * se
                   else "not shown (the difference is within 2 s.e.)")
        goals = [
            f"goal fd: ours {our_fd:.4g} vs theirs {ddpm_fd:.4g} (DDPM {args.ddpm_steps}; {dpm_fd:.4g} with our "
            f"{exp.sampler.name}): {'met' if our_fd < ddpm_fd else 'NOT met'}",
            f"goal nll: ours {ours_bpd:.4g} vs theirs {theirs_bpd:.4g} bits/dim (difference {difference:+.3g} ± "
            f"{se:.2g} s.e., paired over the same {len(nll_data)} examples): {verdict}",
        ]
    else:
        note.append("The diffusers rows are skipped: diffusers is not installed (pip install -e '.[bench]').")
        goals = ["goals: not measured, diffusers is not installed (pip install -e '.[bench]')"]

    headers = ["side", "parameters", "optimizer steps", "examples seen", "train s", "fd (lower is better)",
               "nll bits/dim (lower is better)", "sampling s", "nll s"]
    print(table("Quality for the compute: `digits` at a fixed training budget", headers, rows, note=" ".join(note)))
    for line in goals:
        print(line)


if __name__ == "__main__":
    main()
