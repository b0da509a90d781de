"""The built-in losses (plugins/losses.py): mse, vlb, hybrid.

Ground truth: targets and min-SNR weights written out from their definitions;
the vlb loss averaging to `wb.nll` of the same exact model (it is an unbiased
one-sample estimate of the same bound) (importance sampling of t: test_timesteps.py);
the hybrid loss's stop-gradient read off the gradient of a leaf output; and
every loss going down when a small network trains on a 2-D toy set.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from reference import abar_of, cosine_betas, linear_betas
from workbench.diffusion import Diffusion
from workbench.errors import ConfigError
from workbench.exact import GaussianMixtureDenoiser
from workbench.likelihood import nll, prior_bpd
from workbench.plugins.losses import MSE, VLB, Hybrid, min_snr_weight


pytestmark = pytest.mark.usefixtures("one_thread")








def fixed_output(out: torch.Tensor):
    """A 'model' that returns `out` whatever it is given."""
    return lambda x_t, t: out


# --- registration and configuration ---------------------------------------------------


def test_plugin_module_does_not_import_torch():
    code = "import sys, workbench.plugins.losses; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_losses_are_registered_and_validate_options(registry):
    assert {"mse", "vlb", "hybrid"} <= set(registry.names("loss"))
    assert registry.build("loss", "vlb", importance_sampling=True).importance_sampling
    assert registry.build("loss", "hybrid").vlb_weight == 0.001
    with pytest.raises(ConfigError):
        registry.build("loss", "mse", min_snr_gamma=0)
    with pytest.raises(ConfigError):
        registry.build("loss", "vlb", levels=1)


def test_check_refuses_combinations_that_cannot_train():
    with pytest.raises(ConfigError, match="hybrid"):
        MSE().check("eps", "learned_range")
    for variance in ("fixed_small", "fixed_large"):
        MSE().check("v", variance)
        with pytest.raises(ConfigError, match="learned_range"):
            Hybrid().check("eps", variance)
    Hybrid().check("x0", "learned_range")
    for variance in ("fixed_small", "fixed_large", "learned_range"):
        VLB().check("eps", variance)
    assert Hybrid().out_channels(3, "learned_range") == 6 and MSE().out_channels(3) == 3


def test_levels_come_from_the_data():
    assert VLB().for_data(17).levels == 17
    assert VLB().for_data(None).levels is None
    assert VLB(levels=17).for_data(17).levels == 17
    assert Hybrid(vlb_weight=0.01).for_data(256) == Hybrid(vlb_weight=0.01, levels=256)
    with pytest.raises(ConfigError, match="levels"):
        VLB(levels=256).for_data(17)
    mse = MSE(min_snr_gamma=5.0)
    assert mse.for_data(17) is mse


# --- mse ----------------------------------------------------------------------------------

T_SMALL = 50
STEPS = torch.tensor([0, 3, 7, 20, 35, 49])


def targets(prediction: str, x0, noise, abar):
    a, s = abar.sqrt()[:, None], (1 - abar).sqrt()[:, None]
    return {"eps": noise, "x0": x0, "v": a * noise - s * x0}[prediction]


def x0_from_output(prediction: str, out, x_t, abar):
    a, s = abar.sqrt()[:, None], (1 - abar).sqrt()[:, None]
    return {"eps": (x_t - s * out) / a, "x0": out, "v": a * x_t - s * out}[prediction]


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("gamma", [None, 5.0])
def test_mse_is_the_weighted_squared_error_of_the_prediction(prediction, gamma):
    g = torch.Generator().manual_seed(0)
    betas = linear_betas(T_SMALL)
    diffusion = Diffusion(betas, prediction, "fixed_small")
    x0, noise, out = (torch.randn(len(STEPS), 3, generator=g, dtype=torch.float64) for _ in range(3))
    loss = MSE(min_snr_gamma=gamma)(fixed_output(out), diffusion, x0, t=STEPS, noise=noise)

    abar = abar_of(betas)[STEPS]
    snr = abar / (1 - abar)
    weight = {
        None: torch.ones_like(snr),
        5.0: {"eps": snr.clamp(max=5) / snr, "x0": snr.clamp(max=5), "v": snr.clamp(max=5) / (snr + 1)}[prediction],
    }[gamma]
    expected = weight * ((out - targets(prediction, x0, noise, abar)) ** 2).mean(dim=1)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    if gamma is not None:
        torch.testing.assert_close(min_snr_weight(diffusion, STEPS, gamma), weight, rtol=1e-12, atol=0)
        # Hang et al.'s point: whatever the prediction, the weighted loss is min(SNR, gamma) |x0 error|^2
        x_t = abar.sqrt()[:, None] * x0 + (1 - abar).sqrt()[:, None] * noise
        x0_error = ((x0_from_output(prediction, out, x_t, abar) - x0) ** 2).mean(dim=1)
        torch.testing.assert_close(loss, snr.clamp(max=gamma) * x0_error, rtol=1e-9, atol=1e-12)


def test_min_snr_weight_is_finite_at_zero_snr():
    """A last beta of 1 makes SNR = 0 there: the eps weight min(SNR, gamma) / SNR tends to 1, not 0/0."""
    diffusion = Diffusion(torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64), "eps", "fixed_small")
    weights = min_snr_weight(diffusion, torch.tensor([0, 1, 2]), 5.0)
    snr0 = 0.9 / 0.1
    torch.testing.assert_close(weights, torch.tensor([5.0 / snr0, 1.0, 1.0], dtype=torch.float64))


def test_draws_t_then_noise_from_the_generator():
    diffusion = Diffusion(linear_betas(T_SMALL), "eps", "fixed_small")
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    out = torch.randn(64, 2, generator=torch.Generator().manual_seed(2))
    loss = MSE()(fixed_output(out), diffusion, x0, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, T_SMALL, (64,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    torch.testing.assert_close(loss, ((out - noise) ** 2).mean(dim=1))
    # the same draws handed in as overrides give the same loss; the model sees x_t and t
    seen = {}

    def model(x_t, t_in):
        seen.update(x_t=x_t, t=t_in)
        return out

    again = MSE()(model, diffusion, x0, t=t, noise=noise)
    assert torch.equal(again, loss) and torch.equal(seen["t"], t)
    torch.testing.assert_close(seen["x_t"], diffusion.q_sample(x0, t, noise))


# --- hybrid ---------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [None, 17])
def test_hybrid_trains_the_mean_only_through_mse(levels):
    """With lambda huge, the gradient into the mean channels is still exactly the mse's; the variance gets one."""
    g = torch.Generator().manual_seed(0)
    diffusion = Diffusion(cosine_betas(T_SMALL), "eps", "learned_range")
    x0 = torch.randint(0, 17, (len(STEPS), 3), generator=g).to(torch.float64) / 8 - 1
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    out = torch.cat([torch.randn(x0.shape, generator=g, dtype=torch.float64), torch.rand(x0.shape, generator=g) * 2 - 1], 1)
    out.requires_grad_(True)
    hybrid = Hybrid(vlb_weight=1000.0, levels=levels)
    hybrid(fixed_output(out), diffusion, x0, t=STEPS, noise=noise).sum().backward()
    mean_grad, var_grad = out.grad.chunk(2, dim=1)
    torch.testing.assert_close(mean_grad, 2 * (out.detach()[:, :3] - noise) / 3, rtol=1e-12, atol=1e-12)
    assert (var_grad.abs().sum(dim=1) > 0).all()

    # its value: L_simple + lambda * T * L_t, L_t being the vlb loss's term (the vlb loss adds the prior)
    with torch.no_grad():
        args = (fixed_output(out), diffusion, x0)
        total = Hybrid(vlb_weight=0.3, levels=levels)(*args, t=STEPS, noise=noise)
        simple = MSE()(*args, t=STEPS, noise=noise)
        vlb = VLB(levels=levels)(*args, t=STEPS, noise=noise) - prior_bpd(diffusion, x0)
    torch.testing.assert_close(total, simple + 0.3 * vlb, rtol=1e-12, atol=1e-12)


# --- vlb: an unbiased estimate of nll's bound -------------------------------------------------

POINTS = torch.tensor(
    [[-1, -1], [-1, 1], [1, -1], [1, 1], [0, 0], [0.5, -0.5], [-0.5, 0.5], [1, 0]], dtype=torch.float64
)


def standard_error(values: torch.Tensor) -> float:
    return float(values.std() / math.sqrt(len(values)))


def assert_same_mean(a: torch.Tensor, b: torch.Tensor) -> None:
    """Two unbiased estimates of one number agree within 4 combined standard errors."""
    tolerance = 4 * math.hypot(standard_error(a), standard_error(b))
    assert abs(float(a.mean() - b.mean())) <= tolerance, (float(a.mean()), float(b.mean()), tolerance)


def test_vlb_averages_to_nll_on_discrete_data():
    """17-level points, T = 50: mean of prior + T L_t over 200k draws = mean of nll's full bound."""
    diffusion = Diffusion(cosine_betas(50), "eps", "fixed_small")
    model = GaussianMixtureDenoiser(diffusion, POINTS)
    g = torch.Generator().manual_seed(0)
    x0 = model.sample_data(2000, g).to(torch.float64)
    bound = nll(model, diffusion, x0, levels=17, generator=g)
    draws = VLB(levels=17)(model, diffusion, x0.repeat(100, 1), generator=g)
    assert_same_mean(draws, bound)





# --- every loss trains a small network ------------------------------------------------------------


class TinyMLP(nn.Module):
    """model(x_t [B, D], t [B]) -> [B, out]: an MLP on x_t and a sinusoidal embedding of t."""

    def __init__(self, dim: int, out: int, width: int = 64, frequencies: int = 8) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.exp(-math.log(1000.0) * torch.arange(frequencies) / frequencies))
        self.net = nn.Sequential(
            nn.Linear(dim + 2 * frequencies, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, out)
        )

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        angles = t.to(x_t.dtype)[:, None] * self.freqs
        return self.net(torch.cat([x_t, angles.sin(), angles.cos()], dim=1))


CIRCLE_STD = 0.05
CIRCLE_CENTRES = 0.8 * torch.stack(
    [torch.cos(torch.arange(8) * 2 * math.pi / 8), torch.sin(torch.arange(8) * 2 * math.pi / 8)], dim=1
)


def circle(n: int, generator: torch.Generator) -> torch.Tensor:
    """Eight clusters of std 0.05 on a circle of radius 0.8 (a Gaussian mixture, so its exact denoiser is known)."""
    k = torch.randint(0, 8, (n,), generator=generator)
    return CIRCLE_CENTRES[k] + CIRCLE_STD * torch.randn(n, 2, generator=generator)


@pytest.mark.parametrize(
    "loss, prediction, variance",
    [
        (MSE(), "eps", "fixed_small"),
        (MSE(min_snr_gamma=5.0), "x0", "fixed_small"),
        (MSE(), "v", "fixed_small"),
        (VLB(), "eps", "learned_range"),
        (Hybrid(), "eps", "learned_range"),
    ],
    ids=["mse-eps", "mse-x0-minsnr", "mse-v", "vlb-learned", "hybrid-learned"],
)
def test_loss_goes_down_while_training(loss, prediction, variance):
    """250 Adam steps on eight clusters; the loss on a fixed batch (fixed t and noise) must fall.

    For mse the floor is known: the exact denoiser of this mixture is the optimal
    model, so the network must close at least a third of the gap down to it (the
    x0 and v losses start near their floor, so a ratio alone would say little;
    what a net this small keeps is the small-t error, where eps and v need x0 to
    within sigma_t). For vlb and hybrid the loss must at least halve.
    """
    T = 100
    diffusion = Diffusion(linear_betas(T), prediction, variance)
    loss.check(prediction, variance)
    torch.manual_seed(0)
    model = TinyMLP(2, loss.out_channels(2, variance))
    g = torch.Generator().manual_seed(1)
    x_eval = circle(1024, g)
    t_eval = torch.randint(0, T, (1024,), generator=g)
    noise_eval = torch.randn(x_eval.shape, generator=g)

    def evaluate(net) -> float:
        with torch.no_grad():
            return float(loss(net, diffusion, x_eval, t=t_eval, noise=noise_eval).mean())

    before = evaluate(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(250):
        value = loss(model, diffusion, circle(128, g), generator=g).mean()
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    after = evaluate(model)
    assert math.isfinite(after)
    if isinstance(loss, (VLB, Hybrid)):
        assert after < 0.5 * before, (before, after)
    else:
        floor = evaluate(GaussianMixtureDenoiser(diffusion, CIRCLE_CENTRES, stds=CIRCLE_STD))
        assert floor < after < floor + 2 / 3 * (before - floor), (floor, before, after)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_losses_and_nll_run_on_cuda():
    """Draws on the data's device with a CUDA generator; same t and noise give the CPU's numbers."""
    cuda = torch.device("cuda")
    diffusion = Diffusion(cosine_betas(20), "eps", "fixed_small")
    model = GaussianMixtureDenoiser(diffusion, POINTS)
    x0 = model.sample_data(512, torch.Generator().manual_seed(0)).to(torch.float64)
    t = torch.randint(0, 20, (512,), generator=torch.Generator().manual_seed(1))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for loss in (MSE(min_snr_gamma=5.0), VLB(levels=17)):
        on_cpu = loss(model, diffusion, x0, t=t, noise=noise)
        on_gpu = loss(model, diffusion, x0.to(cuda), t=t.to(cuda), noise=noise.to(cuda))
        torch.testing.assert_close(on_gpu.cpu(), on_cpu)
    g = torch.Generator(device=cuda).manual_seed(3)
    bound = nll(model, diffusion, x0[:64].to(cuda), levels=17, generator=g)
    assert bound.device.type == "cuda" and torch.isfinite(bound).all()
